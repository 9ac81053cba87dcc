"""Tests of robustjax.geometry against closed forms, brute force and exact optimality."""

import itertools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from robustjax import geometry

INF = math.inf
P_VALUES = (1.0, 1.5, 2.0, 3.0, 7.0, INF)
EXACT_PROJECTION_P = (1.0, 2.0, INF)
SETTINGS = hypothesis.settings(max_examples=12, deadline=None, derandomize=True)


def np_norm(x, p):
  """Reference per-example norm with numpy on the flattened example."""
  flat = np.reshape(np.asarray(x, np.float64), (np.shape(x)[0], -1))
  return np.linalg.norm(flat, ord=p, axis=1)


def q_of(p):
  return INF if p == 1 else (1.0 if p == INF else p / (p - 1))


def sample_sphere(rng, n, d, p, eps=1.0):
  """n points with ||x||_p = eps in R^d (not uniform on the sphere; enough for a sup)."""
  x = rng.standard_normal((n, d)) * rng.exponential(size=(n, d)) ** 2
  return eps * x / np_norm(x, p)[:, None]


# --- dual exponent and norm ---------------------------------------------------------


@pytest.mark.parametrize('p,q', [(1.0, INF), (2.0, 2.0), (INF, 1.0), (3.0, 1.5), (1.5, 3.0)])
def test_dual_exponent_pairs(p, q):
  assert geometry.dual_exponent(p) == pytest.approx(q)
  assert geometry.dual_exponent(q) == pytest.approx(p)


@pytest.mark.parametrize('p', P_VALUES)
def test_norm_matches_numpy_over_all_feature_axes(p):
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 3))
  np.testing.assert_allclose(geometry.norm(x, p), np_norm(x, p), rtol=1e-5)


def test_norm_accepts_jnp_inf_and_flat_batches():
  x = jnp.array([-3.0, 2.0])  # [B] with no feature axes: |x| per example
  for p in P_VALUES:
    np.testing.assert_allclose(geometry.norm(x, p), [3.0, 2.0], rtol=1e-6)
  assert float(geometry.norm(jnp.ones((1, 4)), jnp.inf)[0]) == 1.0


@pytest.mark.parametrize('p', (1.5, 2.0, 3.0, 7.0))
@pytest.mark.parametrize('scale', (1e-30, 1e-20, 1e20, 1e30))
def test_norm_is_homogeneous_without_under_or_overflow(p, scale):
  x = jnp.array([[1.0, -2.0, 0.5, 0.0]], jnp.float32)
  expected = np_norm(x, p) * scale
  got = geometry.norm(x * scale, p)
  assert np.all(np.isfinite(got)) and np.all(got > 0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_norm_large_and_near_one_p_tend_to_linf_and_l1():
  x = jnp.array([[1.0, -2.0, 3.0], [0.1, 0.0, -0.2]])
  np.testing.assert_allclose(geometry.norm(x, 1e6), [3.0, 0.2], rtol=1e-5)
  np.testing.assert_allclose(geometry.norm(x, 1e4), np_norm(x, INF), rtol=1e-3)
  np.testing.assert_allclose(geometry.norm(x, 1.0 + 1e-6), np_norm(x, 1), rtol=1e-4)


@pytest.mark.parametrize('p', (1.5, 2.0, 3.0, 7.0))
def test_norm_gradient_matches_closed_form(p):
  x = jnp.array([[0.3, -1.2, 0.7], [2.0, 0.1, -0.4]])
  grad = jax.grad(lambda v: jnp.sum(geometry.norm(v, p)))(x)
  n = np_norm(x, p)[:, None]
  expected = np.sign(x) * np.abs(x) ** (p - 1) / n ** (p - 1)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('p', P_VALUES)
def test_norm_and_normalize_are_finite_with_finite_gradient_at_zero(p):
  x = jnp.zeros((2, 3)).at[1].set(jnp.array([1.0, -2.0, 0.5]))  # one zero example
  n_grad = jax.grad(lambda v: jnp.sum(geometry.norm(v, p)))(x)
  u = geometry.normalize(x, p)
  u_grad = jax.grad(lambda v: jnp.sum(jnp.sin(geometry.normalize(v, p))))(x)
  assert np.all(np.isfinite(n_grad)) and np.all(np.isfinite(u_grad))
  np.testing.assert_array_equal(u[0], 0.0)
  np.testing.assert_allclose(geometry.norm(u, p), [0.0, 1.0], rtol=1e-5)


def test_normalize_keeps_tiny_nonzero_vectors():
  x = jnp.full((1, 4), 1e-25, jnp.float32)
  for p in (2.0, 3.0):
    np.testing.assert_allclose(geometry.norm(geometry.normalize(x, p), p), [1.0], rtol=1e-5)


# --- the linear maximisation oracle -------------------------------------------------


@pytest.mark.parametrize('p', P_VALUES)
def test_lmo_dual_norm_identity_and_radius(p):
  g = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 3))
  eps = jnp.array([0.1, 0.5, 1.0, 2.0, 3.0])
  s = geometry.lmo(g, eps, p)
  inner = jnp.sum(s * g, axis=(1, 2))
  np.testing.assert_allclose(inner, eps * np_norm(g, q_of(p)), rtol=1e-4)
  np.testing.assert_allclose(geometry.norm(s, p), eps, rtol=1e-4)


