"""What one train step optimises, checked against the papers' formulas term by term.

Woods et al.: ψ scales eq. 9 only (output zeroing keeps k_out), eq. 15 reads the loss of
the trained (half-adversarial) batch, eq. 9 is evaluated at the half-adversarial points.
SOAR app. C: only the regularizer's gradient is clipped. Schedules ramp any hparam.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import losses
from robustjax import models
from robustjax.regularizers import registry
from robustjax.regularizers import controllers
from robustjax.training import schema
from robustjax.training import step as step_lib

NUM_CLASSES = 3


def _problem(batch=8, dim=6, widths=(8,), seed=1):
  model = models.create('mlp', num_classes=NUM_CLASSES, widths=widths,
                        activation='softplus')
  x = jax.random.uniform(jax.random.PRNGKey(seed), (batch, dim))
  y = jnp.arange(batch, dtype=jnp.int32) % NUM_CLASSES
  return model, (x, y)


def _state(model, tx, controller=None, dim=6):
  mesh = step_lib.make_mesh(jax.devices()[:1])
  return step_lib.init_state(model, tx, rng=jax.random.PRNGKey(0), input_shape=(dim,),
                             mesh=mesh, controller=controller)


def _term(label, name, hparams, **kwargs):
  schema.load_regularizers()
  penalty = registry.get(name)
  fields = dict(grad_clip=0.0, aux_loss='', aux_loss_weight=1.0)
  fields.update(kwargs)
  return step_lib.Term(label, name, penalty, penalty.takes, 1.0, hparams,
                       fields['grad_clip'], fields['aux_loss'],
                       fields['aux_loss_weight'], fields.get('schedules', ()),
                       fields.get('inputs_from', ''))


def _logits(model, params, x):
  return model.apply({'params': params}, x)


def _eq9_and_zeroing(model, params, x):
  """Eq. 9 (z = 2, all V outputs, ψ = 1) and eq. 12 (k_out = 0.01) per example, dense."""
  def per_example(xi):
    jac = jax.jacrev(lambda v: _logits(model, params, v[None])[0])(xi)  # [V, D]
    return jnp.sum(jac ** 2) / jac.size, 0.01 * jnp.sum(_logits(model, params, xi[None])**2)
  return jax.jit(jax.vmap(per_example))(x)


def test_adaptive_psi_scales_eq9_but_not_output_zeroing():
  """ψ = k_ψ,0 = 220 multiplies eq. 9; output zeroing stays 0.01 · mean Σ y²."""
  model, (x, y) = _problem()
  tx = optax.sgd(0.0)
  # K = V outputs: the penalty is deterministic, no key to replay.
  lip = _term('lip', 'lipschitz', {'psi': 1.0, 'num_outputs': NUM_CLASSES,
                                   'output_zeroing': 0.01})
  ctl = controllers.adaptive_psi(target_loss=1.0, initial_psi=220.0)
  fn = step_lib.make_train_step(model=model, terms=[lip], tx=tx, schedule=lambda s: 0.0,
                                nominal_weight=0.0, controller=ctl, controlled_term='lip')
  state = _state(model, tx, ctl)
  _, metrics = jax.jit(fn)(state, (x, y))
  params = state.params
  # Oracle, written out: eq. 9 with z = 2, K = V from the dense Jacobian, and eq. 12.
  eq9, zeroing = _eq9_and_zeroing(model, params, x)
  want = 220.0 * jnp.mean(eq9) + jnp.mean(zeroing)
  assert float(metrics['psi']) == pytest.approx(220.0)
  assert float(metrics['loss']) == pytest.approx(float(want), rel=1e-5)
  # The whole term scaled by ψ (the old behaviour) is far from it.
  assert abs(220.0 * float(jnp.mean(eq9 + zeroing)) - float(want)) > 0.1 * float(want)


def _woods_terms(l2min_eps):
  l2min = _term('l2min', 'adversarial_l2min', {'eps': l2min_eps, 'steps': 3,
                                               'half_half': True, 'bounds': None})
  lip = _term('lipschitz', 'lipschitz', {'psi': 1.0, 'num_outputs': NUM_CLASSES},
              inputs_from='l2min')
  return l2min, lip


def test_controller_reads_the_half_adversarial_ce_and_eq9_sees_those_points():
  """After one step, S = max(0, clip(−ln(L_trained / L_target))) of the trained batch."""
  model, (x, y) = _problem()
  tx = optax.sgd(0.0)
  l2min, lip = _woods_terms(l2min_eps=2.0)
  target, k0 = 5.0, 3.0
  ctl = controllers.adaptive_psi(target_loss=target, initial_psi=k0, gain=0.02,
                                 eps_better=1.0, eps_worse=1.0)
  # Listed Lipschitz-first: the step must still evaluate the L2,min term first.
  fn = step_lib.make_train_step(model=model, terms=[lip, l2min], tx=tx,
                                schedule=lambda s: 0.0, nominal_weight=0.0,
                                controller=ctl, controlled_term='lipschitz')
  state = _state(model, tx, ctl)
  new, metrics = jax.jit(fn)(state, (x, y))
  params = state.params
  logits_fn = lambda p, v: _logits(model, p, v)
  _, aux = registry.get('adversarial_l2min')(logits_fn, params, (x, y),
                                             rng=jax.random.PRNGKey(0), eps=2.0, steps=3,
                                             half_half=True, bounds=None)
  x_half = aux['x_adv']
  assert float(jnp.max(jnp.abs(x_half[1::2] - x[1::2]))) == 0.0  # odd rows stay clean
  assert float(jnp.max(jnp.sum((x_half[::2] - x[::2]) ** 2, -1))) > 0.1  # even: moved
  log_p = jax.nn.log_softmax(_logits(model, params, x_half))
  trained_ce = -float(jnp.mean(log_p[jnp.arange(8), y]))
  clean_ce = -float(jnp.mean(jax.nn.log_softmax(_logits(model, params, x))[jnp.arange(8),
                                                                            y]))
  want = max(0.0, float(np.clip(-np.log(trained_ce / target), -1.0, 1.0)))
  assert float(new.controller.integral) == pytest.approx(want, rel=1e-5, abs=1e-6)
  assert float(metrics['controller_loss']) == pytest.approx(trained_ce, rel=1e-5)
  assert abs(-np.log(clean_ce / target) - want) > 1e-3  # the clean CE would differ
  # Eq. 9 is evaluated on the half-adversarial batch, scaled by ψ = k_ψ,0.
  eq9, zeroing = _eq9_and_zeroing(model, params, x_half)
  assert float(metrics['lipschitz']) == pytest.approx(float(jnp.mean(k0 * eq9 + zeroing)),
                                                      rel=1e-5)


def test_controller_loss_choices():
  terms = _woods_terms(1.0)
  metrics = {'nominal': jnp.float32(1.0), 'l2min': jnp.float32(3.0),
             'lipschitz': jnp.float32(7.0)}
  read = lambda **kw: float(step_lib.controller_loss(metrics, terms, **kw))
  assert read(nominal_weight=0.0) == 3.0  # half-half: the adversarial term alone
  assert read(nominal_weight=1.0) == 2.0  # weighted mean of the classification losses
  assert read(nominal_weight=0.0, reads='nominal') == 1.0
  assert read(nominal_weight=0.0, reads='lipschitz') == 7.0
  config = schema.base_config()
  config.regularizers.l2min = schema.term('adversarial_l2min', eps=1.0)
  config.controller.update({'name': 'adaptive_psi', 'term': 'l2min', 'loss': 'nope'})
  with pytest.raises(ValueError, match='^config.controller.loss'):
    schema.validate(config)
  config.controller.loss = 'l2min'
  schema.validate(config)
  assert step_lib.controller_from_config(config.controller) is not None


def test_soar_step_clips_only_the_regularizer_gradient():
  """SGD(lr=1) moves params by −(∇ℓ(x') + clip_c(∇λR)) (SOAR app. C)."""
  model, (x, y) = _problem(widths=(6,))
  tx = optax.sgd(1.0)
  hparams = {'eps': 0.1, 'alpha': 0.1, 'init': 'pgd1', 'bounds': None}
  clip = 0.05
  soar = _term('soar', 'soar', hparams, grad_clip=clip, aux_loss='loss_at_start')
  soar = soar._replace(weight=0.5)
  fn = step_lib.make_train_step(model=model, terms=[soar], tx=tx, schedule=lambda s: 1.0,
                                nominal_weight=0.0)
  state = _state(model, tx)
  before = state.params
  new, metrics = jax.jit(fn)(state, (x, y))
  moved = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), before, new.params)
  # Oracle: the same key as the step (term 0 of step 0), gradients taken separately.
  key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), 0)
  loss_fn = losses.cross_entropy_loss_fn(lambda p, v: _logits(model, p, v))
  run = lambda p: registry.get('soar')(loss_fn, p, (x, y), rng=key, **hparams)
  g_reg, g_start = jax.jit(lambda p: (
      jax.grad(lambda q: 0.5 * jnp.mean(run(q)[0]))(p),
      jax.grad(lambda q: jnp.mean(run(q)[1]['loss_at_start']))(p)))(before)
  reg_norm = float(optax.tree.norm(g_reg))
  assert reg_norm > 5 * clip  # the clip binds
  scale = clip / reg_norm
  want = jax.tree.map(lambda a, b: a + scale * b, g_start, g_reg)
  for got, exp in zip(jax.tree.leaves(moved), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, np.asarray(exp), rtol=1e-4, atol=1e-6)
  assert float(metrics['soar/grad_norm']) == pytest.approx(reg_norm, rel=1e-4)
  # Clipping ∇[ℓ(x') + λR] as a whole (the old step) gives another update.
  whole = jax.tree.map(jnp.add, g_start, g_reg)
  old = jax.tree.map(lambda g: g * clip / float(optax.tree.norm(whole)), whole)
  gap = optax.tree.norm(jax.tree.map(jnp.subtract, old, want))
  assert float(gap) > 0.1 * float(optax.tree.norm(g_start))


