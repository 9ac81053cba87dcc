"""L1-APGD (Croce & Hein 2021), L1 Square and L1 AutoAttack: the exact projection onto
L1 ball ∩ box against a generic solver, the sparse step against numpy, the minimal L1
flip of a linear model in a box (a greedy closed form), feasibility, and the ensemble."""

import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np
import pytest
from scipy import optimize

from robustjax import attacks
from robustjax import geometry
from robustjax.attacks._src import apgd as apgd_lib
from toy_models import linear, mlp  # pylint: disable=g-bad-import-order

from robustjax.attacks._src import autoattack as aa_lib
from robustjax.attacks._src import square as aa_sq

KEY = jax.random.PRNGKey(0)


def l1_norms(a, b):
  return np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).reshape(len(a), -1).sum(1)


def assert_feasible(x_adv, x, eps):
  x_adv = np.asarray(x_adv)
  assert np.all(np.isfinite(x_adv))
  assert np.all(l1_norms(x_adv, x) <= eps * (1 + 1e-5) + 1e-6), (l1_norms(x_adv, x), eps)
  assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


# ---------------------------------------------------------------------------------------
# The projection onto {‖z − x‖₁ <= eps} ∩ [0, 1]^d.


@pytest.mark.parametrize('seed', range(12))
def test_l1_box_projection_is_the_nearest_feasible_point(seed):
  rng = np.random.default_rng(seed)
  d = int(rng.integers(2, 10))
  x = rng.uniform(0, 1, (1, d))
  x[0, : d // 3] = rng.choice([0.0, 1.0], d // 3)  # some coordinates on the box's faces
  target = x + rng.normal(size=(1, d)) * rng.uniform(0.2, 2.0)
  eps = float(rng.uniform(0.05, 2.0))
  got = np.asarray(geometry.project_ball_and_box(
      jnp.asarray(target, jnp.float32), jnp.asarray(x, jnp.float32), eps, 1, (0.0, 1.0)),
      np.float64)[0]
  # A generic solver on the same convex problem (SLSQP, float64).
  ref = optimize.minimize(
      lambda z: np.sum((z - target[0]) ** 2), np.clip(x[0], 0, 1), method='SLSQP',
      jac=lambda z: 2 * (z - target[0]), bounds=[(0, 1)] * d,
      constraints=[{'type': 'ineq', 'fun': lambda z: eps - np.sum(np.abs(z - x[0]))}],
      options={'ftol': 1e-14, 'maxiter': 1000})
  assert_feasible(got[None], x, eps)
  ours, theirs = np.sum((got - target[0]) ** 2), ref.fun
  assert ours <= theirs + 1e-5 * (1 + theirs), (ours, theirs)
  # The problem is strictly convex, so the nearest point is unique: the solver's agrees.
  np.testing.assert_allclose(got, ref.x, atol=2e-3)


def test_l1_box_projection_keeps_feasible_points_and_matches_the_ball_without_a_box():
  x = jax.random.uniform(KEY, (6, 5))
  inside = geometry.project_ball_and_box(x + 0.01, x, 1.0, 1, (0.0, 1.1))
  np.testing.assert_allclose(inside, x + 0.01, atol=1e-6)
  far = x + 3.0 * jax.random.normal(jax.random.PRNGKey(1), x.shape)
  boxed = geometry.project_ball_and_box(far, x, 0.7, 1, (-100.0, 100.0))  # box inactive
  np.testing.assert_allclose(boxed, x + geometry.project(far - x, 0.7, 1), atol=1e-5)


def test_projecting_then_clipping_wastes_the_budget_that_the_exact_projection_spends():
  # Moving toward a corner the box cuts: clipping after the ball projection loses L1 mass.
  x = jnp.array([[0.9, 0.5, 0.5]])
  target = jnp.array([[3.0, 0.9, 0.5]])
  exact = geometry.project_ball_and_box(target, x, 0.5, 1, (0.0, 1.0))
  clipped = jnp.clip(x + geometry.project(target - x, 0.5, 1), 0.0, 1.0)
  assert float(l1_norms(exact, x)[0]) == pytest.approx(0.5, abs=1e-6)
  assert float(l1_norms(clipped, x)[0]) < 0.5 - 0.05
  assert float(jnp.sum((exact - target) ** 2)) < float(jnp.sum((clipped - target) ** 2))


# ---------------------------------------------------------------------------------------
# The sparse step and the schedules.


@pytest.mark.parametrize('seed', range(4))
def test_kth_largest_equals_the_sorted_value_ties_included(seed):
  rng = np.random.default_rng(seed)
  values = rng.choice([0.0, 0.5, 1e-30, 2.0, 3.5, 7.25], size=(16, 37)).astype(np.float32)
  values[:8] = rng.exponential(size=(8, 37))  # distinct values in half of the rows
  k = rng.integers(-2, 40, size=16)  # clipped to [1, d]
  got = np.asarray(geometry.kth_largest(jnp.asarray(values), jnp.asarray(k)))[:, 0]
  want = np.sort(values, axis=1)[np.arange(16), 37 - np.clip(k, 1, 37)]
  np.testing.assert_array_equal(got, want)


def test_sparse_direction_moves_the_top_share_by_sign():
  grad = jnp.array([[0.1, -3.0, 0.5, 2.0, -0.2, 0.0, 1.0, -0.7],
                    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
  topk = jnp.array([0.25, 0.5])
  got = np.asarray(apgd_lib.sparse_direction(grad, topk))
  want = np.zeros((2, 8))
  want[0, 1], want[0, 3] = -0.5, 0.5  # the 2 largest |g| of 8 (rank floor(0.75 * 8) = 6)
  want[1] = 1.0 / 8  # ties at the threshold all move
  np.testing.assert_allclose(got, want, atol=1e-7)
  assert np.allclose(np.abs(got).sum(1), 1.0)


def test_radius_schedule_and_l1_checks_follow_the_reference_settings():
  assert apgd_lib.radius_schedule(100) == ((3.0, 30), (2.0, 30), (1.0, 40))
  assert apgd_lib.radius_schedule(7) == ((3.0, 3), (2.0, 3), (1.0, 1))
  assert apgd_lib.radius_schedule(2) == ((1.0, 2),)
  checks, _ = apgd_lib._schedule(100, 1.0)
  assert [k + 1 for k, c in enumerate(checks) if c] == list(range(4, 101, 4))
  assert all(apgd_lib._schedule(30, 1.0)[0])  # ⌊0.04 · 30⌋ = 1: every iteration


# ---------------------------------------------------------------------------------------
# Strength: the minimal L1 flip of a binary linear model in the box.


def minimal_l1_flip(params, x, y):
  """The least L1 change in [0, 1]^d that makes some other class's logit reach z_y.

  Per other class j, reducing the linear margin z_y − z_j under an L1 budget and a box
  is a fractional knapsack: move the coordinates by decreasing |v_i| (v = w_y − w_j) as
  far as the box allows. The answer is the cheapest j (inf where no j can be reached).
  """
  w, b = (np.asarray(a, np.float64) for a in params)
  flat = np.asarray(x, np.float64).reshape(len(y), -1)
  out = []
  for xi, yi in zip(flat, np.asarray(y)):
    best = math.inf
    for j in range(w.shape[1]):
      if j == yi:
        continue
      v = w[:, yi] - w[:, j]
      margin = xi @ v + b[yi] - b[j]
      room = np.where(v > 0, xi, 1 - xi)
      cost = 0.0
      for i in np.argsort(-np.abs(v)):
        if margin <= 0 or v[i] == 0:
          break
        move = min(room[i], margin / abs(v[i]))
        cost += move
        margin -= move * abs(v[i])
      best = min(best, cost if margin <= 1e-12 else math.inf)
    out.append(best)
  return np.asarray(out)


@pytest.mark.parametrize('decreasing_eps', [False, True])
def test_apgd_l1_finds_the_minimal_flip_of_a_linear_model_in_a_box(decreasing_eps):
  kw, kx = jax.random.split(jax.random.PRNGKey(3))
  params = (jax.random.normal(kw, (24, 2)), jnp.zeros(2))
  x = jax.random.uniform(kx, (48, 24))
  y = jnp.argmax(linear(params, x), -1).astype(jnp.int32)
  need = minimal_l1_flip(params, x, y)
  eps = float(np.median(need[np.isfinite(need)]))
  x_adv = attacks.apgd(linear, params, (x, y), rng=KEY, eps=eps, p=1, steps=100,
                       decreasing_eps=decreasing_eps)
  assert_feasible(x_adv, x, eps)
  fooled = np.asarray(jnp.argmax(linear(params, x_adv), -1) != y)
  breakable, unbreakable = need < 0.95 * eps, need > eps
  assert breakable.sum() >= 12 and unbreakable.sum() >= 12
  assert np.all(fooled[breakable]), need[breakable & ~fooled]
  assert not np.any(fooled[unbreakable])  # the oracle's side: impossible within eps


def test_decreasing_radius_run_equals_the_official_schedule_on_a_tanh_network(monkeypatch):
  """autopgd_base's decr_eps_pgd (AutoAttack's L1 use_largereps: 3ε, 2ε, ε for 30, 30, 40
  iterations, each stage from the last one's best point) on a PyTorch port of the MLP,
  handed the same Gaussian start: the same fooled set, losses and points."""
  torch = pytest.importorskip('torch')
  autopgd_base = pytest.importorskip('pyautoattack.autopgd_base')
  k1, k2, kx = jax.random.split(jax.random.PRNGKey(5), 3)
  params = ((jax.random.normal(k1, (16, 12)) / 2.0, jnp.zeros(12)),
            (2.0 * jax.random.normal(k2, (12, 5)), jnp.zeros(5)))
  x = jax.random.uniform(kx, (64, 16))
  x = x.at[:, :4].set(jnp.round(x[:, :4]))  # inputs on the box's faces too
  y = jnp.argmax(mlp(params, x), -1).astype(jnp.int32)
  eps, keys = 0.6, apgd_lib.example_keys(KEY, 64)
  noise = jax.vmap(lambda k: jax.random.normal(k, (16,)))(keys)  # robustjax's L1 start
  monkeypatch.setattr(autopgd_base.torch, 'randn_like', lambda v: torch.tensor(
      np.asarray(noise)))
  (w1, b1), (w2, b2) = [(torch.tensor(np.asarray(w)), torch.tensor(np.asarray(b)))
                        for w, b in params]
  model = lambda v: torch.tanh(v @ w1 + b1) @ w2 + b2
  official = autopgd_base.APGDAttack(model, n_iter=100, norm='L1', eps=eps, loss='ce',
                                     device='cpu')
  x_t, y_t = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y)).long()
  official.init_hyperparam(x_t)
  best, acc, loss, adv = (v.detach().numpy() for v in official.decr_eps_pgd(
      x_t, y_t, [3 * eps, 2 * eps, eps], [30, 30, 40]))
  assert apgd_lib.radius_schedule(100) == ((3.0, 30), (2.0, 30), (1.0, 40))
  x_adv, fooled, ours_loss = map(np.asarray, apgd_lib.run(
      params, x, y, keys, jnp.full((64,), eps), jnp.zeros([], jnp.int32), (0.0, 1.0),
      steps=100, decreasing_eps=True, logits_fn=mlp, p=1.0, loss='ce', unroll=1,
      eot_samples=1, stochastic=False))
  assert 0 < fooled.sum() < 64
  np.testing.assert_array_equal(fooled, ~acc.astype(bool))
  np.testing.assert_allclose(ours_loss, loss, atol=1e-4)
  np.testing.assert_allclose(x_adv[fooled], adv[fooled], atol=1e-4)
  np.testing.assert_allclose(x_adv[~fooled], best[~fooled], atol=1e-4)
  assert_feasible(x_adv, x, eps)


def test_apgd_l1_jit_eager_four_devices_and_no_box_agree():
  assert len(jax.devices()) == 4
  k1, k2, kx = jax.random.split(jax.random.PRNGKey(9), 3)
  params = ((jax.random.normal(k1, (6, 8)) / 2.0, jnp.zeros(8)),
            (2.0 * jax.random.normal(k2, (8, 5)), jnp.zeros(5)))
  x = jax.random.uniform(kx, (8, 6))
  y = jnp.argmax(mlp(params, x), -1).astype(jnp.int32)
  run = lambda prm, xx, yy, key: attacks.apgd_targeted(
      mlp, prm, (xx, yy), rng=key, eps=0.5, p=1, steps=10, num_targets=2,
      decreasing_eps=True)
  eager = run(params, x, y, KEY)
  jitted = jax.jit(run)(params, x, y, KEY)
  shard = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), PartitionSpec('data'))
  sharded = run(params, jax.device_put(x, shard), jax.device_put(y, shard), KEY)
  np.testing.assert_allclose(jitted, eager, atol=1e-6)
  np.testing.assert_allclose(sharded, eager, atol=1e-6)
  free = attacks.apgd(mlp, params, (x, y), rng=KEY, eps=0.5, p=1, steps=10, bounds=None)
  assert np.all(l1_norms(free, x) <= 0.5 * (1 + 1e-5))