@SETTINGS
@hypothesis.given(
    p=st.sampled_from(P_VALUES) | st.floats(1.05, 20.0),
    eps=st.floats(0.01, 10.0),
    d=st.sampled_from([1, 5]),
    seed=st.integers(0, 2**16))
def test_lmo_dual_norm_identity_property(p, eps, d, seed):
  g = jax.random.normal(jax.random.PRNGKey(seed), (3, d))
  s = geometry.lmo(g, eps, p)
  np.testing.assert_allclose(jnp.sum(s * g, axis=1), eps * np_norm(g, q_of(p)), rtol=2e-4)
  assert np.all(np_norm(s, p) <= eps * (1 + 1e-4))


@pytest.mark.parametrize('p', (1.0, INF))
def test_lmo_attains_the_best_vertex(p):
  d, eps = 3, 0.7
  if p == 1:
    vertices = np.concatenate([np.eye(d), -np.eye(d)]) * eps
  else:
    vertices = np.array(list(itertools.product((-eps, eps), repeat=d)))
  g = np.array(jax.random.normal(jax.random.PRNGKey(2), (16, d)))
  s = np.asarray(geometry.lmo(jnp.asarray(g), eps, p))
  lmo_value = np.sum(s * g, axis=1)
  best_vertex = np.max(g @ vertices.T, axis=1)  # a linear max over a polytope is a vertex
  np.testing.assert_allclose(lmo_value, best_vertex, rtol=1e-5)


@pytest.mark.parametrize('p', (1.5, 2.0, 3.0, 7.0))
def test_lmo_beats_every_sampled_point_of_the_sphere(p):
  rng = np.random.default_rng(0)
  d, eps = 3, 1.3
  g = rng.standard_normal((8, d))
  s = np.asarray(geometry.lmo(jnp.asarray(g, jnp.float32), eps, p))
  lmo_value = np.sum(s * g, axis=1)
  points = sample_sphere(rng, 20000, d, p, eps)
  sampled_best = np.max(g @ points.T, axis=1)
  assert np.all(lmo_value >= sampled_best - 1e-5 * np.abs(sampled_best))
  np.testing.assert_allclose(lmo_value, sampled_best, rtol=2e-2)  # samples get close


@pytest.mark.parametrize('p', P_VALUES)
def test_lmo_of_zero_is_zero(p):
  g = jnp.zeros((2, 3)).at[1, 0].set(1.0)
  s = geometry.lmo(g, 1.0, p)
  np.testing.assert_array_equal(s[0], 0.0)
  np.testing.assert_allclose(s[1], [1.0, 0.0, 0.0], atol=1e-6)


def test_steepest_ascent_has_unit_norm():
  g = jax.random.normal(jax.random.PRNGKey(3), (4, 5))
  for p in P_VALUES:
    np.testing.assert_allclose(geometry.norm(geometry.steepest_ascent(g, p), p), 1.0,
                               rtol=1e-5)


# --- projections --------------------------------------------------------------------


def np_project_l1(x, eps, iters=200):
  """Reference L1 projection: bisection on the soft-threshold level, per example."""
  out = []
  for row, e in zip(np.asarray(x, np.float64), np.broadcast_to(eps, len(x))):
    a = np.abs(row)
    if a.sum() <= e:
      out.append(row)
      continue
    lo, hi = 0.0, a.max()
    for _ in range(iters):
      mid = 0.5 * (lo + hi)
      lo, hi = (mid, hi) if np.maximum(a - mid, 0).sum() > e else (lo, mid)
    out.append(np.sign(row) * np.maximum(a - hi, 0))
  return np.stack(out)


def np_project(x, eps, p):
  x = np.asarray(x, np.float64)
  e = np.reshape(np.broadcast_to(eps, len(x)), (-1, 1))
  if p == INF:
    return np.clip(x, -e, e)
  if p == 2:
    return x * np.minimum(1.0, e / np.maximum(np_norm(x, 2)[:, None], 1e-30))
  return np_project_l1(x, eps)


