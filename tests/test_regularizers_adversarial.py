"""Adversarial training (Madry PGD-k, Woods L2,min, half-half) and TRADES as penalties."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import geometry
from robustjax import losses
from robustjax.regularizers import registry
from robustjax.regularizers.adversarial import adversarial
from robustjax.regularizers.adversarial import adversarial_l2min
from robustjax.regularizers.adversarial import l2min_step_sizes
from robustjax.regularizers.trades import kl_divergence
from robustjax.regularizers.trades import trades

V = 3


def _params(key, scale=1.0):
  k1, k2 = jax.random.split(key)
  return {'w1': scale * jax.random.normal(k1, (8, 6)), 'b1': jnp.zeros(6),
          'w2': scale * jax.random.normal(k2, (6, V)), 'b2': jnp.zeros(V)}


def logits_fn(params, x):
  h = jnp.tanh(jnp.reshape(x, (x.shape[0], -1)) @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


loss_fn = losses.cross_entropy_loss_fn(logits_fn)


def _batch(key, b=4):
  x = jax.random.uniform(key, (b, 2, 4), minval=0.2, maxval=0.8)
  return x, jnp.arange(b, dtype=jnp.int32) % V


@pytest.mark.parametrize('p', [math.inf, 2.0])
def test_pgd_from_zero_with_keep_best_never_below_clean_loss(p):
  params = _params(jax.random.PRNGKey(0))
  x, y = _batch(jax.random.PRNGKey(1))
  values, aux = adversarial(loss_fn, params, (x, y), rng=jax.random.PRNGKey(2), eps=0.1,
                            p=p, steps=3, step_size=0.05, init='zero', keep_best=True)
  clean = loss_fn(params, x, y)
  assert np.all(values >= clean - 1e-6)
  assert np.mean(values > clean + 1e-4) >= 0.75  # the attack does something
  assert np.all(geometry.norm(aux['x_adv'] - x, p) <= 0.1 + 1e-5)
  assert np.all((aux['x_adv'] >= 0) & (aux['x_adv'] <= 1))


@pytest.mark.parametrize('p,dual,init', [(math.inf, 1.0, 'uniform'), (2.0, 2.0, 'zero')])
def test_linear_loss_reaches_the_analytic_worst_case(p, dual, init):
  w = jnp.array([[0.5, -2.0, 1.0, 0.0], [3.0, -0.1, 0.2, -1.0]])
  lin = lambda params, x, y: jnp.sum(jnp.reshape(params * x, (x.shape[0], -1)), -1)
  x = jnp.full((2, 2, 4), 0.5)
  y = jnp.zeros(2, jnp.int32)
  values, _ = adversarial(lin, w, (x, y), rng=jax.random.PRNGKey(0), eps=0.1, p=p,
                          steps=7, step_size=0.05, restarts=2, init=init)
  exact = jnp.sum(w * 0.5) + 0.1 * jnp.linalg.norm(w.ravel(), dual)
  np.testing.assert_allclose(values, exact, rtol=1e-5)


def test_restarts_keep_the_worst_case():
  params = _params(jax.random.PRNGKey(3))
  x, y = _batch(jax.random.PRNGKey(4))
  kw = dict(eps=0.2, p=math.inf, steps=2, step_size=0.02, keep_best=True)
  many, _ = adversarial(loss_fn, params, (x, y), rng=jax.random.PRNGKey(5), restarts=4, **kw)
  run = jax.jit(lambda key: adversarial(loss_fn, params, (x, y), rng=key, **kw)[0])
  singles = [run(key) for key in jax.random.split(jax.random.PRNGKey(5), 4)]
  np.testing.assert_allclose(many, np.max(singles, axis=0), rtol=1e-5)
  assert np.any(np.ptp(singles, axis=0) > 1e-3)  # the restarts do differ


def test_param_gradient_does_not_flow_through_the_attack():
  params = _params(jax.random.PRNGKey(6))
  x, y = _batch(jax.random.PRNGKey(7))
  rng = jax.random.PRNGKey(8)
  total = lambda p: (lambda v, a: (jnp.sum(v), a))(*adversarial(loss_fn, p, (x, y),
                                                                rng=rng, steps=2))
  (_, aux), grads = jax.value_and_grad(total, has_aux=True)(params)
  fixed = jax.grad(lambda p: jnp.sum(loss_fn(p, aux['x_adv'], y)))(params)
  chex.assert_trees_all_close(grads, fixed, rtol=1e-5, atol=1e-7)


def test_half_half_perturbs_even_positions_only():
  params = _params(jax.random.PRNGKey(9))
  x, y = _batch(jax.random.PRNGKey(10), b=5)
  values, aux = adversarial(loss_fn, params, (x, y), rng=jax.random.PRNGKey(11), eps=0.1,
                            steps=3, init='zero', keep_best=True, half_half=True)
  clean = loss_fn(params, x, y)
  np.testing.assert_array_equal(aux['perturbed'], [True, False, True, False, True])
  np.testing.assert_array_equal(aux['x_adv'][1::2], x[1::2])
  np.testing.assert_allclose(values[1::2], clean[1::2], rtol=1e-6)
  assert np.all(values[::2] > clean[::2])
  _, l2aux = adversarial_l2min(logits_fn, params, (x, y), rng=None, eps=0.3, steps=2,
                               half_half=True)
  np.testing.assert_array_equal(l2aux['x_adv'][1::2], x[1::2])
  assert not np.allclose(l2aux['x_adv'][::2], x[::2])


def _binary_linear():
  # logits = [0, w.x + b]: class 1 iff w.x + b > 0; distance to the boundary |w.x+b|/||w||.
  w = jnp.array([0.6, -0.8])
  params = {'w': w, 'b': jnp.float32(-0.1)}
  fn = lambda p, x: jnp.stack([jnp.zeros(x.shape[0]), x @ p['w'] + p['b']], -1)
  return params, fn


def test_l2min_stops_near_the_boundary_and_goes_full_eps_when_far():
  params, fn = _binary_linear()
  x = jnp.array([[1.0, 0.0], [0.2, 0.0], [-1.0, 0.5], [3.0, 0.0]])
  y = jnp.array([1, 1, 0, 1], jnp.int32)
  eps, k = 1.0, 7
  dist = np.abs(np.asarray(x @ params['w'] + params['b'])) / 1.0  # ||w|| = 1
  _, aux = adversarial_l2min(fn, params, (x, y), rng=None, eps=eps, steps=k, bounds=None)
  x_adv = np.asarray(aux['x_adv'])
  last = 2.0 / (k * (k + 1)) * eps
  boundary = np.abs(x_adv @ np.asarray(params['w']) + float(params['b']))
  for i in range(4):
    if dist[i] < eps:  # reaches the boundary, then oscillates within the last step
      assert boundary[i] <= last + 1e-5, (i, boundary[i])
    else:  # straight along the normalised gradient (towards the boundary) by eps
      np.testing.assert_allclose(np.linalg.norm(x_adv[i] - x[i]), eps, rtol=1e-5)
      assert boundary[i] == pytest.approx(dist[i] - eps, abs=1e-5)
  sizes = l2min_step_sizes(k)
  assert float(jnp.sum(sizes)) == pytest.approx(1.0)
  assert np.all(np.diff(sizes) < 0)


def _reference_trades_attack(params, x, key, *, eps, steps, step):
  """TRADES' PGD written plainly: start at x + 0.001 N(0,1), sign steps on the KL."""
  clean = logits_fn(params, x)
  x_adv = x + 0.001 * jax.random.normal(key, x.shape)
  kl_grad = jax.grad(lambda z: jnp.sum(kl_divergence(clean, logits_fn(params, z))))
  for _ in range(steps):
    x_adv = x_adv + step * jnp.sign(kl_grad(x_adv))
    x_adv = jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)
  return x_adv


