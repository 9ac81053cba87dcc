"""Tests for SCORPIO, SOAR, LLR, CURE and the gradient-norm penalty.

Oracles: per-example gradients from ``jax.grad`` of a single example's loss, dense
Hessians of quadratic losses, a dense trust-region solver, Monte Carlo references drawn
with numpy, and random search over the ball. Models are tiny plain-``jnp`` functions.
"""

from __future__ import annotations

import importlib
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import losses as losses_lib
from robustjax.regularizers import registry

# The package re-exports each penalty under its module's name, so the modules are
# fetched by their full path (importing them registers the penalties).
cure_lib = importlib.import_module('robustjax.regularizers.cure')
gradient_norm_lib = importlib.import_module('robustjax.regularizers.gradient_norm')
llr_lib = importlib.import_module('robustjax.regularizers.llr')
scorpio_lib = importlib.import_module('robustjax.regularizers.scorpio')
soar_lib = importlib.import_module('robustjax.regularizers.soar')

INPUT_SHAPE = (2, 2, 3)  # d = 12
NUM_CLASSES = 3


def mlp_logits(params, inputs):
  hidden = jnp.tanh(inputs.reshape(inputs.shape[0], -1) @ params['w1'] + params['b1'])
  return hidden @ params['w2']


mlp_loss = losses_lib.cross_entropy_loss_fn(mlp_logits)


def mlp_params(seed=0, scale=1.0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  d = math.prod(INPUT_SHAPE)
  return {'w1': scale * jax.random.normal(k1, (d, 8)) / math.sqrt(d),
          'b1': 0.1 * jax.random.normal(k2, (8,)),
          'w2': scale * jax.random.normal(k3, (8, NUM_CLASSES))}


def make_batch(batch_size=4, seed=1):
  x = jax.random.uniform(jax.random.PRNGKey(seed), (batch_size,) + INPUT_SHAPE,
                         minval=0.2, maxval=0.8)
  y = jnp.arange(batch_size, dtype=jnp.int32) % NUM_CLASSES
  return x, y


def single_example_grad(loss_fn, params, x, y):
  """Per-example input gradients by ``jax.grad`` of each example's own scalar loss."""
  one = lambda xi, yi: loss_fn(params, xi[None], yi[None])[0]
  return jax.vmap(jax.grad(one))(x, y)


def quadratic_loss(params, inputs, labels):
  """``ℓ_b(x) = ½ xᵀ A x + cᵀ x`` on flattened inputs; Hessian A, gradient A x + c."""
  del labels
  flat = inputs.reshape(inputs.shape[0], -1)
  return 0.5 * jnp.einsum('bi,ij,bj->b', flat, params['A'], flat) + flat @ params['c']


def quadratic_params(d, seed=0):
  rng = np.random.default_rng(seed)
  m = rng.normal(size=(d, d))
  return {'A': jnp.asarray(m @ m.T / d, jnp.float32),
          'c': jnp.asarray(rng.normal(size=d), jnp.float32)}


def trust_region_max(a, g, eps):
  """Dense solution of ``max gᵀv + ½vᵀAv s.t. ‖v‖₂ ≤ ε`` for PSD A (float64).

  The maximiser lies on the sphere: ``v = (λI − A)⁻¹g`` with ``λ > λ_max(A)`` chosen by
  bisection on the secular equation ``‖v(λ)‖ = ε``.
  """
  lam, q = np.linalg.eigh(a)
  gt = q.T @ g
  lo, hi = lam[-1], lam[-1] + np.linalg.norm(g) / eps
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if np.linalg.norm(gt / (mid - lam)) > eps:
      lo = mid
    else:
      hi = mid
  return q @ (gt / (hi - lam))


def assert_finite_tree(tree):
  for leaf in jax.tree_util.tree_leaves(tree):
    assert np.all(np.isfinite(np.asarray(leaf))), leaf


# --------------------------------------------------------------------------- gradient norm


@pytest.mark.parametrize('q', [1.0, 2.0, 3.0, math.inf])
def test_gradient_norm_matches_per_example_reference(q):
  params, (x, y) = mlp_params(), make_batch()
  values, aux = gradient_norm_lib.gradient_norm(mlp_loss, params, (x, y), q=q)
  g = np.asarray(single_example_grad(mlp_loss, params, x, y)).reshape(x.shape[0], -1)
  expected = np.linalg.norm(g, ord=q, axis=1) ** 2
  np.testing.assert_allclose(values, expected, rtol=1e-5)
  np.testing.assert_allclose(aux['loss'], mlp_loss(params, x, y), rtol=1e-6)


def test_gradient_norm_param_gradient_is_double_backprop():
  params, (x, y) = mlp_params(), make_batch()

  def reference(p):
    g = single_example_grad(mlp_loss, p, x, y)
    return jnp.mean(jnp.sum(g ** 2, axis=(1, 2, 3)))

  got = jax.grad(lambda p: jnp.mean(
      gradient_norm_lib.gradient_norm(mlp_loss, p, (x, y))[0]))(params)
  want = jax.grad(reference)(params)
  for k in params:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-7)


