"""The certified-training terms ibp and crown_ibp (Gowal et al. 2018; Zhang et al. 2020)."""

import importlib.util
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
from robustjax.certify import bound_propagation as bp
from robustjax.regularizers import registry
from robustjax.regularizers.certified import crown_ibp
from robustjax.regularizers.certified import ibp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy():
  model = models.create('mlp', num_classes=3, widths=(16,), activation='relu')
  params = models.init(model, jax.random.PRNGKey(0), (6,))['params']
  logits_fn = lambda p, x: model.apply({'params': p}, x)
  x = jax.random.uniform(jax.random.PRNGKey(1), (32, 6))
  y = (jnp.sum(x[:, :3], -1) > 1.5).astype(jnp.int32) + (x[:, 5] > 0.7)
  return logits_fn, params, x, y


def test_registered_as_logits_terms_and_exact_at_eps_zero():
  logits_fn, params, x, y = _toy()
  assert registry.takes('ibp') == registry.takes('crown_ibp') == 'logits_fn'
  clean = losses.cross_entropy(logits_fn(params, x), y)
  for term, kw in ((ibp, {}), (crown_ibp, {'beta': 0.7})):
    # eps = 0: the bounds are the margins themselves, CE(−m) is the clean CE.
    values, aux = term(logits_fn, params, (x, y), rng=None, eps=0.0, kappa=0.3, **kw)
    np.testing.assert_allclose(values, clean, rtol=1e-5, atol=1e-6)
    assert float(aux['network_gap']) < 1e-5
    # kappa = 1: the clean CE whatever eps.
    values, _ = term(logits_fn, params, (x, y), rng=None, eps=0.3, kappa=1.0, **kw)
    np.testing.assert_allclose(values, clean, rtol=1e-5, atol=1e-6)
    # A robust CE is never below the clean one (worst-case logits).
    _, aux = term(logits_fn, params, (x, y), rng=None, eps=0.05, kappa=0.0, **kw)
    assert np.all(aux['robust_ce'] >= aux['clean_ce'] - 1e-5)


def test_crown_ibp_mixes_two_sound_bounds():
  logits_fn, params, x, y = _toy()
  _, aux = crown_ibp(logits_fn, params, (x, y), rng=None, eps=0.05, kappa=0.0, beta=0.25)
  ref_ibp = bp.certify(bp.network_from_flax(params), x, y, 0.05, method='ibp').margins
  own = np.asarray(jax.nn.one_hot(y, 3, dtype=bool))
  np.testing.assert_allclose(np.asarray(aux['margins_ibp'])[~own],
                             np.asarray(ref_ibp)[~own], rtol=1e-5, atol=1e-5)
  mixed = 0.25 * aux['margins_crown_ibp'] + 0.75 * aux['margins_ibp']
  np.testing.assert_allclose(aux['margins'], mixed, rtol=1e-5, atol=1e-6)


def test_crown_ibp_skips_crown_where_beta_is_zero(monkeypatch):
  """beta = 0 is pure IBP (the papers' weight after the ramp): CROWN is never run, and a
  traced beta (the training step's schedule) picks the same values as a concrete one."""
  logits_fn, params, x, y = _toy()
  term = lambda b, **kw: crown_ibp(logits_fn, params, (x, y), rng=None, eps=0.05,
                                   kappa=0.2, beta=b, **kw)
  traced = jax.jit(lambda b: term(b)[0])
  expected = {b: term(b)[0] for b in (0.0, 0.25)}
  for b, values in expected.items():
    np.testing.assert_allclose(traced(jnp.float32(b)), values, rtol=1e-5, atol=1e-6)
  ibp_values, _ = ibp(logits_fn, params, (x, y), rng=None, eps=0.05, kappa=0.2)
  np.testing.assert_allclose(expected[0.0], ibp_values, rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda q, b: jnp.mean(crown_ibp(logits_fn, q, (x, y), rng=None,
                                                   eps=0.05, kappa=0.0, beta=b)[0]))
  for b in (0.0, 0.25):
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads(params,
                                                                     jnp.float32(b))))
  original = bp._margin_bounds  # pylint: disable=protected-access

  def no_crown(*args, method, **kwargs):
    assert method != 'crown_ibp', 'CROWN-IBP was computed at beta = 0'
    return original(*args, method=method, **kwargs)

  monkeypatch.setattr(bp, '_margin_bounds', no_crown)
  np.testing.assert_allclose(term(0.0)[0], expected[0.0], rtol=1e-6)


@pytest.mark.parametrize('name,p', [('ibp', math.inf), ('crown_ibp', math.inf),
                                    ('crown_ibp', 2.0)])
def test_gradients_are_finite_and_lower_the_bound_loss(name, p):
  logits_fn, params, x, y = _toy()
  term = registry.get(name)
  kw = {'beta': 1.0} if name == 'crown_ibp' else {}
  eps0 = jax.grad(lambda q: jnp.mean(term(logits_fn, q, (x, y), rng=None, eps=0.0, p=p,
                                          kappa=0.0, **kw)[0]))(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(eps0))  # ε ramp's start
  eps = 0.1 if p == math.inf else 0.5
  loss = lambda q: jnp.mean(term(logits_fn, q, (x, y), rng=None, eps=eps, p=p, kappa=0.0,
                                 **kw)[0])
  step = jax.jit(jax.value_and_grad(loss))
  opt = optax.adam(1e-2)
  state = opt.init(params)
  first, grads = step(params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  value = first
  for _ in range(40):
    value, grads = step(params)
    updates, state = opt.update(grads, state)
    params = optax.apply_updates(params, updates)
  assert float(value) < 0.85 * float(first), (first, value)


def test_bad_input_is_a_clear_error():
  logits_fn, params, x, y = _toy()
  cases = [(ibp, dict(eps=-0.1), 'eps'), (ibp, dict(kappa=1.5), 'kappa'),
           (ibp, dict(p=1.0), 'p must be one of'), (ibp, dict(model='resnet18'), 'model'),
           (crown_ibp, dict(beta=2.0), 'beta'),
           (ibp, dict(activation='hhrelu'), 'activation')]
  for term, kw, match in cases:
    with pytest.raises(ValueError, match=match):
      term(logits_fn, params, (x, y), rng=None, **kw)
  with pytest.raises(ValueError, match='logits'):  # a structure that is not the model's
    ibp(lambda p, v: logits_fn(p, v)[:, :2], params, (x, y % 2), rng=None)


def test_crown_ibp_digits_config_trains_with_its_schedules(tmp_path):
  from robustjax.training import train  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      'cfg_crown_ibp_digits', os.path.join(ROOT, 'configs', 'crown_ibp_digits.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  term = config.regularizers.crown_ibp
  assert dict(term.schedules.kappa)['init'] == 1.0 and term.hparams.kappa == 0.0
  assert dict(term.schedules.beta)['init'] == 1.0 and term.hparams.beta == 0.0
  config.num_train_steps = 2
  config.batch_size = 16
  config.model.kwargs.widths = (8,)
  config.eval.num_examples = 16
  config.eval.batch_size = 16
  config.eval.steps = 0
  final = train.train_and_evaluate(config, str(tmp_path / 'run'),
                                   devices=jax.devices()[:1])
  assert final['step'] == 2
  records = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  assert np.isfinite(records[0]['crown_ibp'])
