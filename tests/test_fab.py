"""FAB: the hyperplane-box projections against LP / active-set oracles, exact boundary
distances of linear models, the eps contract, determinism and argument checks."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

from robustjax import attacks
from robustjax.attacks._src import fab as fab_lib
from toy_models import linear, mlp  # pylint: disable=g-bad-import-order


INF = math.inf
STEPS = 30
DUAL = {1.0: INF, 2.0: 2, INF: 1}


# ----------------------------------------------------------------------------------------
# Projection onto {z : <w, z> = b} ∩ [0, 1]^n.


def _instances(seed, count=60, dim=5):
  """Random (t, w, b) rows: zeros in w, points on faces, some hyperplanes missing the box."""
  rng = np.random.default_rng(seed)
  t = rng.uniform(0, 1, (count, dim))
  w = rng.normal(size=(count, dim))
  w[: count // 6] = np.sign(w[: count // 6])  # ties: equal |w_i| (sign-like normals)
  w[rng.uniform(size=(count, dim)) < 0.2] = 0.0
  faces = rng.uniform(size=(count, dim)) < 0.15
  t[faces] = rng.integers(0, 2, faces.sum())
  inside = np.sum(w * rng.uniform(0, 1, (count, dim)), axis=1)  # hits the box
  far = np.sum(w * t, axis=1) + 4.0 * rng.normal(size=count)  # may miss it
  b = np.where(rng.uniform(size=count) < 0.75, inside, far)
  return t, w, b


def _project(t, w, b, p):
  d = fab_lib.project_hyperplane_box(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
                                     jnp.asarray(b, jnp.float32), p, (0.0, 1.0))
  return np.asarray(d, np.float64)


def _lp_min_norm(t, w, b, p):
  """min ‖d‖_p (p in {1, inf}) s.t. <w, t + d> = b, 0 <= t + d <= 1, by linprog; None if
  infeasible."""
  n = t.size
  box = [(-ti, 1.0 - ti) for ti in t]
  if p == 1:  # variables (d, u), |d_i| <= u_i, minimise Σ u
    cost = np.r_[np.zeros(n), np.ones(n)]
    a_ub = np.block([[np.eye(n), -np.eye(n)], [-np.eye(n), -np.eye(n)]])
    a_eq, bounds = np.r_[w, np.zeros(n)][None], box + [(0, None)] * n
  else:  # variables (d, s), |d_i| <= s, minimise s
    cost = np.r_[np.zeros(n), 1.0]
    a_ub = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
    a_eq, bounds = np.r_[w, 0.0][None], box + [(0, None)]
  res = optimize.linprog(cost, A_ub=a_ub, b_ub=np.zeros(2 * n), A_eq=a_eq,
                         b_eq=[b - w @ t], bounds=bounds, method='highs')
  return None if res.status == 2 else res.fun


def _l2_active_sets(t, w, b):
  """Nearest L2 point by enumerating which coordinates sit on a face (3^n active sets)."""
  n, c = t.size, b - w @ t
  best = None
  for assign in itertools.product((0, 1, 2), repeat=n):  # lower face, upper face, free
    free = np.array(assign) == 2
    d = np.where(np.array(assign) == 0, -t, 1.0 - t)
    rest, wf = c - w[~free] @ d[~free], w[free]
    if wf @ wf > 1e-12:
      d[free] = rest / (wf @ wf) * wf
    elif abs(rest) > 1e-9:
      continue
    else:
      d[free] = 0.0
    if np.all(t + d >= -1e-9) and np.all(t + d <= 1 + 1e-9):
      if best is None or d @ d < best @ best:
        best = d
  return best


def _corner(t, w, b):
  """The box corner nearest the hyperplane (where it misses the box); w = 0 stays."""
  up = np.sign(w) * np.sign(b - w @ t) > 0
  down = np.sign(w) * np.sign(b - w @ t) < 0
  return np.where(up, 1.0 - t, np.where(down, -t, 0.0))


@pytest.mark.parametrize('p', [1.0, INF])
def test_projection_matches_linprog(p):
  t, w, b = _instances(int(p == 1))
  d = _project(t, w, b, p)
  missed = 0
  for i in range(len(t)):
    optimum = _lp_min_norm(t[i], w[i], b[i], p)
    if optimum is None:
      missed += 1
      np.testing.assert_allclose(d[i], _corner(t[i], w[i], b[i]), atol=1e-6)
      continue
    np.testing.assert_allclose(w[i] @ (t[i] + d[i]), b[i], atol=2e-5)
    assert np.all(t[i] + d[i] >= -1e-6) and np.all(t[i] + d[i] <= 1 + 1e-6)
    np.testing.assert_allclose(np.linalg.norm(d[i], ord=p), optimum, rtol=1e-5, atol=1e-6)
  assert 0 < missed < len(t) // 2  # both regimes exercised


def test_projection_l2_matches_active_set_oracle():
  t, w, b = _instances(2, count=40, dim=4)
  d = _project(t, w, b, 2.0)
  missed = 0
  for i in range(len(t)):
    oracle = _l2_active_sets(t[i], w[i], b[i])
    if oracle is None:
      missed += 1
      oracle = _corner(t[i], w[i], b[i])
    np.testing.assert_allclose(d[i], oracle, atol=2e-5)
  assert 0 < missed < len(t) // 2


def test_projection_without_box_is_the_closed_form():
  t, w, b = _instances(3, count=8)
  c = b - np.sum(w * t, axis=1)
  for p, closed in ((2.0, w * (c / np.sum(w * w, 1))[:, None]),
                    (INF, np.sign(w) * (c / np.sum(np.abs(w), 1))[:, None])):
    d = fab_lib.project_hyperplane_box(jnp.asarray(t, jnp.float32),
                                       jnp.asarray(w, jnp.float32),
                                       jnp.asarray(b, jnp.float32), p, None)
    np.testing.assert_allclose(np.asarray(d), closed, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------
# The attack on linear models: the minimal distance to the decision boundary is exact.


def _linear_problem(classes=4, dim=6, batch=12):
  kw, kx, kb = jax.random.split(jax.random.PRNGKey(0), 3)
  # Columns of unequal norms: the nearest boundary is not always the top other logit's.
  w = jax.random.normal(kw, (dim, classes)) * jnp.array([1.0, 3.0, 0.3, 1.0])
  b = -0.5 * jnp.sum(w, axis=0) + 0.05 * jax.random.normal(kb, (classes,))
  x = 0.5 + 0.05 * jax.random.normal(kx, (batch, dim))  # far from the faces of the box
  y = jnp.argmax(linear((w, b), x), axis=1).astype(jnp.int32)
  return (w, b), (x, y)


def _class_distances(params, batch, p):
  """``[B, K]``: (z_y − z_k) / ‖w_y − w_k‖_q, the distance to the boundary with class k
  (box inactive); inf for k = y."""
  w, b = (np.asarray(a, np.float64) for a in params)
  x, y = (np.asarray(a) for a in batch)
  z = x.astype(np.float64) @ w + b
  out = np.full(z.shape, np.inf)
  for i, k in itertools.product(range(len(x)), range(w.shape[1])):
    if k != y[i]:
      out[i, k] = (z[i, y[i]] - z[i, k]) / np.linalg.norm(w[:, y[i]] - w[:, k], ord=DUAL[p])
  return out


def _exact_distance(params, batch, p):
  return _class_distances(params, batch, p).min(axis=1)


@pytest.mark.parametrize('p,targeted', [(2.0, False), (2.0, True), (INF, False),
                                        (INF, True), (1.0, True)])
def test_linear_model_distance_is_exact(p, targeted):
  params, batch = _linear_problem()
  distances = _class_distances(params, batch, p)
  exact = distances.min(axis=1)
  top_other = np.argmax(np.where(np.isinf(distances), -np.inf,
                                 np.asarray(linear(params, batch[0]))), axis=1)
  assert np.any(distances.argmin(axis=1) != top_other)
  x_adv, norms = attacks.fab_min_norm(linear, params, batch, rng=jax.random.PRNGKey(1),
                                      eps=1.0, p=p, steps=STEPS, targeted=targeted)
  norms, x_adv = np.asarray(norms, np.float64), np.asarray(x_adv, np.float64)
  assert np.all(norms >= exact * (1 - 1e-4))  # nothing beats the true boundary
  np.testing.assert_allclose(norms, exact, rtol=1e-2)
  x = np.asarray(batch[0], np.float64)
  np.testing.assert_allclose(np.linalg.norm(x_adv - x, ord=p, axis=1), norms, rtol=1e-5)
  logits = x_adv @ np.asarray(params[0]) + np.asarray(params[1])
  assert np.all(np.argmax(logits, 1) != np.asarray(batch[1]))


def test_targets_are_the_top_other_logits():
  params, batch = _linear_problem()
  distances = _class_distances(params, batch, 2.0)
  logits = np.where(np.isinf(distances), -np.inf, np.asarray(linear(params, batch[0])))
  order = np.argsort(-logits, axis=1)  # top other logit first
  rows = np.arange(len(order))
  # One target: the boundary with the top other logit (the exact test covers the minimum
  # over all K − 1 targets).
  _, norms = attacks.fab_min_norm(linear, params, batch, rng=jax.random.PRNGKey(1),
                                  eps=1.0, p=2.0, steps=STEPS, targeted=True, num_targets=1)
  expected = distances[rows, order[:, 0]]
  assert np.any(expected > distances.min(axis=1) * 1.05)  # not the nearest boundary
  np.testing.assert_allclose(np.asarray(norms), expected, rtol=1e-2)


def test_box_constrained_distance_matches_linprog():
  # Binary linear model next to a corner of the box: the nearest boundary point of the
  # box is further than the unconstrained one, and FAB must find the constrained one.
  rng = np.random.default_rng(4)
  dim, batch = 5, 8
  v = rng.normal(size=dim)
  x = np.clip(rng.uniform(0.0, 0.08, (batch, dim)), 0, 1)
  x[:, np.argmax(np.abs(v))] = 0.02
  offset = np.median(x @ v) + 0.3 * np.abs(v).sum() * np.sign(v.sum())
  params = (jnp.asarray(np.stack([np.zeros(dim), v], 1), jnp.float32),
            jnp.asarray([0.0, -offset], jnp.float32))
  labels = (x @ v - offset > 0).astype(np.int32)
  batch_ = (jnp.asarray(x, jnp.float32), jnp.asarray(labels))
  _, norms = attacks.fab_min_norm(linear, params, batch_, rng=jax.random.PRNGKey(0),
                                  eps=1.0, p=INF, steps=STEPS)
  oracle = np.array([_lp_min_norm(xi, v, offset, INF) for xi in x], np.float64)
  unconstrained = np.abs(x @ v - offset) / np.abs(v).sum()
  assert np.all(oracle > unconstrained * 1.05)  # the box is active
  np.testing.assert_allclose(np.asarray(norms), oracle, rtol=1e-2)


def parabola(params, x):
  """Binary model in 2-D: class 1 above the parabola x₂ = h + a (x₁ − c)²."""
  a, c, h = params
  g = x[:, 1] - (h + a * (x[:, 0] - c) ** 2)
  return jnp.stack([jnp.zeros_like(g), g], axis=1)


PARABOLA = (3.0, 0.45, 0.55)


def _parabola_batch(count=12):
  rng = np.random.default_rng(0)
  x = np.stack([rng.uniform(0.1, 0.9, count), rng.uniform(0.05, 0.3, count)], 1)
  return jnp.asarray(x, jnp.float32), jnp.zeros(count, jnp.int32)


@pytest.mark.parametrize('p', [2.0, INF])
def test_curved_boundary_distance_matches_dense_search(p):
  a, c, h = PARABOLA
  x, y = _parabola_batch()
  u = np.linspace(0.0, 1.0, 200001)
  v = h + a * (u - c) ** 2
  u, v = u[v <= 1], v[v <= 1]
  oracle = np.array([np.min(np.linalg.norm(np.stack([u - xi[0], v - xi[1]], 1), ord=p,
                                           axis=1)) for xi in np.asarray(x, np.float64)])
  _, norms = attacks.fab_min_norm(parabola, PARABOLA, (x, y), rng=jax.random.PRNGKey(0),
                                  eps=1.0, p=p, steps=STEPS)
  assert np.all(np.asarray(norms) >= oracle * (1 - 1e-4))
  np.testing.assert_allclose(np.asarray(norms), oracle, rtol=2e-2)


def test_iterates_follow_the_fab_update():
  """Ten steps against a float64 re-implementation of the update, written from the paper:
  projections by active-set search, α = min(‖δ‖ / (‖δ‖ + ‖δ_orig‖), α_max), η, β."""
  a, c, h = PARABOLA
  alpha_max, eta, beta, steps = 0.3, 1.2, 0.8, 10
  x, y = _parabola_batch(6)
  _, norms = attacks.fab_min_norm(parabola, PARABOLA, (x, y), rng=jax.random.PRNGKey(0),
                                  eps=1.0, p=2.0, steps=steps, alpha_max=alpha_max,
                                  eta=eta, beta=beta)
  expected = []
  for x0 in np.asarray(x, np.float64):
    point, best = x0.copy(), np.inf
    for _ in range(steps):
      f = point[1] - (h + a * (point[0] - c) ** 2)
      grad = np.array([-2 * a * (point[0] - c), 1.0])
      offset = grad @ point - f
      d_here = _l2_active_sets(point, grad, offset)
      d_orig = _l2_active_sets(x0, grad, offset)
      n_here = max(np.linalg.norm(d_here), 1e-8)
      n_orig = max(np.linalg.norm(d_orig), 1e-8)
      alpha = min(n_here / (n_here + n_orig), alpha_max)
      new = np.clip((1 - alpha) * (point + eta * d_here) + alpha * (x0 + eta * d_orig), 0, 1)
      if new[1] - (h + a * (new[0] - c) ** 2) > 0:
        best = min(best, np.linalg.norm(new - x0))
        point = x0 + beta * (new - x0)
      else:
        point = new
    expected.append(best)
  assert np.all(np.isfinite(expected))
  np.testing.assert_allclose(np.asarray(norms), expected, rtol=1e-4)


# ----------------------------------------------------------------------------------------
# The eps contract (AutoAttack's 'fab' and 'fab-t'), determinism, restarts, bad input.


def test_points_beyond_eps_come_back_clean_and_the_rest_stay_in_ball_and_box():
  params, (x, y) = _linear_problem()
  y = y.at[0].set((y[0] + 1) % 4)  # misclassified when clean: returned as x, norm 0
  exact = _exact_distance(params, (x, y), 2.0)
  exact[0] = 0.0
  eps = float(np.median(exact[1:]))
  key = jax.random.PRNGKey(1)
  _, norms = attacks.fab_min_norm(linear, params, (x, y), rng=key, eps=eps, p=2.0,
                                  steps=STEPS, targeted=True)
  assert float(norms[0]) == 0.0
  for attack in (attacks.fab, attacks.fab_targeted):
    x_adv = np.asarray(attack(linear, params, (x, y), rng=key, eps=eps, p=2.0,
                              steps=STEPS), np.float64)
    dist = np.linalg.norm(x_adv - np.asarray(x, np.float64), axis=1)
    assert np.all(dist <= eps * (1 + 1e-5)) and np.all((x_adv >= 0) & (x_adv <= 1))
    far = exact > eps * 1.001
    near = exact < eps / 1.02
    assert far.any() and near[1:].any()
    np.testing.assert_array_equal(x_adv[far], np.asarray(x)[far])
    np.testing.assert_array_equal(x_adv[0], np.asarray(x)[0])
    predicted = np.argmax(x_adv @ np.asarray(params[0]), axis=1)
    assert np.all(predicted[near] != np.asarray(y)[near])
  # Per-example radii: eps_i = 0 keeps x_i; a generous eps_i returns the minimal point.
  per_example = np.where(np.arange(len(exact)) % 2 == 0, 0.0, 10.0).astype(np.float32)
  x_adv = np.asarray(attacks.fab_targeted(linear, params, (x, y), rng=key,
                                          eps=jnp.asarray(per_example), p=2.0, steps=STEPS))
  np.testing.assert_array_equal(x_adv[::2], np.asarray(x)[::2])
  np.testing.assert_allclose(np.linalg.norm(x_adv[1::2] - np.asarray(x)[1::2], axis=1),
                             exact[1::2], rtol=1e-2)


def test_restarts_stay_at_or_above_the_true_minimal_distance():
  # Parabola: the dense-search minimal L∞ distance is the oracle. Every restart's point is
  # a real boundary point, so the best over restarts is never below it, and the random
  # restarts (perturbed starts) end within 2% of it.
  a, c, h = PARABOLA
  x, y = _parabola_batch()
  u = np.linspace(0.0, 1.0, 200001)
  v = h + a * (u - c) ** 2
  u, v = u[v <= 1], v[v <= 1]
  oracle = np.array([np.min(np.max(np.abs(np.stack([u - xi[0], v - xi[1]], 1)), 1))
                     for xi in np.asarray(x, np.float64)])
  x_min, norms = attacks.fab_min_norm(parabola, PARABOLA, (x, y), rng=jax.random.PRNGKey(1),
                                      eps=1.0, p=INF, steps=STEPS, restarts=3)
  norms = np.asarray(norms)
  assert np.all(norms >= oracle * (1 - 1e-4))
  np.testing.assert_allclose(norms, oracle, rtol=2e-2)
  assert np.all(np.argmax(parabola(PARABOLA, x_min), 1) != np.asarray(y))


def test_mlp_restarts_are_deterministic_and_driven_by_the_rng():
  k1, k2, kx = jax.random.split(jax.random.PRNGKey(5), 3)
  params = ((jax.random.normal(k1, (8, 16)) / np.sqrt(8), jnp.zeros(16)),
            (jax.random.normal(k2, (16, 3)) * 2.0, jnp.zeros(3)))
  x = jax.random.uniform(kx, (10, 8))
  y = jnp.argmax(mlp(params, x), axis=1).astype(jnp.int32)
  run = lambda restarts, seed: attacks.fab_min_norm(
      mlp, params, (x, y), rng=jax.random.PRNGKey(seed), eps=0.5, p=INF, steps=STEPS,
      restarts=restarts)
  x3, n3 = run(3, 0)
  x3b, n3b = run(3, 0)
  _, n3c = run(3, 7)
  np.testing.assert_array_equal(np.asarray(x3), np.asarray(x3b))
  np.testing.assert_array_equal(np.asarray(n3), np.asarray(n3b))
  assert np.any(np.asarray(n3c) != np.asarray(n3))  # the rng drives the restarts
  found = np.isfinite(np.asarray(n3))
  assert found.mean() > 0.5
  assert np.all(np.argmax(mlp(params, x3), 1)[found] != np.asarray(y)[found])
  assert np.all((np.asarray(x3) >= 0) & (np.asarray(x3) <= 1))
  np.testing.assert_allclose(np.abs(np.asarray(x3 - x)).max(1)[found],
                             np.asarray(n3)[found], rtol=1e-6)


@pytest.mark.parametrize('kwargs,name', [
    (dict(p=3.0), 'p must be one of 1, 2, inf'),
    (dict(p=0.5), 'p must'),
    (dict(eps=-0.1), 'eps'),
    (dict(steps=-1), 'steps'),
    (dict(restarts=0), 'restarts'),
    (dict(num_targets=0), 'num_targets'),
    (dict(alpha_max=1.5), 'alpha_max'),
    (dict(beta=-0.1), 'beta'),
    (dict(eta=0.5), 'eta'),
    (dict(bounds=(1.0, 0.0)), 'bounds'),
    (dict(x=3.0), 'inputs must lie in bounds'),
    (dict(y=jnp.array([0, 1, 9])), 'labels'),
])
def test_bad_input_raises_before_compiling(kwargs, name, monkeypatch):
  params = (jnp.ones((4, 3)), jnp.zeros(3))
  x = jnp.full((3, 4), 0.5) * kwargs.pop('x', 1.0)
  y = kwargs.pop('y', jnp.array([0, 1, 2]))
  compiled = []
  for core in ('_fab_init', '_fab_start', '_fab_steps'):
    monkeypatch.setattr(fab_lib, core, lambda *a, **k: compiled.append(1))
  options = {**dict(rng=jax.random.PRNGKey(0), eps=0.1), **kwargs}
  for attack in (attacks.fab, attacks.fab_targeted):
    if 'num_targets' in options and attack is attacks.fab:
      continue
    with pytest.raises(ValueError, match=name):
      attack(linear, params, (x, y), **options)
  assert not compiled