# -------------------------------------------------------------------------------- CURE


def test_cure_matches_dense_reference_values_and_param_gradients():
  params, (x, y) = mlp_params(), make_batch()
  h = 0.7

  def reference(p):
    g = single_example_grad(mlp_loss, p, x, y)
    flat = g.reshape(g.shape[0], -1)
    z = jnp.sign(flat) / jnp.sqrt(jnp.sum(jnp.sign(flat) ** 2, axis=1, keepdims=True))
    z = jax.lax.stop_gradient(z).reshape(x.shape)
    g_h = single_example_grad(mlp_loss, p, x + h * z, y)
    return jnp.sum((g_h - g) ** 2, axis=(1, 2, 3))

  values, aux = cure_lib.cure(mlp_loss, params, (x, y), h=h)
  np.testing.assert_allclose(values, reference(params), rtol=1e-4)
  np.testing.assert_allclose(np.sum(np.asarray(aux['direction']) ** 2, axis=(1, 2, 3)),
                             1.0, rtol=1e-5)
  got = jax.grad(lambda p: jnp.sum(cure_lib.cure(mlp_loss, p, (x, y), h=h)[0]))(params)
  want = jax.grad(lambda p: jnp.sum(reference(p)))(params)
  for k in params:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=1e-6)


def test_cure_on_quadratic_is_h_squared_curvature_along_sign_direction():
  d = math.prod(INPUT_SHAPE)
  params, (x, y) = quadratic_params(d), make_batch()
  h = 0.3
  values, aux = cure_lib.cure(quadratic_loss, params, (x, y), h=h)
  z = np.asarray(aux['direction']).reshape(x.shape[0], -1)
  hz = z @ np.asarray(params['A']).T
  np.testing.assert_allclose(values, h ** 2 * np.sum(hz ** 2, axis=1), rtol=1e-3)


# ----------------------------------------------------------------------------- SCORPIO


def _quadratic_setup(batch_size=3, d=6, seed=0):
  rng = np.random.default_rng(seed)
  m = rng.normal(size=(batch_size, d, d))
  a = m @ np.transpose(m, (0, 2, 1)) / d
  g = rng.normal(size=(batch_size, d))
  return a, g


@pytest.mark.parametrize('p', [1.0, 1.5, 2.0, 3.0, math.inf])
def test_frank_wolfe_never_decreases_q_for_psd_hessian(p):
  a, g = _quadratic_setup()
  aj, gj = jnp.asarray(a, jnp.float32), jnp.asarray(g, jnp.float32)
  grad_q = lambda v: gj + jnp.einsum('bij,bj->bi', aj, v)
  _, iterates = scorpio_lib.frank_wolfe(grad_q, gj, eps=0.8, p=p, steps=12,
                                        return_iterates=True)
  it = np.asarray(iterates, np.float64)
  q_values = np.sum(g * it, -1) + 0.5 * np.einsum('kbi,bij,kbj->kb', it, a, it)
  assert np.all(q_values >= -1e-6)
  assert np.all(np.diff(q_values, axis=0) >= -1e-5 * np.abs(q_values[1:]).max())
  norms = np.linalg.norm(it, ord=p, axis=-1)
  assert np.all(norms <= 0.8 * (1 + 1e-5))


