"""GradAlign, ELLE / ELLE-A, FGSM and N-FGSM against independent formulas and properties.

Oracles: closed forms on linear and quadratic losses (ELLE's error of a quadratic is
``(α(1−α)/2 · dᵀAd)²`` with ``d = x_a − x_b``), cosines of dense per-example gradients,
the ball and box each training point must lie in, ELLE-A's rule written out by hand on
a scripted error sequence, and the catastrophic-overfitting rule on scripted histories.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import losses
from robustjax import models
from robustjax.regularizers import controllers
from robustjax.regularizers import registry
from robustjax.training import monitor
from robustjax.training import schema
from robustjax.training import step as step_lib
from robustjax.training import train

B, D = 8, 6
KEY = jax.random.PRNGKey(3)
schema.load_regularizers()


def _x():
  return jax.random.uniform(jax.random.PRNGKey(0), (B, D), minval=0.2, maxval=0.8)


Y = jnp.arange(B, dtype=jnp.int32) % 3


def _linear_loss(w, x, y):
  del y
  return x @ w['w'] + w['b']


def _quadratic(a, b):
  def loss(params, x, y):
    del y, params
    return 0.5 * jnp.einsum('bi,ij,bj->b', x, a, x) + x @ b
  return loss


def _mlp():
  model = models.create('mlp', num_classes=3, widths=(8,), activation='softplus')
  params = models.init(model, jax.random.PRNGKey(1), (D,))['params']
  logits_fn = lambda p, v: model.apply({'params': p}, v)
  return params, logits_fn, losses.cross_entropy_loss_fn(logits_fn)


LINEAR = {'w': jnp.arange(1.0, D + 1.0) / D, 'b': jnp.float32(0.3)}


# ------------------------------------------------------------------ ELLE


def test_elle_is_zero_for_a_loss_linear_in_x():
  values, aux = registry.get('elle')(_linear_loss, LINEAR, (_x(), Y), rng=KEY, eps=0.1)
  assert float(jnp.max(jnp.abs(values))) < 1e-10
  # The points are real: distinct, in the ball and the box.
  assert float(jnp.min(jnp.max(jnp.abs(aux['x_a'] - aux['x_b']), -1))) > 0.01
  assert float(jnp.max(jnp.abs(aux['x_c'] - _x()))) <= 0.1 + 1e-6


def test_elle_matches_the_closed_form_of_a_quadratic():
  rng = np.random.default_rng(0)
  m = rng.normal(size=(D, D))
  a, b = jnp.asarray(m @ m.T, jnp.float32), jnp.asarray(rng.normal(size=D), jnp.float32)
  values, aux = registry.get('elle')(_quadratic(a, b), {}, (_x(), Y), rng=KEY, eps=0.1)
  d = np.asarray(aux['x_a'] - aux['x_b'], np.float64)
  alpha = np.asarray(aux['alpha'], np.float64)
  want = (0.5 * alpha * (1 - alpha) * np.einsum('bi,ij,bj->b', d, np.asarray(a), d)) ** 2
  np.testing.assert_allclose(np.asarray(values), want, rtol=2e-3, atol=1e-12)
  assert np.min(want) > 0


# ------------------------------------------------------------------ GradAlign


def test_gradalign_is_zero_for_a_linear_loss():
  values, aux = registry.get('gradalign')(_linear_loss, LINEAR, (_x(), Y), rng=KEY,
                                          eps=0.1)
  np.testing.assert_allclose(np.asarray(aux['cos']), 1.0, atol=1e-6)
  assert float(jnp.max(jnp.abs(values))) < 1e-6


def test_gradalign_matches_the_cosine_of_dense_gradients():
  params, _, loss_fn = _mlp()
  x = _x()
  values, aux = registry.get('gradalign')(loss_fn, params, (x, Y), rng=KEY, eps=0.3)
  x_noisy = aux['x_noisy']
  assert float(jnp.max(jnp.abs(x_noisy - x))) <= 0.3 + 1e-6
  # One example at a time (vmapped single-example gradients): no batch interaction.
  grad_one = jax.jit(jax.vmap(jax.grad(lambda v, y: loss_fn(params, v[None], y[None])[0])))
  g1 = np.asarray(grad_one(x, Y), np.float64)
  g2 = np.asarray(grad_one(x_noisy, Y), np.float64)
  cos = np.sum(g1 * g2, -1) / (np.linalg.norm(g1, axis=-1) * np.linalg.norm(g2, axis=-1))
  np.testing.assert_allclose(np.asarray(values), 1.0 - cos, atol=2e-5)
  assert float(jnp.max(values)) > 1e-3


# ------------------------------------------------------------------ FGSM / N-FGSM


def test_n_fgsm_point_lies_in_the_3eps_box_and_the_input_box_fgsm_in_the_ball():
  params, _, loss_fn = _mlp()
  x = jnp.concatenate([_x(), jnp.full((B, D), 0.02)])  # rows near the box face
  y = jnp.concatenate([Y, Y])
  eps = 0.1
  _, aux = registry.get('n_fgsm')(loss_fn, params, (x, y), rng=KEY, eps=eps)
  dist = jnp.max(jnp.abs(aux['x_adv'] - x), -1)
  assert float(jnp.max(dist)) <= 3 * eps + 1e-6
  assert float(jnp.max(dist)) > 1.5 * eps  # not projected back to the eps-ball
  assert float(jnp.min(aux['x_adv'])) >= 0.0 and float(jnp.max(aux['x_adv'])) <= 1.0
  for init in ('uniform', 'zero'):
    _, aux = registry.get('fgsm')(loss_fn, params, (x, y), rng=KEY, eps=eps, init=init)
    dist = jnp.max(jnp.abs(aux['x_adv'] - x), -1)
    assert float(jnp.max(dist)) <= eps + 1e-6
    assert float(jnp.min(aux['x_adv'])) >= 0.0
  # Zero start, step eps: every interior coordinate moves by exactly eps.
  inner = np.asarray(jnp.abs(aux['x_adv'][:B] - x[:B]))
  np.testing.assert_allclose(inner, eps, atol=1e-6)


def test_fgsm_value_is_the_loss_at_the_sign_step_of_the_dense_gradient():
  params, _, loss_fn = _mlp()
  x, eps = _x(), 0.05
  values, _ = registry.get('fgsm')(loss_fn, params, (x, Y), rng=KEY, eps=eps, init='zero')
  grad = jax.grad(lambda v: jnp.sum(loss_fn(params, v, Y)))(x)
  want = loss_fn(params, jnp.clip(x + eps * jnp.sign(grad), 0, 1), Y)
  np.testing.assert_allclose(np.asarray(values), np.asarray(want), rtol=1e-5)


# ------------------------------------------------------------------ saturation, bad input


@pytest.mark.parametrize('name', ['gradalign', 'elle', 'fgsm', 'n_fgsm'])
def test_param_gradients_are_finite_at_a_saturated_softmax(name):
  params, logits_fn, _ = _mlp()
  big = lambda p, v: 1e4 * logits_fn(p, v)  # softmax saturates: input gradients vanish
  loss_fn = losses.cross_entropy_loss_fn(big)
  y = jnp.argmax(big(params, _x()), -1)  # correctly classified: CE and gradients ~ 0
  fn = registry.get(name)
  grads = jax.grad(lambda p: jnp.mean(fn(loss_fn, p, (_x(), y), rng=KEY, eps=0.1)[0]))(
      params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize('name, kwargs, match', [
    ('gradalign', {'eps': -0.1}, 'eps'),
    ('gradalign', {'stop_clean_grad': 'yes'}, 'stop_clean_grad'),
    ('elle', {'p': 0.5}, 'p'),
    ('elle', {'bounds': (1.0, 0.0)}, 'bounds'),
    ('fgsm', {'init': 'gauss'}, 'init'),
    ('fgsm', {'step_size': -1.0}, 'step_size'),
    ('n_fgsm', {'noise': -2.0}, 'noise'),
])
def test_bad_hyperparameters_are_one_clear_error(name, kwargs, match):
  params, _, loss_fn = _mlp()
  with pytest.raises(ValueError, match=match):
    registry.get(name)(loss_fn, params, (_x(), Y), rng=KEY, **kwargs)


def test_bad_controller_settings_fail_in_validation_naming_the_field():
  config = schema.base_config()
  config.regularizers.elle = schema.term('elle', eps=0.1)
  config.controller.update({'name': 'elle_a', 'term': 'elle', 'loss': 'elle',
                            'decay': 1.5})
  with pytest.raises(ValueError, match='^config.controller.*decay'):
    schema.validate(config)
  config.controller.update({'decay': 0.99, 'lam_max': 1.0, 'lam_min': 2.0})
  with pytest.raises(ValueError, match='^config.controller.*lam_max'):
    schema.validate(config)
  config.controller.lam_min = 0.0
  schema.validate(config)
  config.controller.loss = 'auto'  # ELLE-A reads the ELLE term's error, not a CE
  with pytest.raises(ValueError, match='^config.controller.loss'):
    schema.validate(config)
  with pytest.raises(ValueError, match='min_history'):
    controllers.elle_a(min_history=0)


# ------------------------------------------------------------------ ELLE-A


def test_elle_a_follows_its_rule_on_a_scripted_error_sequence():
  # lam_max 100, decay 0.5, s = 2, at least 3 earlier errors, lam_min 0. By hand:
  # e=1,1,1: too little history, lam stays 0; e=1: mean 1, std 0, 1 > 1 is false: 0;
  # e=5 > 1: jump to 100; history [1,1,1,1,5]: mean 1.8, std 1.6, threshold 5.0;
  # e=1: decay 50; threshold 4.65; e=1: decay 25; e=10 > 4.37: jump 100; NaN: unchanged;
  # history [1 x6, 5, 10]: mean 2.625, std 3.080, threshold 8.78; e=4: decay 50.
  errors = [1, 1, 1, 1, 5, 1, 1, 10, math.nan, 4]
  expected = [0, 0, 0, 0, 100, 50, 25, 100, 100, 50]
  ctrl = controllers.elle_a(lam_max=100.0, decay=0.5, sensitivity=2.0, min_history=3)
  state = ctrl.init()
  assert float(state.output) == 0.0
  update = jax.jit(ctrl.update)
  got = []
  for e in errors:
    lam, state = update(jnp.float32(e), state)
    assert float(state.output) == float(lam)
    got.append(float(lam))
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert int(state.count) == 9  # the NaN did not join the history


def test_elle_a_decays_towards_lam_min():
  # lam_min 10: start at 10; e=5 after [1,1,1] jumps to 100; then
  # history [1,1,1,5]: mean 2, std sqrt(3), threshold 5.46 > 1: 10 + 0.5 (100 - 10) = 55.
  ctrl = controllers.elle_a(lam_max=100.0, lam_min=10.0, decay=0.5)
  state, got = ctrl.init(), []
  for e in [1, 1, 1, 5, 1]:
    lam, state = ctrl.update(jnp.float32(e), state)
    got.append(float(lam))
  np.testing.assert_allclose(got, [10, 10, 10, 100, 55], rtol=1e-6)


def test_elle_a_scales_the_elle_term_in_the_train_step():
  """The step reads λ before the batch, adds λ·ELLE, and feeds ELLE's mean error."""
  model = models.create('mlp', num_classes=3, widths=(8,), activation='softplus')
  config = schema.base_config()
  config.regularizers.elle = schema.term('elle', weight=1.0, eps=0.1)
  config.regularizers.fgsm = schema.term('fgsm', weight=1.0, eps=0.1, init='zero')
  config.controller.update({'name': 'elle_a', 'term': 'elle', 'loss': 'elle',
                            'lam_max': 7.0, 'min_history': 1, 'sensitivity': 0.0,
                            'decay': 0.5})
  schema.validate(config)
  terms = step_lib.resolve_terms(config)
  ctl = step_lib.controller_from_config(config.controller)
  tx = optax.sgd(0.1)
  mesh = step_lib.make_mesh(jax.devices()[:1])
  state = step_lib.init_state(model, tx, rng=jax.random.PRNGKey(0), input_shape=(D,),
                              mesh=mesh, controller=ctl)
  fn = jax.jit(step_lib.make_train_step(model=model, terms=terms, tx=tx,
                                        schedule=lambda s: 0.1, nominal_weight=0.0,
                                        controller=ctl, controlled_term='elle',
                                        controller_input='elle'))
  reference = ctl.init()
  for _ in range(4):
    state, metrics = fn(state, (_x(), Y))
    assert float(metrics['psi']) == pytest.approx(float(reference.output))
    assert float(metrics['loss']) == pytest.approx(
        float(metrics['fgsm'] + metrics['psi'] * metrics['elle']), rel=1e-5)
    _, reference = ctl.update(metrics['elle'], reference)
    assert float(state.controller.output) == pytest.approx(float(reference.output))