# ---------------------------------------------------------------------------------------
# L1 AutoAttack.


def test_l1_autoattack_breaks_exactly_the_breakable_points_of_a_linear_model():
  kw, kx = jax.random.split(jax.random.PRNGKey(7))
  params = (0.5 * jax.random.normal(kw, (64, 10)), jnp.zeros(10))
  x = jax.random.uniform(kx, (32, 8, 8, 1))
  y = jnp.argmax(linear(params, x), -1).astype(jnp.int32)
  need = minimal_l1_flip(params, x, y)
  eps = float(np.median(need))
  result = attacks.autoattack(linear, params, (x, y), rng=KEY, eps=eps, p=1)
  assert result.attack_names == ('apgd-ce', 'apgd-t', 'fab-t', 'square')
  assert_feasible(result.inputs, x, eps)
  robust = np.asarray(result.robust)
  np.testing.assert_array_equal(
      robust, np.asarray(jnp.argmax(linear(params, result.inputs), -1) == y))
  clear = np.abs(need - eps) > 0.05 * eps
  assert clear.sum() >= 24
  np.testing.assert_array_equal(robust[clear], need[clear] > eps)
  settings = aa_lib.ensemble_settings('standard', 1)
  assert settings['apgd-ce']['restarts'] == 5 and settings['apgd-ce']['decreasing_eps']
  assert settings['apgd-t']['num_targets'] == 5 and settings['apgd-t']['decreasing_eps']
  assert not aa_lib.ensemble_settings('standard', 2.0)['apgd-ce']['decreasing_eps']