def test_schedule_value_follows_its_formula():
  s = lambda step, **kw: float(step_lib.schedule_value(jnp.int32(step), 2.0, **kw))
  assert s(0, steps=10) == 0.0
  assert s(5, steps=10) == pytest.approx(1.0)
  assert s(50, steps=10) == pytest.approx(2.0)
  assert s(7, steps=10, init=1.0, begin=2) == pytest.approx(1.5)
  assert s(1, steps=10, init=1.0, begin=2) == pytest.approx(1.0)
  assert s(5, steps=10, kind='cosine') == pytest.approx(1.0)
  assert s(2, steps=10, kind='cosine') == pytest.approx(1.0 - np.cos(0.2 * np.pi), rel=1e-5)


def test_any_hparam_ramps_from_the_config_like_cures_h():
  """CURE's h ramps 0.5 -> 1.5 over 4 steps; each step's value is CURE at that h."""
  model, (x, y) = _problem()
  config = schema.base_config()
  config.regularizers.cure = schema.term('cure', weight=1.0, h=1.5,
                                         schedules={'h': {'steps': 4, 'init': 0.5}})
  schema.validate(config)
  (term,) = step_lib.resolve_terms(config)
  assert term.schedules == (('h', ('linear', 4, 0.5, 0)),)
  tx = optax.sgd(0.5)
  fn = jax.jit(step_lib.make_train_step(model=model, terms=[term], tx=tx,
                                        schedule=lambda s: 0.5, nominal_weight=1.0))
  state = _state(model, tx)
  loss_fn = losses.cross_entropy_loss_fn(lambda p, v: _logits(model, p, v))
  cure = registry.get('cure')
  for step, h in enumerate((0.5, 0.75, 1.0)):
    want = float(jnp.mean(cure(loss_fn, state.params, (x, y), h=h)[0]))
    other = float(jnp.mean(cure(loss_fn, state.params, (x, y), h=1.5)[0]))
    state, metrics = fn(state, (x, y))
    assert float(metrics['cure']) == pytest.approx(want, rel=1e-5), step
    assert abs(other - want) > 1e-3 * abs(want)