@pytest.mark.parametrize('p', EXACT_PROJECTION_P)
def test_projection_matches_reference(p):
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(4), (6, 7))
  eps = jnp.array([0.0, 0.1, 0.5, 1.0, 3.0, 100.0])  # includes zero and "already inside"
  got = geometry.project(x, eps, p)
  np.testing.assert_allclose(got, np_project(x, np.asarray(eps), p), atol=1e-5)


@pytest.mark.parametrize('p', EXACT_PROJECTION_P)
def test_projection_is_nearest_among_random_feasible_points(p):
  rng = np.random.default_rng(1)
  x = jnp.asarray(3.0 * rng.standard_normal((4, 3)), jnp.float32)
  eps = 1.0
  proj = np.asarray(geometry.project(x, eps, p), np.float64)
  best = np.linalg.norm(np.asarray(x) - proj, axis=1)
  for p_sample in (1.0, 2.0, INF):  # feasible points of several shapes, scaled into the ball
    y = sample_sphere(rng, 5000, 3, p_sample)
    y = y / np.maximum(np_norm(y, p), 1.0)[:, None] * rng.uniform(size=(5000, 1))
    dists = np.linalg.norm(np.asarray(x)[:, None, :] - y[None], axis=-1)
    assert np.all(dists.min(axis=1) >= best - 1e-5)


@SETTINGS
@hypothesis.given(
    p=st.sampled_from(EXACT_PROJECTION_P),
    eps=st.floats(0.0, 5.0),
    shape=st.sampled_from([(3, 1), (2, 2, 3)]),
    scale=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**16))
def test_projection_optimality_condition(p, eps, shape, scale, seed):
  """P(x) is the projection iff it is feasible and <x - P, y - P> <= 0 for all y in ball.

  The sup over the ball of <x - P, y> is eps ||x - P||_q, which makes this exact.
  """
  x = scale * jax.random.normal(jax.random.PRNGKey(seed), shape, jnp.float32)
  proj = geometry.project(x, eps, p)
  r = np.asarray(x - proj, np.float64)
  axes = tuple(range(1, len(shape)))
  assert np.all(np_norm(proj, p) <= eps * (1 + 1e-5) + 1e-6)
  slack = np.sum(r * np.asarray(proj, np.float64), axis=axes) - eps * np_norm(r, q_of(p))
  assert np.all(slack >= -1e-4 * (1 + scale) ** 2)
  np.testing.assert_allclose(geometry.project(proj, eps, p), proj, atol=1e-6)  # idempotent


@pytest.mark.parametrize('p', (1.5, 3.0, 7.0))
def test_projection_for_other_p_is_feasible_and_idempotent(p):
  x = 3.0 * jax.random.normal(jax.random.PRNGKey(5), (4, 6))
  proj = geometry.project(x, 0.5, p)
  assert np.all(np_norm(proj, p) <= 0.5 * (1 + 1e-5))
  np.testing.assert_allclose(geometry.project(proj, 0.5, p), proj, rtol=1e-5)
  inside = 0.01 * x
  np.testing.assert_allclose(geometry.project(inside, 0.5, p), inside)


def test_projection_under_jit_and_grad_is_finite():
  x = jnp.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
  for p in P_VALUES:
    y = jax.jit(lambda v: geometry.project(v, 1.0, p))(x)
    grad = jax.grad(lambda v: jnp.sum(geometry.project(v, 1.0, p) ** 2))(x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))


# --- random initialisation ----------------------------------------------------------


def rejection_reference(rng, n, d, p):
  """Uniform samples of the unit Lp ball: uniform in the cube, keep those inside."""
  out = []
  while sum(len(o) for o in out) < n:
    y = rng.uniform(-1, 1, size=(4 * n, d))
    out.append(y[np_norm(y, p) <= 1.0])
  return np.concatenate(out)[:n]


@pytest.mark.parametrize('p', (1.0, 1.5, 2.0, INF))
def test_random_ball_is_uniform_in_volume(p):
  n, d, eps = 20000, 3, 0.5
  x = np.asarray(geometry.random_ball(jax.random.PRNGKey(6), (n, d), eps, p), np.float64)
  radius = np_norm(x, p) / eps
  assert np.all(radius <= 1.0 + 1e-6)
  # The radius of a uniform point of a d-dimensional ball has CDF r^d, mean d/(d+1).
  assert np.mean(radius) == pytest.approx(d / (d + 1), abs=0.01)
  assert stats.kstest(radius ** d, 'uniform').pvalue > 1e-3
  # Beyond the radius: a coordinate's marginal matches rejection sampling from the cube.
  reference = rejection_reference(np.random.default_rng(7), n, d, p)
  assert stats.ks_2samp(x[:, 0] / eps, reference[:, 0]).pvalue > 1e-3
  assert stats.ks_2samp(np.abs(x).max(axis=1) / eps,
                        np.abs(reference).max(axis=1)).pvalue > 1e-3