def test_scorpio_attack_exact_approaches_trust_region_maximiser():
  d = math.prod(INPUT_SHAPE)
  params = quadratic_params(d, seed=3)
  x, y = make_batch(3)
  eps = 0.5
  a = np.asarray(params['A'], np.float64)
  flat = np.asarray(x, np.float64).reshape(3, -1)
  grads = flat @ a + np.asarray(params['c'], np.float64)
  exact = np.stack([trust_region_max(a, grads[i], eps) for i in range(3)])
  errors = []
  for steps in (1, 20, 100):
    x_adv = scorpio_lib.scorpio_attack(quadratic_loss, params, (x, y), eps=eps, p=2.0,
                                       steps=steps, scheme='exact', bounds=None)
    v = np.asarray(x_adv - x, np.float64).reshape(3, -1)
    errors.append(np.linalg.norm(v - exact, axis=1))
  errors = np.stack(errors)
  assert np.all(errors[2] < errors[0])
  assert np.all(errors[2] < 0.02 * eps), errors


@pytest.mark.parametrize('p', [2.0, math.inf])
def test_finite_difference_schemes_equal_exact_on_quadratic(p):
  d = math.prod(INPUT_SHAPE)
  params = quadratic_params(d, seed=1)
  x, y = make_batch(3)
  results = {}
  for scheme in scorpio_lib.SCHEMES:
    values, aux = scorpio_lib.scorpio(quadratic_loss, params, (x, y), eps=0.3, p=p,
                                      steps=4, h=0.9, scheme=scheme, bounds=None)
    results[scheme] = (np.asarray(values), np.asarray(aux['direction']))
  for scheme in ('forward', 'central'):
    np.testing.assert_allclose(results[scheme][1], results['exact'][1], atol=2e-5)
    np.testing.assert_allclose(results[scheme][0], results['exact'][0], rtol=1e-4,
                               atol=1e-5)


def test_scorpio_penalty_is_loss_increase_at_clipped_point_and_its_param_gradient():
  params, (x, y) = mlp_params(), make_batch()
  x = x.at[0].set(jnp.ones(INPUT_SHAPE))  # on the box's face: clipping matters
  values, aux = scorpio_lib.scorpio(mlp_loss, params, (x, y), eps=0.2, p=math.inf,
                                    steps=2, h=0.5)
  x_adv = aux['x_adv']
  assert np.all((np.asarray(x_adv) >= 0) & (np.asarray(x_adv) <= 1))
  assert np.all(np.abs(np.asarray(x_adv - x)) <= 0.2 + 1e-6)
  np.testing.assert_allclose(values, mlp_loss(params, x_adv, y) - mlp_loss(params, x, y),
                             rtol=1e-5, atol=1e-6)
  got = jax.grad(lambda p: jnp.sum(scorpio_lib.scorpio(
      mlp_loss, p, (x, y), eps=0.2, p=math.inf, steps=2, h=0.5)[0]))(params)
  want = jax.grad(lambda p: jnp.sum(mlp_loss(p, x_adv, y) - mlp_loss(p, x, y)))(params)
  for k in params:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-7)


def test_scorpio_attack_increases_loss_of_a_smooth_model():
  params, (x, y) = mlp_params(scale=3.0), make_batch(8)
  x_adv = scorpio_lib.scorpio_attack(mlp_loss, params, (x, y), eps=0.1, p=2.0, steps=3,
                                     h=0.5)
  assert np.all(np.asarray(mlp_loss(params, x_adv, y) - mlp_loss(params, x, y)) > 0)


# -------------------------------------------------------------------------------- SOAR