# ---------------------------------------------------------------------------------------
# L1 Square.


def test_l1_square_bump_is_a_unit_l1_pair_of_opposite_halves():
  grid = aa_sq._Grid(9, 9, 1, (9, 9, 1), 1.0, 'margin', True)
  rows, cols = aa_sq._coords(grid, jnp.array([2]), jnp.array([1]))
  bump = np.asarray(aa_sq._bump(grid, rows, cols, 5, 5, jnp.array([False])))[0]
  window = bump[2:7, 1:6]
  assert np.abs(bump).sum() == pytest.approx(1.0, abs=1e-6)
  assert np.count_nonzero(bump) == np.count_nonzero(window)  # nothing outside the window
  top, bottom = window[:2], window[2:]  # halves of 2 and 3 rows, + then −
  assert np.all(top > 0) and np.all(bottom < 0)
  assert np.abs(top).sum() == pytest.approx(0.5, abs=1e-6)
  # 1/(k+1)^4 weights: the centre of the 3x5 half over its corner (distances 0 and 2).
  k = np.arange(1, 4)
  assert bottom[1, 2] / bottom[0, 0] == pytest.approx(
      np.sum(1 / k[:3] ** 4) / np.sum(1 / k[2:3] ** 4), rel=1e-5)


def test_l1_square_stays_feasible_and_breaks_the_easy_points_of_a_linear_model():
  kw, kx = jax.random.split(jax.random.PRNGKey(11))
  params = (0.5 * jax.random.normal(kw, (64, 10)), jnp.zeros(10))
  x = jax.random.uniform(kx, (32, 8, 8, 1))
  x = x.at[:, :2].set(jnp.round(x[:, :2]))  # rows on the box's faces
  y = jnp.argmax(linear(params, x), -1).astype(jnp.int32)
  need = minimal_l1_flip(params, x, y)
  eps = float(np.median(need))
  x_adv = attacks.square(linear, params, (x, y), rng=KEY, eps=eps, p=1, queries=1000)
  assert_feasible(x_adv, x, eps)
  fooled = np.asarray(jnp.argmax(linear(params, x_adv), -1) != y)
  assert not np.any(fooled[need > eps])
  easy = need < 0.5 * eps
  assert easy.sum() >= 4 and np.all(fooled[easy])