@pytest.mark.parametrize('schedules, field', [
    ({'q': {'steps': 4}}, 'config.regularizers.r.schedules.q'),
    ({'h': {'init': 0.1}}, 'config.regularizers.r.schedules.h.steps'),
    ({'h': {'steps': 0}}, 'config.regularizers.r.schedules.h.steps'),
    ({'h': {'steps': 3, 'kind': 'exp'}}, 'config.regularizers.r.schedules.h.kind'),
    ({'h': {'steps': 3, 'start': 0.0}}, 'config.regularizers.r.schedules.h.start'),
])
def test_bad_schedules_name_the_field(schedules, field):
  config = schema.base_config()
  config.regularizers.r = schema.term('cure', h=1.5, schedules=schedules)
  with pytest.raises(ValueError) as info:
    schema.validate(config)
  assert str(info.value).startswith(field), str(info.value)


def test_inputs_from_must_name_an_unclipped_term():
  config = schema.base_config()
  config.regularizers.lip = schema.term('lipschitz', inputs_from='adv')
  with pytest.raises(ValueError, match='^config.regularizers.lip.inputs_from'):
    schema.validate(config)
  config.regularizers.adv = schema.term('adversarial', grad_clip=1.0)
  with pytest.raises(ValueError, match='^config.regularizers.lip.inputs_from'):
    schema.validate(config)
  config.regularizers.adv.grad_clip = 0.0
  schema.validate(config)