# ------------------------------------------------------------------ schedules


def test_old_eps_ramp_steps_gives_the_same_schedule():
  old = schema.term('gradalign', weight=0.2, eps=0.1, eps_ramp_steps=4)
  new = schema.term('gradalign', weight=0.2, eps=0.1, schedules={'eps': {'steps': 4}})
  assert old.to_dict() == new.to_dict()
  # A config.json written before the fold (a plain dict with the old key).
  saved = {'regularizers': {'llr': {'name': 'llr', 'weight': 1.0, 'eps_ramp_steps': 4,
                                    'schedules': {}, 'hparams': {'eps': 0.1}},
                            'cure': {'name': 'cure', 'weight': 1.0, 'eps_ramp_steps': 0,
                                     'schedules': {}, 'hparams': {}}}}
  schema.fold_legacy(saved)
  assert saved['regularizers']['llr']['schedules'] == {'eps': {'steps': 4}}
  assert 'eps_ramp_steps' not in saved['regularizers']['cure']
  for built in (old, new):
    config = schema.base_config()
    config.regularizers.g = built
    schema.validate(config)
    (term,) = step_lib.resolve_terms(config)
    assert term.schedules == (('eps', ('linear', 4, 0.0, 0)),)
    for s in range(6):
      eps = float(step_lib.scheduled_hparams(term, jnp.int32(s))['eps'])
      assert eps == pytest.approx(0.1 * min(s, 4) / 4)
  with pytest.raises(ValueError, match='eps_ramp_steps'):
    schema.term('llr', eps=0.1, eps_ramp_steps=4, schedules={'eps': {'steps': 2}})