@pytest.mark.parametrize('p', (1.0, 2.0, 3.0, INF))
def test_random_ball_shapes_per_example_eps_and_determinism(p):
  eps = jnp.array([0.0, 0.1, 2.0])
  key = jax.random.PRNGKey(8)
  x = geometry.random_ball(key, (3, 2, 4), eps, p)
  assert x.shape == (3, 2, 4) and x.dtype == jnp.float32
  assert np.all(np_norm(x, p) <= np.asarray(eps) * (1 + 1e-5))
  np.testing.assert_array_equal(x[0], 0.0)
  np.testing.assert_array_equal(x, geometry.random_ball(key, (3, 2, 4), eps, p))


# --- box and ball-and-box -----------------------------------------------------------


def test_clip_to_box():
  x = jnp.array([[-0.5, 0.3, 1.7]])
  np.testing.assert_allclose(geometry.clip_to_box(x, (0.0, 1.0)), [[0.0, 0.3, 1.0]])
  np.testing.assert_array_equal(geometry.clip_to_box(x, None), x)


@pytest.mark.parametrize('p', P_VALUES)
def test_project_ball_and_box_is_feasible(p):
  key_x, key_a = jax.random.split(jax.random.PRNGKey(9))
  x = jax.random.uniform(key_x, (8, 5))
  x_adv = x + jax.random.normal(key_a, (8, 5))
  out = geometry.project_ball_and_box(x_adv, x, 0.3, p, (0.0, 1.0))
  assert np.all(np_norm(out - x, p) <= 0.3 * (1 + 1e-5))
  assert np.all((out >= 0.0) & (out <= 1.0))


def test_project_ball_and_box_is_exact_for_linf():
  key_x, key_a = jax.random.split(jax.random.PRNGKey(10))
  x = jax.random.uniform(key_x, (8, 5))
  x_adv = x + jax.random.normal(key_a, (8, 5))
  out = geometry.project_ball_and_box(x_adv, x, 0.2, INF, (0.0, 1.0))
  # ball ∩ box is itself a box, whose projection is a coordinate-wise clip.
  expected = np.clip(x_adv, np.maximum(x - 0.2, 0.0), np.minimum(x + 0.2, 1.0))
  np.testing.assert_allclose(out, expected, atol=1e-7)


# --- bad input ----------------------------------------------------------------------

G = jnp.ones((2, 3))
BAD_P = (0.5, 0.0, -1.0, float('nan'), 'two', None)


@pytest.mark.parametrize('p', BAD_P)
@pytest.mark.parametrize('fn', [
    lambda p: geometry.norm(G, p),
    lambda p: geometry.normalize(G, p),
    lambda p: geometry.dual_exponent(p),
    lambda p: geometry.lmo(G, 1.0, p),
    lambda p: geometry.project(G, 1.0, p),
    lambda p: geometry.random_ball(jax.random.PRNGKey(0), (2, 3), 1.0, p),
])
def test_bad_p_raises_naming_p(fn, p):
  with pytest.raises(ValueError, match=r'p must'):
    fn(p)


@pytest.mark.parametrize('eps', (-0.1, float('nan'), jnp.array([0.1, -0.1]),
                                 jnp.ones(3), jnp.ones((2, 1))))
@pytest.mark.parametrize('fn', [
    lambda eps: geometry.lmo(G, eps, 2.0),
    lambda eps: geometry.project(G, eps, 2.0),
    lambda eps: geometry.random_ball(jax.random.PRNGKey(0), (2, 3), eps, 2.0),
    lambda eps: geometry.project_ball_and_box(G, G, eps, 2.0, (0.0, 1.0)),
])
def test_bad_eps_raises_naming_eps(fn, eps):
  with pytest.raises(ValueError, match=r'eps must'):
    fn(eps)


def test_integer_inputs_and_mismatched_shapes_raise():
  with pytest.raises(ValueError, match='g must be a floating'):
    geometry.lmo(jnp.ones((2, 3), jnp.int32), 1.0, 2.0)
  with pytest.raises(ValueError, match='delta must be a floating'):
    geometry.project(jnp.ones((2, 3), jnp.int32), 1.0, 2.0)
  with pytest.raises(ValueError, match='x_adv must have the shape of x'):
    geometry.project_ball_and_box(jnp.ones((2, 4)), G, 0.1, 2.0, (0.0, 1.0))
  with pytest.raises(ValueError, match='dtype must be floating'):
    geometry.random_ball(jax.random.PRNGKey(0), (2, 3), 1.0, 2.0, dtype=jnp.int32)