def test_trades_kl_matches_reference_and_is_nonnegative():
  params = _params(jax.random.PRNGKey(12), scale=2.0)
  x, y = _batch(jax.random.PRNGKey(13), b=6)
  key = jax.random.PRNGKey(14)
  values, aux = trades(logits_fn, params, (x, y), rng=key, beta=6.0, eps=0.1, steps=5,
                       step_size=0.03)
  p = np.asarray(jax.nn.softmax(logits_fn(params, x)), np.float64)
  q = np.asarray(jax.nn.softmax(logits_fn(params, aux['x_adv'])), np.float64)
  kl = np.sum(p * np.log(p / q), axis=-1)
  np.testing.assert_allclose(aux['kl'], kl, rtol=1e-3, atol=1e-6)
  np.testing.assert_allclose(values, 6.0 * aux['kl'], rtol=1e-6)
  assert np.all(aux['kl'] >= 0)
  assert np.all(geometry.norm(aux['x_adv'] - x, math.inf) <= 0.1 + 1e-6)
  ref = _reference_trades_attack(params, x, key, eps=0.1, steps=5, step=0.03)
  ref_kl = kl_divergence(logits_fn(params, x), logits_fn(params, ref))
  # The same adversary (5 steps of 0.03 hit the 0.1 ball; the data stays inside the box).
  np.testing.assert_allclose(aux['x_adv'], ref, rtol=0, atol=1e-6)
  np.testing.assert_allclose(aux['kl'], ref_kl, rtol=1e-5, atol=1e-7)
  start_kl = kl_divergence(logits_fn(params, x), logits_fn(params, x + 0.001 *
                                                          jax.random.normal(key, x.shape)))
  assert np.all(aux['kl'] > start_kl)