@pytest.mark.parametrize('num_directions,value_clip', [(1, math.inf), (4, 1.5)])
def test_soar_mean_matches_monte_carlo_reference_on_quadratic(num_directions, value_clip):
  d = 6
  params = quadratic_params(d, seed=2)
  x0 = np.linspace(0.2, 0.7, d).astype(np.float32)
  n = 4096 // num_directions
  x = jnp.broadcast_to(jnp.asarray(x0), (n, d))
  y = jnp.zeros((n,), jnp.int32)
  eps = 0.1
  values, aux = jax.jit(lambda p: soar_lib.soar(
      quadratic_loss, p, (x, y), rng=jax.random.PRNGKey(7), eps=eps, alpha=1.0,
      init='clean', num_directions=num_directions, value_clip=value_clip))(params)
  scale = (d * eps ** 2 + 1) / 2
  got = np.asarray(values) / scale  # [n], each a mean over the m directions
  np.testing.assert_array_equal(aux['x_start'], x)

  a = np.asarray(params['A'], np.float64)
  g = a @ x0 + np.asarray(params['c'], np.float64)
  big_h = np.block([[a, g[:, None]], [g[None, :], np.ones((1, 1))]])
  z = np.random.default_rng(0).normal(size=(400_000, d + 1))
  ref_samples = np.minimum(np.linalg.norm(z @ big_h.T, axis=1), value_clip)
  ref_mean = ref_samples.mean()
  stderr = ref_samples.std() / math.sqrt(n * num_directions)
  assert abs(got.mean() - ref_mean) < 4 * stderr, (got.mean(), ref_mean, stderr)
  # The clip really acts (and only then) on the second configuration.
  assert (np.max(got) <= value_clip + 1e-5)


@pytest.mark.parametrize('init', ['random', 'pgd1'])
def test_soar_start_lies_in_linf_ball_and_box_and_loss_at_start_matches(init):
  params, (x, y) = mlp_params(scale=3.0), make_batch(6)
  x = x.at[0].set(jnp.zeros(INPUT_SHAPE))
  eps = 0.05
  values, aux = jax.jit(lambda p: soar_lib.soar(
      mlp_loss, p, (x, y), rng=jax.random.PRNGKey(0), eps=eps, init=init))(params)
  start = np.asarray(aux['x_start'])
  assert np.all(np.abs(start - np.asarray(x)) <= eps + 1e-6)
  assert np.all((start >= 0) & (start <= 1))
  assert np.any(np.abs(start - np.asarray(x)) > 1e-3)
  np.testing.assert_allclose(aux['loss_at_start'], mlp_loss(params, start, y), rtol=1e-5)
  assert values.shape == (6,)


def test_soar_param_gradient_differentiates_both_gradients():
  """On a quadratic, 𝐇z is linear in A and c: compare with a dense param-gradient."""
  d = 6
  params = quadratic_params(d, seed=4)
  x = jax.random.uniform(jax.random.PRNGKey(3), (5, d))
  y = jnp.zeros((5,), jnp.int32)
  rng = jax.random.PRNGKey(11)
  kw = dict(rng=rng, eps=0.1, alpha=1.0, init='clean', value_clip=math.inf)
  # Recover the sampled z from the implementation's key split to build the reference.
  _, rng_z, rng_z1, _ = jax.random.split(rng, 4)
  z_d = jax.random.normal(rng_z, (1, 5, d))[0]
  z_1 = jax.random.normal(rng_z1, (1, 5))[0]

  def reference(p):
    hessian = 0.5 * (p['A'] + p['A'].T)  # the loss sees only A's symmetric part
    g = x @ hessian + p['c']
    top = z_d @ hessian + z_1[:, None] * g
    bottom = jnp.sum(g * z_d, axis=1) + z_1
    return (d * 0.01 + 1) / 2 * jnp.sqrt(jnp.sum(top ** 2, axis=1) + bottom ** 2)

  got_v, got = jax.jit(jax.value_and_grad(
      lambda p: jnp.sum(soar_lib.soar(quadratic_loss, p, (x, y), **kw)[0])))(params)
  np.testing.assert_allclose(got_v, jnp.sum(reference(params)), rtol=2e-3)
  want = jax.grad(lambda p: jnp.sum(reference(p)))(params)
  for k in params:
    np.testing.assert_allclose(got[k], want[k], rtol=5e-3, atol=1e-4)


# --------------------------------------------------------------------------------- LLR


def linear_loss(params, inputs, labels):
  del labels
  return inputs.reshape(inputs.shape[0], -1) @ params['w'] + params['b']


def test_llr_is_zero_for_a_loss_linear_in_x():
  d = math.prod(INPUT_SHAPE)
  params = {'w': jnp.linspace(-1.0, 1.0, d), 'b': jnp.asarray(0.3)}
  x, y = make_batch()
  values, aux = llr_lib.llr(linear_loss, params, (x, y), rng=jax.random.PRNGKey(0),
                            eps=0.1, steps=3, lam=4.0, mu=0.0)
  np.testing.assert_allclose(values, 0.0, atol=1e-5)
  np.testing.assert_allclose(aux['gamma'], 0.0, atol=1e-5)
  # The gradient term alone is |δᵀw|, nonzero at a nonzero δ.
  assert np.all(np.asarray(aux['grad_term']) > 0)