# ------------------------------------------------------------------ catastrophic overfitting


def _rows(pgd, fgsm):
  return [{'step': 10 * (i + 1), 'pgd_accuracy': p, 'fgsm_accuracy': f}
          for i, (p, f) in enumerate(zip(pgd, fgsm))]


def test_catastrophic_overfitting_rule():
  flag = lambda pgd, fgsm: monitor.catastrophic_overfitting(_rows(pgd, fgsm))
  v = flag([0.5, 0.6, 0.45, 0.3, 0.0], [0.5, 0.6, 0.62, 0.7, 0.9])
  assert v['catastrophic_overfitting'] and v['catastrophic_overfitting_step'] == 40
  assert (v['best_pgd_accuracy'], v['best_pgd_step']) == (0.6, 20)
  # PGD falls but so does FGSM: ordinary degradation, not CO.
  assert not flag([0.6, 0.3], [0.7, 0.5])['catastrophic_overfitting']
  # A drop of 19 points is below the threshold.
  assert not flag([0.6, 0.41], [0.6, 0.9])['catastrophic_overfitting']
  assert not flag([], [])['catastrophic_overfitting']


def test_monitor_rows_and_final_flag_are_written(tmp_path):
  config = schema.base_config()
  config.model.kwargs.widths = (16,)
  config.update({'batch_size': 16, 'num_train_steps': 4, 'checkpoint_every_steps': 4,
                 'log_every_steps': 2, 'nominal_weight': 0.0})
  config.eval.update({'num_examples': 16, 'batch_size': 16, 'steps': 1,
                      'monitor_every_steps': 2, 'monitor_examples': 16})
  config.regularizers.fgsm = schema.term('fgsm', eps=0.1)
  workdir = str(tmp_path / 'run')
  final = train.train_and_evaluate(config, workdir, devices=jax.devices()[:1])
  rows = monitor.read_history(workdir)
  assert [r['step'] for r in rows] == [2, 4]
  for r in rows:
    assert r['single_minus_multi_step'] == pytest.approx(r['fgsm_accuracy'] -
                                                         r['pgd_accuracy'])
    assert r['pgd_accuracy'] <= r['clean_accuracy'] and r['fgsm_accuracy'] <= r[
        'clean_accuracy']
  saved = json.load(open(os.path.join(workdir, train.FINAL_METRICS_FILE)))
  assert saved['catastrophic_overfitting'] is final['catastrophic_overfitting']
  assert saved['monitor_pgd_accuracy'] == rows[-1]['pgd_accuracy']
