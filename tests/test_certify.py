"""Curvature bounds of smooth MLPs, the CRT penalty and the CRC certificate."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.attacks import loop
from robustjax.certify import bounds
import functools
import warnings

from robustjax.certify.crc import NotCertifiedWarning
from robustjax.certify.crc import certified_accuracy
from robustjax.certify.crc import crc
from robustjax.certify.crc import conv_margin_curvature_bound
from robustjax.certify.crc import crc_conv
from robustjax.certify.crc import crc_mlp
from robustjax.certify.crc import crc_mlp_local
from robustjax.regularizers import registry
from robustjax.regularizers.crt import crt
from robustjax.regularizers.crt import curvature_attack
from robustjax.regularizers.crt import pair_margin

ACTIVATIONS = ('softplus', 'sigmoid', 'tanh')


def _layers(key, widths, scale=1.0):
  keys = jax.random.split(key, len(widths) - 1)
  return [(scale * jax.random.normal(k, (a, b)) / math.sqrt(a), 0.3 * jnp.ones(b))
          for k, a, b in zip(keys, widths[:-1], widths[1:])]


def _margin_hessians(layers, x, y, t, activation):
  """Dense input Hessians [N, d, d] of z_y − z_t by jax.hessian, per point."""
  def margin(xi, yi, ti):
    z = bounds.mlp_apply(layers, xi[None], activation=activation)[0]
    return z[yi] - z[ti]
  return jax.jit(jax.vmap(jax.hessian(margin)))(x, y, t)


def test_power_iteration_spectral_norm_matches_svd_and_its_gradient():
  value_and_grad = jax.jit(jax.value_and_grad(lambda a: bounds.spectral_norm(a, num_iters=50)))
  for shape in [(5, 7), (7, 3)]:
    w = jax.random.normal(jax.random.PRNGKey(sum(shape)), shape)
    power, g_power = value_and_grad(w)
    np.testing.assert_allclose(power, jnp.linalg.norm(w, 2), rtol=1e-4)
    g_svd = jax.grad(lambda a: bounds.spectral_norm(a, method='svd'))(w)
    np.testing.assert_allclose(g_power, g_svd, atol=1e-3)


@pytest.mark.parametrize('activation', ACTIVATIONS)
def test_margin_curvature_bound_dominates_the_true_hessian(activation):  # both modes
  # Two hidden layers: exercises both the sign-aware last-layer term and the
  # elementwise bound of the earlier layer (one hidden layer: the 2-D tests below).
  layers = _layers(jax.random.PRNGKey(4), (3, 5, 4, 4), scale=2.0)
  n = 64
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (n, 3))
  y = jax.random.randint(jax.random.PRNGKey(2), (n,), 0, 4)
  t = (y + jax.random.randint(jax.random.PRNGKey(3), (n,), 1, 4)) % 4
  bound = bounds.margin_curvature_bound(layers, y, t, activation=activation,
                                        method='svd')
  gram = bounds.margin_curvature_bound(layers, y, t, activation=activation,
                                       method='svd', mode='gram')
  eig = jnp.linalg.eigvalsh(_margin_hessians(layers, x, y, t, activation))
  for b in (bound, gram):
    assert np.all(eig.min(-1) >= b.lower - 1e-5)
    assert np.all(eig.max(-1) <= b.upper + 1e-5)
    assert np.all(b.lower <= 0) and np.all(b.upper >= 0)
  assert np.all(gram.upper <= bound.upper + 1e-5) and np.all(gram.lower >= bound.lower - 1e-5)
  assert np.any(gram.upper < 0.9 * bound.upper)  # and strictly tighter somewhere
  gram_power = bounds.margin_curvature_bound(layers, y, t, activation=activation,
                                             num_iters=50, mode='gram')
  np.testing.assert_allclose(gram_power.upper, gram.upper, rtol=2e-2)
  assert np.all(gram_power.upper <= gram.upper + 1e-4)  # power iteration: from below
  grads = jax.vmap(jax.grad(lambda xi, yi, ti: pair_margin(
      bounds.mlp_apply(layers, xi[None], activation=activation), yi[None], ti[None])[0]))(
          x, y, t)
  assert np.all(jnp.linalg.norm(grads, axis=-1) <= bound.lipschitz + 1e-5)
  power = bounds.margin_curvature_bound(layers, y, t, activation=activation,
                                        num_iters=50)
  np.testing.assert_allclose(power.upper, bound.upper, rtol=1e-3)


def test_curvature_table_holds_against_the_hessian_for_every_pair():
  layers = _layers(jax.random.PRNGKey(7), (3, 6, 4), scale=2.0)
  table = bounds.margin_curvature_table(layers, activation='softplus', pairs_per_step=3)
  n = 48
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(8), (n, 3))
  y = jnp.arange(n) % 4
  t = (y + 1 + (jnp.arange(n) // 4) % 3) % 4  # every ordered pair y != t
  eig = jnp.linalg.eigvalsh(_margin_hessians(layers, x, y, t, 'softplus'))
  pair = table(y, t)  # softplus'' >= 0: each pair's bounds differ from its swap's
  assert pair.certified
  assert np.all(eig.min(-1) >= pair.lower - 1e-5) and np.all(eig.max(-1) <= pair.upper + 1e-5)
  # z_t − z_y = −(z_y − z_t): its Hessian bounds are the pair's, negated and swapped.
  np.testing.assert_allclose(table.upper, -table.lower.T, atol=1e-6)
  np.testing.assert_allclose(np.diag(table.upper), 0.0, atol=1e-7)
  direct = bounds.margin_curvature_bound(layers, y, t, activation='softplus', method='svd',
                                         mode='gram')
  np.testing.assert_allclose(pair.upper, direct.upper, rtol=1e-5)
  np.testing.assert_allclose(pair.lower, direct.lower, rtol=1e-5)


@pytest.mark.parametrize('activation', ACTIVATIONS)
def test_bound_is_tight_for_one_unit(activation):
  # f(x) = c σ(w x): f'' = c w² σ''(w x), whose extremes are c w² inf/sup σ''.
  layers = [(jnp.array([[1.7]]), jnp.zeros(1)), (jnp.array([[0.0, 2.0]]), jnp.zeros(2))]
  x = jnp.linspace(-6, 6, 4001)[:, None]
  y, t = jnp.ones(4001, jnp.int32), jnp.zeros(4001, jnp.int32)
  bound = bounds.margin_curvature_bound(layers, y[:1], t[:1], activation=activation,
                                        method='svd')
  h = _margin_hessians(layers, x, y, t, activation)[:, 0, 0]
  assert float(h.max()) == pytest.approx(float(bound.upper[0]), rel=2e-3)
  assert float(h.min()) == pytest.approx(float(bound.lower[0]), rel=2e-3, abs=1e-3)


@pytest.mark.parametrize('activation', ACTIVATIONS)
def test_bound_covers_the_earlier_layer_term_of_a_deep_chain(activation):
  # f = c σ(w2 σ(w1 x)): with a small w2 the earlier layer's c σ'(z2) w2 σ''(z1) w1² term
  # dominates f'', so a bound that dropped it would be violated on this grid.
  layers = [(jnp.array([[2.0 if activation != 'sigmoid' else 8.0]]), jnp.zeros(1)),
            (jnp.array([[0.5]]), jnp.zeros(1)), (jnp.array([[0.0, 1.0]]), jnp.zeros(2))]
  x = jnp.linspace(-4, 4, 4001)[:, None]
  y, t = jnp.ones(4001, jnp.int32), jnp.zeros(4001, jnp.int32)
  h = _margin_hessians(layers, x, y, t, activation)[:, 0, 0]
  for mode in bounds.MODES:
    bound = bounds.margin_curvature_bound(layers, y[:1], t[:1], activation=activation,
                                          method='svd', mode=mode)
    assert float(h.max()) <= float(bound.upper[0]) + 1e-6
    assert float(h.min()) >= float(bound.lower[0]) - 1e-6
    assert float(jnp.abs(h).max()) >= 0.5 * float(jnp.maximum(bound.upper, -bound.lower)[0])


def test_mlp_layers_reads_flax_and_list_layouts():
  w = [jnp.full((2, 2), float(i)) for i in range(12)]
  flax = {'params': {f'Dense_{i}': {'kernel': w[i], 'bias': jnp.zeros(2)}
                     for i in range(12)}}
  got = bounds.mlp_layers(flax)
  assert [float(k[0, 0]) for k, _ in got] == list(range(12))  # numeric, not lexicographic
  got = bounds.mlp_layers([{'kernel': w[1], 'bias': jnp.ones(2)}, (w[2], jnp.zeros(2))])
  assert float(got[0][0][0, 0]) == 1.0 and float(got[1][0][0, 0]) == 2.0
  with pytest.raises(ValueError, match='Dense'):
    bounds.mlp_layers({'conv': {}})


def _logits_fn(activation):
  return lambda params, x: bounds.mlp_apply(params, x, activation=activation)


def test_curvature_attack_is_exact_for_a_linear_model():
  layers = _layers(jax.random.PRNGKey(4), (2, 3))
  x = jnp.array([[0.3, -0.2], [1.0, 0.5]])
  y, t = jnp.array([0, 1]), jnp.array([2, 0])
  bound = bounds.margin_curvature_bound(layers, y, t, activation='tanh')
  x_adv = curvature_attack(_logits_fn('tanh'), layers, x, y, t, lower=bound.lower,
                           upper=bound.upper, lipschitz=bound.lipschitz, eps=0.4,
                           bounds=None)
  w = layers[0][0]
  c = (w[:, y] - w[:, t]).T
  np.testing.assert_allclose(x_adv, x - 0.4 * c / jnp.linalg.norm(c, axis=1, keepdims=True),
                             atol=1e-4)


@pytest.mark.parametrize('activation', ['softplus', 'tanh'])
def test_curvature_attack_beats_pgd_on_the_margin(activation):
  # Where the dual is tight (x* on the sphere) it is the global minimiser over the ball:
  # f(x*) + η/2 ε² <= f(x) + η/2 ||x − x0||² for all x. With a loose bound (tanh here) the
  # dual may stop inside the ball; it still lowers the margin.
  layers = _layers(jax.random.PRNGKey(5), (3, 8, 3), scale=0.7)
  logits_fn = _logits_fn(activation)
  x = jax.random.normal(jax.random.PRNGKey(6), (6, 3))
  y = jnp.argmax(logits_fn(layers, x), -1)
  z = logits_fn(layers, x)
  t = jnp.argmax(jnp.where(jax.nn.one_hot(y, 3, dtype=bool), -jnp.inf, z), -1)
  bound = bounds.margin_curvature_bound(layers, y, t, activation=activation)
  x_adv = jax.jit(lambda: curvature_attack(
      logits_fn, layers, x, y, t, lower=bound.lower, upper=bound.upper,
      lipschitz=bound.lipschitz, eps=0.5, bounds=None))()
  margin = lambda xx: pair_margin(logits_fn(layers, xx), y, t)
  pgd, _ = loop.maximize(lambda xx: -margin(xx), x, rng=jax.random.PRNGKey(0), eps=0.5,
                         p=2.0, steps=40, step_size=0.05, init='zero', bounds=None,
                         unroll=1)
  dist = jnp.linalg.norm(x_adv - x, axis=1)
  assert np.all(dist <= 0.5 + 1e-5)
  active = np.asarray(dist >= 0.5 - 1e-4)
  assert np.all(np.asarray(margin(x_adv) <= margin(pgd) + 1e-4)[active])
  assert np.all(margin(x_adv) < margin(x))
  if activation == 'softplus':  # sign-aware bound: tight for every example here
    assert active.all()


def _tiny_mlp(scale=1.0):
  return _layers(jax.random.PRNGKey(7), (4, 5, 3), scale=scale)


def test_crt_objective_is_ce_at_attack_points_plus_gamma_k():
  layers = _tiny_mlp()
  logits_fn = _logits_fn('softplus')
  x = jax.random.uniform(jax.random.PRNGKey(8), (5, 2, 2))
  y = jnp.array([0, 1, 2, 0, 1])
  values, aux = crt(logits_fn, layers, (x, y), rng=None, gamma=0.5, eps=0.0)
  ce = -jax.nn.log_softmax(logits_fn(layers, x))[jnp.arange(5), y]
  np.testing.assert_allclose(values, ce + 0.5 * aux['curvature'], rtol=1e-5)
  exact = bounds.margin_curvature_bound(layers, y, aux['targets'], activation='softplus',
                                        method='svd')
  np.testing.assert_allclose(aux['curvature'], jnp.maximum(exact.upper, -exact.lower),
                             rtol=1e-3)
  values, aux = jax.jit(lambda: crt(logits_fn, layers, (x, y), rng=None, gamma=0.5,
                                    eps=0.3, bisection_steps=8, inner_steps=3))()
  assert np.all(jnp.linalg.norm(jnp.reshape(aux['x_adv'] - x, (5, -1)), axis=1) <= 0.3 + 1e-5)
  np.testing.assert_allclose(values, aux['ce'] + 0.5 * aux['curvature'], rtol=1e-6)
  assert np.all(aux['ce'] >= ce - 1e-4)  # the attack lowers the margin


@pytest.mark.parametrize('scale,flat', [(1e3, False), (1.0, True)])
def test_crt_finite_and_differentiable_saturated_or_flat(scale, flat):
  layers = _tiny_mlp(scale)
  if flat:
    layers = [(jnp.zeros_like(layers[0][0]), layers[0][1])] + layers[1:]
  x = jax.random.uniform(jax.random.PRNGKey(9), (3, 4))
  y = jnp.array([0, 1, 2])
  fn = lambda p: crt(_logits_fn('tanh'), p, (x, y), rng=None, activation='tanh', eps=0.3,
                     bisection_steps=4, inner_steps=2)[0]
  values, grads = jax.jit(lambda p: (lambda v, vjp: (v, vjp(jnp.ones_like(v))[0]))(
      *jax.vjp(fn, p)))(layers)
  assert np.all(np.isfinite(values))
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  if not flat:
    assert float(jnp.abs(grads[0][0]).sum()) > 0  # γK reaches the first layer


def test_crt_registry_and_bad_input():
  assert registry.get('crt').takes == 'logits_fn'
  x, y = jnp.zeros((2, 4)), jnp.array([0, 1])
  for kwargs, name in [({'gamma': -1.0}, 'gamma'), ({'eps': -0.1}, 'eps'),
                       ({'activation': 'relu'}, 'activation'), ({'mode': 'x'}, 'mode'),
                       ({'num_iters': 0}, 'num_iters')]:
    with pytest.raises(ValueError, match=name):
      crt(_logits_fn('tanh'), _tiny_mlp(), (x, y), rng=None, **kwargs)


def test_crc_equals_the_exact_distance_for_a_linear_model():
  layers = _layers(jax.random.PRNGKey(10), (3, 4))
  x = jax.random.normal(jax.random.PRNGKey(11), (6, 3))
  w, b = layers[0]
  z = x @ w + b
  y = jnp.argmax(z, -1)
  res = crc_mlp(layers, x, y, activation='tanh', bisection_steps=40)
  dist = []
  for t in range(4):
    d = (z[jnp.arange(6), y] - z[:, t]) / jnp.linalg.norm(w[:, y] - w[:, t][:, None], axis=0)
    dist.append(jnp.where(y == t, jnp.inf, d))
  np.testing.assert_allclose(res.radius, jnp.min(jnp.stack(dist), 0), rtol=1e-4)
  assert np.all(res.exact)
  # The same through the generic entry point with a scalar curvature bound of 0.
  res0 = crc(_logits_fn('tanh'), layers, x, y, curvature=0.0, bisection_steps=40)
  np.testing.assert_allclose(res0.radius, res.radius, rtol=1e-4)


def _brute_force_distance(layers, activation, x, y, max_radius=4.0, num_radii=1201):
  """Smallest radius on a polar grid (2-D inputs) where the predicted class changes.

  An upper bound of the true distance (every grid hit is a misclassified point).
  """
  angles = jnp.linspace(0.0, 2 * jnp.pi, 720, endpoint=False)
  dirs = jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
  radii = jnp.linspace(0.0, max_radius, num_radii)
  pts = x[:, None, None, :] + radii[None, :, None, None] * dirs[None, None]
  z = bounds.mlp_apply(layers, jnp.reshape(pts, (-1, 2)), activation=activation)
  wrong = jnp.reshape(jnp.argmax(z, -1), pts.shape[:3]) != y[:, None, None]
  return jnp.min(jnp.where(wrong, radii[None, :, None], jnp.inf), axis=(1, 2))


@pytest.mark.parametrize('activation', ACTIVATIONS)
def test_crc_is_sound_against_brute_force_on_a_2d_mlp(activation):
  layers = _layers(jax.random.PRNGKey(12), (2, 8, 3), scale=2.0)
  x = jax.random.uniform(jax.random.PRNGKey(13), (6, 2), minval=-1.0, maxval=1.0)
  y = jnp.argmax(bounds.mlp_apply(layers, x, activation=activation), -1)
  labels = y.at[:2].set((y[:2] + 1) % 3)  # two misclassified points: radius 0
  res = crc_mlp(layers, x, labels, activation=activation, bisection_steps=20)
  brute = _brute_force_distance(layers, activation, x[2:], y[2:])
  assert np.all(res.radius[2:] <= brute + 1e-6), (res.radius, brute)
  assert np.all(res.radius[2:] > 0)
  np.testing.assert_array_equal(res.radius[:2], 0.0)


def test_crc_is_exact_where_primal_equals_dual():
  layers = _layers(jax.random.PRNGKey(3), (2, 8, 3))
  layers[1] = (3.0 * layers[1][0], layers[1][1])
  x = jax.random.uniform(jax.random.PRNGKey(15), (8, 2), minval=-2.0, maxval=2.0)
  y = jnp.argmax(bounds.mlp_apply(layers, x, activation='softplus'), -1)
  res = crc_mlp(layers, x, y, activation='softplus')
  brute = _brute_force_distance(layers, 'softplus', x, y, max_radius=3.0)
  assert np.all(res.radius <= brute + 1e-6)
  exact = np.asarray(res.exact)
  assert exact.any()
  # Where primal = dual the radius is the distance to the boundary (grid resolution).
  np.testing.assert_allclose(res.radius[exact], brute[exact], atol=0.01)
  assert np.all(res.radius[~exact] < brute[~exact])
  with pytest.warns(NotCertifiedWarning):
    runner = crc_mlp(layers, x, y, activation='softplus', targets='runner_up')
  assert np.all(runner.radius >= res.radius - 1e-6)
  # A single scalar bound K (the loosest pair's) through the generic entry point.
  v = jnp.arange(3)
  pairs = bounds.margin_curvature_bound(layers, jnp.repeat(v, 3), jnp.tile(v, 3),
                                        activation='softplus', method='svd')
  k = float(jnp.max(jnp.maximum(pairs.upper, -pairs.lower)))
  scalar = crc(_logits_fn('softplus'), layers, x, y, curvature=k)
  assert np.all(scalar.radius <= res.radius + 1e-5)
  per_example = crc(_logits_fn('softplus'), layers, x, y,
                    curvature=(jnp.full(8, -k), jnp.full(8, k)))
  np.testing.assert_allclose(per_example.radius, scalar.radius, rtol=1e-5)
  assert np.all(scalar.radius <= brute + 1e-6) and np.all(scalar.radius > 0)
  # A crude inner solve stays sound: the strong-convexity correction absorbs its error.
  rough = crc_mlp(layers, x, y, activation="softplus", bisection_steps=6, newton_steps=1,
                  cg_steps=1)
  assert np.all(rough.radius <= brute + 1e-6)


def test_crc_bad_input():
  layers = _tiny_mlp()
  x, y = jnp.zeros((2, 4)), jnp.array([0, 1])
  for kwargs, name in [({'targets': 'some'}, 'targets'),
                       ({'bisection_steps': 0}, 'bisection_steps'),
                       ({'curvature': -1.0}, 'curvature')]:
    kwargs = {'curvature': 1.0, **kwargs}
    with pytest.raises(ValueError, match=name):
      crc(_logits_fn('tanh'), layers, x, y, **kwargs)


def test_modes_that_are_not_certificates_are_flagged_and_never_counted():
  """Runner-up-only radii and power-iteration bounds: certified=False, a warning, and
  certified accuracy 0; the all-targets SVD certificate: certified, no warning."""
  layers = _layers(jax.random.PRNGKey(3), (2, 8, 3))
  x = jax.random.uniform(jax.random.PRNGKey(15), (6, 2), minval=-2.0, maxval=2.0)
  y = jnp.argmax(bounds.mlp_apply(layers, x, activation='softplus'), -1)
  steps = dict(bisection_steps=8, newton_steps=2, cg_steps=4)
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # a certificate raises no warning
    sound = crc_mlp(layers, x, y, activation='softplus', **steps)
  assert np.all(sound.certified) and np.all(sound.radius > 0)
  radii = jnp.array([0.0, float(jnp.median(sound.radius))])
  np.testing.assert_allclose(certified_accuracy(sound, radii),
                             [1.0, np.mean(np.asarray(sound.radius) > float(radii[1]))])
  with pytest.warns(NotCertifiedWarning, match='runner_up'):
    runner = crc_mlp(layers, x, y, activation='softplus', targets='runner_up', **steps)
  power_bound = functools.partial(bounds.margin_curvature_bound, layers,
                                  activation='softplus', method='power', num_iters=2)
  assert not power_bound(y, (y + 1) % 3).certified
  with pytest.warns(NotCertifiedWarning, match='power iteration'):
    power = crc(_logits_fn('softplus'), layers, x, y, curvature=power_bound, **steps)
  for result in (runner, power):
    assert not np.any(result.certified)
    assert np.all(result.radius > 0)  # radii are kept for research ...
    np.testing.assert_array_equal(certified_accuracy(result, radii), [0.0, 0.0])  # ... not counted


@pytest.mark.parametrize('activation', ['softplus', 'tanh'])
def test_local_derivative_ranges_contain_the_derivatives_on_the_interval(activation):
  l = jnp.linspace(-4.0, 3.0, 50)
  u = l + jnp.linspace(0.01, 5.0, 50)
  grid = l[:, None] + (u - l)[:, None] * jnp.linspace(0, 1, 801)[None]
  fn = bounds._ACTIVATION_FNS[activation]
  d1 = jax.vmap(jax.vmap(jax.grad(fn)))(grid)
  d2 = jax.vmap(jax.vmap(jax.grad(jax.grad(fn))))(grid)
  r = bounds.local_derivative_ranges(activation, l, u)
  assert np.all(np.abs(d1) <= r.d1[:, None]) and np.all(d2 >= r.d2_low[:, None])
  assert np.all(d2 <= r.d2_high[:, None])
  np.testing.assert_allclose(r.d2_high, d2.max(1), atol=1e-4)  # tight (grid max)
  np.testing.assert_allclose(r.d2_low, d2.min(1), atol=1e-4)
  g = bounds.ACTIVATION_CONSTANTS[activation]
  assert np.all(r.d2_high <= g.d2_high + 1e-5) and np.all(r.d2_low >= g.d2_low - 1e-5)


@pytest.mark.parametrize('activation', ['softplus', 'tanh'])
def test_local_crc_beats_global_and_stays_below_the_brute_force_distance(activation):
  layers = _layers(jax.random.PRNGKey(12), (2, 8, 3), scale=2.0)
  x = jax.random.uniform(jax.random.PRNGKey(13), (6, 2), minval=-1.0, maxval=1.0)
  y = jnp.argmax(bounds.mlp_apply(layers, x, activation=activation), -1)
  steps = dict(bisection_steps=20)
  glob = crc_mlp(layers, x, y, activation=activation, **steps)
  local = crc_mlp_local(layers, x, y, activation=activation, radius_steps=3, **steps)
  brute = _brute_force_distance(layers, activation, x, y)
  assert np.all(local.certified)
  assert np.all(local.radius >= glob.radius - 1e-7)
  # Where primal = dual the global radius is already the distance; elsewhere local helps.
  assert np.any(local.radius > 1.01 * glob.radius), (local.radius, glob.radius)
  assert np.all(local.radius <= brute + 1e-6), (local.radius, brute)


def _conv_tanh_net(key, channels=2):
  from robustjax.certify import bound_propagation as bp
  k = jax.random.split(key, 3)
  return (bp.conv(0.8 * jax.random.normal(k[0], (3, 3, 1, channels)),
                  0.2 * jax.random.normal(k[1], (channels,)), strides=(2, 2),
                  padding=((1, 1), (1, 1))),
          bp.activation('tanh'), bp.flatten(),
          bp.dense(jax.random.normal(k[2], (4 * channels, 3)), jnp.zeros(3)))


@pytest.mark.parametrize('mode', ['gram', 'norm'])
def test_conv_crc_hessian_bound_holds_against_the_dense_hessian(mode):
  from robustjax.certify import bound_propagation as bp
  net = _conv_tanh_net(jax.random.PRNGKey(3))
  n = 24
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(4), (n, 4, 4, 1))
  y = jax.random.randint(jax.random.PRNGKey(5), (n,), 0, 3)
  t = (y + jax.random.randint(jax.random.PRNGKey(6), (n,), 1, 3)) % 3
  bound = conv_margin_curvature_bound(net, y, t, (4, 4, 1), mode=mode)

  def margin(xi, yi, ti):
    z = bp.apply(net, xi[None])[0]
    return z[yi] - z[ti]

  hess = jax.vmap(jax.hessian(margin))(x, y, t).reshape(n, 16, 16)
  eig = jnp.linalg.eigvalsh(hess)
  assert np.all(eig[:, 0] >= bound.lower - 1e-5)
  assert np.all(eig[:, -1] <= bound.upper + 1e-5)
  if mode == 'gram':  # exact eigenvalues of P and N: never looser than the norm bound
    loose = conv_margin_curvature_bound(net, y, t, (4, 4, 1), mode='norm')
    assert np.all(bound.upper <= loose.upper + 1e-5)
    assert np.all(bound.lower >= loose.lower - 1e-5)
    assert np.mean(bound.upper) < np.mean(loose.upper)


def test_conv_crc_is_a_certificate_pgd_cannot_break():
  from robustjax import attacks
  from robustjax.certify import bound_propagation as bp
  net = _conv_tanh_net(jax.random.PRNGKey(7), channels=3)
  x = jax.random.uniform(jax.random.PRNGKey(8), (6, 4, 4, 1))
  y = jnp.argmax(bp.apply(net, x), -1)
  res = crc_conv(net, x, y, bisection_steps=16)
  assert np.all(res.certified) and np.all(res.radius > 0)
  jitted = jax.jit(lambda xs, ys: crc_conv(net, xs, ys, bisection_steps=16).radius)
  np.testing.assert_allclose(jitted(x, y), res.radius, rtol=1e-5)
  x_adv = attacks.pgd(lambda p, v: bp.apply(p, v), net, (x, y), rng=jax.random.PRNGKey(0),
                      eps=0.999 * res.radius, p=2.0, steps=50, objective='margin',
                      bounds=None, restarts=2)
  assert np.all(jnp.argmax(bp.apply(net, x_adv), -1) == y)
  with pytest.raises(ValueError, match='smooth activation'):
    crc_conv(net[:1] + (bp.activation('relu'),) + net[2:], x, y)


def test_a_ball_local_curvature_bound_claims_nothing_beyond_its_ball():
  """f is linear on B(0, 0.3) (curvature 0 there, the bound given) and bends down beyond
  t = 0.32: the boundary is 0.4675 away. With the bound taken as global, the dual
  radius (0.484) over-claims; restricted to the ball it is min(0.3, ...)."""
  from robustjax.certify.crc import pair_certificate

  def margin_fn(x):
    t = x[:, 0]
    return 1.0 - 2.0 * t - 3.0 * jnp.maximum(t - 0.32, 0.0) ** 2

  x0 = jnp.zeros((1, 2))
  kw = dict(bisection_steps=24, newton_steps=4, cg_steps=4, tol=1e-3)
  t = jnp.linspace(0.0, 3.0, 30001)
  true = float(t[jnp.argmax(margin_fn(jnp.stack([t, 0 * t], -1)) <= 0)])
  unsound, _, _ = pair_certificate(margin_fn, x0, jnp.zeros(1), **kw)
  assert float(unsound[0]) > true  # what the ball restriction prevents
  radius, _, _ = pair_certificate(margin_fn, x0, jnp.zeros(1), ball_radius=jnp.array([0.3]),
                                  **kw)
  assert 0.29 < float(radius[0]) <= 0.3 + 1e-6