def test_llr_inner_max_beats_random_points_and_is_bounded_by_brute_force():
  """Quadratic loss: g(δ) = ½δᵀAδ, whose max over the L∞ ball is at a vertex."""
  d = 10
  params = quadratic_params(d, seed=0)
  x = jax.random.uniform(jax.random.PRNGKey(0), (6, d), minval=0.2, maxval=0.8)
  y = jnp.zeros((6,), jnp.int32)
  eps = 0.1  # the box [0, 1] does not bind
  values, aux = jax.jit(lambda p: llr_lib.llr(quadratic_loss, p, (x, y),
                                              rng=jax.random.PRNGKey(1), eps=eps,
                                              steps=10, lam=1.0, mu=0.0))(params)
  np.testing.assert_allclose(values, aux['gamma'], rtol=1e-6)
  delta = np.asarray(aux['delta'], np.float64)
  assert np.all(np.abs(delta) <= eps + 1e-6)
  a = np.asarray(params['A'], np.float64)
  np.testing.assert_allclose(aux['gamma'], 0.5 * np.einsum('bi,ij,bj->b', delta, a, delta),
                             rtol=1e-3, atol=1e-6)
  vertices = np.array(list(itertools.product([-eps, eps], repeat=d)))
  brute = 0.5 * np.max(np.einsum('vi,ij,vj->v', vertices, a, vertices))
  randoms = np.random.default_rng(0).uniform(-eps, eps, size=(256, d))
  best_random = 0.5 * np.max(np.einsum('vi,ij,vj->v', randoms, a, randoms))
  gamma = np.asarray(aux['gamma'])
  assert np.all(gamma >= best_random), (gamma, best_random)
  assert np.all(gamma <= brute * (1 + 1e-5))


def test_llr_param_gradient_flows_through_input_gradient():
  params, (x, y) = mlp_params(scale=2.0), make_batch()
  kw = dict(rng=jax.random.PRNGKey(2), eps=0.1, steps=3, lam=4.0, mu=3.0)
  _, aux = llr_lib.llr(mlp_loss, params, (x, y), **kw)
  delta = aux['delta']

  def reference(p):
    g = single_example_grad(mlp_loss, p, x, y)
    lin = jnp.sum(delta * g, axis=(1, 2, 3))
    gap = jnp.abs(mlp_loss(p, x + delta, y) - mlp_loss(p, x, y) - lin)
    return 4.0 * gap + 3.0 * jnp.abs(lin)

  got = jax.grad(lambda p: jnp.sum(llr_lib.llr(mlp_loss, p, (x, y), **kw)[0]))(params)
  want = jax.grad(lambda p: jnp.sum(reference(p)))(params)
  for k in params:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------- every method


METHODS = {
    'scorpio': (scorpio_lib.scorpio, dict(steps=2)),
    'scorpio_central': (scorpio_lib.scorpio, dict(steps=2, scheme='central')),
    'scorpio_exact': (scorpio_lib.scorpio, dict(steps=2, scheme='exact', p=2.0, eps=0.5)),
    'soar': (soar_lib.soar, dict()),
    'soar_random_m2': (soar_lib.soar, dict(num_directions=2, init='random')),
    'llr': (llr_lib.llr, dict(steps=2)),
    'cure': (cure_lib.cure, dict()),
    'gradient_norm': (gradient_norm_lib.gradient_norm, dict(q=1.0)),
}


def _jitted_value_and_param_grad(fn, kw):
  def objective(p, x, y):
    values, _ = fn(mlp_loss, p, (x, y), rng=jax.random.PRNGKey(0), **kw)
    return jnp.mean(values), values

  return jax.jit(jax.value_and_grad(objective, has_aux=True))