def test_trades_is_zero_at_zero_eps_and_differentiates_both_sides():
  params = _params(jax.random.PRNGKey(15))
  x, y = _batch(jax.random.PRNGKey(16))
  values, _ = trades(logits_fn, params, (x, y), rng=jax.random.PRNGKey(0), eps=0.0,
                     steps=2)
  np.testing.assert_array_equal(values, 0.0)
  rng = jax.random.PRNGKey(1)
  (_, aux), grads = jax.value_and_grad(
      lambda p: (lambda v, a: (jnp.sum(v), a))(*trades(logits_fn, p, (x, y), rng=rng,
                                                       eps=0.1, steps=2)),
      has_aux=True)(params)
  ref = jax.grad(lambda p: 6.0 * jnp.sum(kl_divergence(logits_fn(p, x),
                                                       logits_fn(p, aux['x_adv']))))(params)
  chex.assert_trees_all_close(grads, ref, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize('scale,flat', [(1e4, False), (1.0, True)])
def test_finite_values_and_param_grads_saturated_or_flat(scale, flat):
  params = _params(jax.random.PRNGKey(17), scale=scale)
  if flat:
    params = dict(params, w1=jnp.zeros_like(params['w1']))
  x, y = _batch(jax.random.PRNGKey(18))
  rng = jax.random.PRNGKey(2)
  calls = {
      'adversarial': lambda p: adversarial(loss_fn, p, (x, y), rng=rng, steps=2,
                                           half_half=True)[0],
      'adversarial_l2min': lambda p: adversarial_l2min(logits_fn, p, (x, y), rng=rng,
                                                       steps=2)[0],
      'trades': lambda p: trades(logits_fn, p, (x, y), rng=rng, steps=2)[0],
  }
  for name, call in calls.items():
    values, vjp = jax.vjp(call, params)
    grads = vjp(jnp.ones_like(values))
    chex.assert_tree_all_finite((values, grads))


def test_non_per_example_functions_raise_before_the_attack():
  params = _params(jax.random.PRNGKey(0))
  x, y = _batch(jax.random.PRNGKey(1))
  mean_loss = lambda p, xx, yy: jnp.mean(loss_fn(p, xx, yy))
  with pytest.raises(ValueError, match='loss_fn'):
    adversarial(mean_loss, params, (x, y), rng=jax.random.PRNGKey(0))
  flat_logits = lambda p, xx: jnp.ravel(logits_fn(p, xx))
  for fn in (trades, adversarial_l2min):
    with pytest.raises(ValueError, match='logits_fn'):
      fn(flat_logits, params, (x, y), rng=jax.random.PRNGKey(0))


def test_registry_records_what_each_takes():
  assert registry.get('adversarial').takes == 'loss_fn'
  assert registry.get('adversarial_l2min').takes == 'logits_fn'
  assert registry.get('trades').takes == 'logits_fn'


@pytest.mark.parametrize('fn,kwargs,name', [
    ('adversarial', {'eps': -0.1}, 'eps'), ('adversarial', {'p': 0.5}, 'p'),
    ('adversarial', {'steps': -1}, 'steps'), ('adversarial', {'restarts': 0}, 'restarts'),
    ('adversarial', {'init': 'gaussian'}, 'init'),
    ('adversarial', {'step_rule': 'newton'}, 'step_rule'),
    ('adversarial_l2min', {'eps': -1.0}, 'eps'),
    ('adversarial_l2min', {'steps': 2.5}, 'steps'),
    ('trades', {'eps': -0.1}, 'eps'), ('trades', {'p': 0.0}, 'p'),
    ('trades', {'beta': -1.0}, 'beta'), ('trades', {'steps': -2}, 'steps')])
def test_bad_input_raises(fn, kwargs, name):
  params = _params(jax.random.PRNGKey(0))
  x, y = _batch(jax.random.PRNGKey(1))
  f = loss_fn if fn == 'adversarial' else logits_fn
  with pytest.raises(ValueError, match=name):
    registry.get(fn)(f, params, (x, y), rng=jax.random.PRNGKey(0), **kwargs)