@pytest.mark.parametrize('name', sorted(METHODS))
def test_finite_at_saturated_softmax_and_at_zero_input_gradient(name):
  fn, kw = METHODS[name]
  step = _jitted_value_and_param_grad(fn, kw)  # one compile for both parameter sets
  x, y = make_batch()
  base = mlp_params()
  saturated = dict(base, w1=base['w1'] * 300.0, w2=base['w2'] * 300.0)
  assert float(jnp.max(jnp.abs(mlp_logits(saturated, x)))) > 500  # really saturated
  (_, values), grads = step(saturated, x, y)
  assert_finite_tree((values, grads))
  flat = dict(base, w1=jnp.zeros_like(base['w1']))  # logits constant in x: ∇ₓℓ = 0
  (_, values), grads = step(flat, x, y)
  assert_finite_tree((values, grads))
  if not name.startswith('soar'):  # SOAR's z₁ terms are nonzero even at zero gradient
    np.testing.assert_allclose(values, 0.0, atol=1e-6)


@pytest.mark.parametrize('name,kw', [('scorpio', dict(h=1e-30)), ('cure', dict(h=1e-30)),
                                     ('soar', dict(alpha=1e-30))])
def test_finite_at_tiny_step(name, kw):
  fn = METHODS[name][0]
  x, y = make_batch()
  (_, values), grads = _jitted_value_and_param_grad(fn, kw)(mlp_params(scale=2.0), x, y)
  assert_finite_tree((values, grads))


@pytest.mark.parametrize('name', ['scorpio', 'soar', 'llr', 'cure', 'gradient_norm'])
def test_registered_jit_matches_eager_and_unpacked_form(name):
  fn = registry.get(name)
  assert fn.takes == 'loss_fn'
  params, (x, y) = mlp_params(), make_batch()
  rng = jax.random.PRNGKey(3)
  eager, _ = fn(mlp_loss, params, (x, y), rng=rng)
  jitted, _ = jax.jit(lambda p, xx, yy: fn(mlp_loss, p, xx, yy, rng=rng))(params, x, y)
  assert eager.shape == (x.shape[0],)
  np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------- bad input


def scalar_loss(params, inputs, labels):
  return jnp.mean(mlp_loss(params, inputs, labels))


BAD_INPUTS = [
    (scorpio_lib.scorpio, dict(p=0.5), 'p'),
    (scorpio_lib.scorpio, dict(eps=-0.1), 'eps'),
    (scorpio_lib.scorpio, dict(steps=-1), 'steps'),
    (scorpio_lib.scorpio, dict(h=0.0), 'h'),
    (scorpio_lib.scorpio, dict(scheme='backward'), 'scheme'),
    (soar_lib.soar, dict(eps=-1.0), 'eps'),
    (soar_lib.soar, dict(alpha=0.0), 'alpha'),
    (soar_lib.soar, dict(init='zero'), 'init'),
    (soar_lib.soar, dict(num_directions=0), 'num_directions'),
    (soar_lib.soar, dict(value_clip=0.0), 'value_clip'),
    (llr_lib.llr, dict(p=0.0), 'p'),
    (llr_lib.llr, dict(eps=-0.1), 'eps'),
    (llr_lib.llr, dict(steps=-2), 'steps'),
    (llr_lib.llr, dict(lam=-1.0), 'lam'),
    (cure_lib.cure, dict(h=-1.0), 'h'),
    (gradient_norm_lib.gradient_norm, dict(q=0.5), 'q'),
]


@pytest.mark.parametrize('fn,kw,arg', BAD_INPUTS)
def test_bad_hyperparameters_raise_value_error_naming_argument(fn, kw, arg):
  with pytest.raises(ValueError, match=arg):
    fn(mlp_loss, mlp_params(), make_batch(), rng=jax.random.PRNGKey(0), **kw)


@pytest.mark.parametrize('name', ['scorpio', 'soar', 'llr', 'cure', 'gradient_norm'])
def test_scalar_loss_fn_raises_value_error(name):
  with pytest.raises(ValueError, match=r'loss_fn.*\[B\]'):
    registry.get(name)(scalar_loss, mlp_params(), make_batch(), rng=jax.random.PRNGKey(0))


def test_scorpio_attack_rejects_bad_scheme_and_h():
  with pytest.raises(ValueError, match='scheme'):
    scorpio_lib.scorpio_attack(mlp_loss, mlp_params(), make_batch(), scheme='x')
  with pytest.raises(ValueError, match='h'):
    scorpio_lib.scorpio_attack(mlp_loss, mlp_params(), make_batch(), h=-1.0)
