"""Attacks: feasibility, analytic worst cases on linear models, restarts, sharding, errors."""

import functools
import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from robustjax import attacks
from robustjax import geometry
from robustjax import losses
from robustjax.attacks import objectives
from toy_models import linear, mlp  # pylint: disable=g-bad-import-order

INF = math.inf
PS = (1.0, 1.5, 2.0, 3.0, INF)
SETTINGS = hypothesis.settings(max_examples=8, deadline=None, derandomize=True)


def linear_params(key, dim, classes):
  kw, kb = jax.random.split(key)
  return jax.random.normal(kw, (dim, classes)), 0.1 * jax.random.normal(kb, (classes,))


def mlp_params(key, dim, classes, hidden=8):
  k1, k2 = jax.random.split(key)
  return ((jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim), jnp.zeros(hidden)),
          (jax.random.normal(k2, (hidden, classes)) * 2.0, jnp.zeros(classes)))


def make_batch(key, shape, classes):
  kx, ky = jax.random.split(key)
  return (jax.random.uniform(kx, shape),
          jax.random.randint(ky, shape[:1], 0, classes).astype(jnp.int32))


def assert_feasible(x_adv, x, eps, p, bounds=(0.0, 1.0)):
  x_adv, x = np.asarray(x_adv), np.asarray(x)
  assert x_adv.shape == x.shape
  assert np.all(np.isfinite(x_adv))
  flat = (x_adv - x).reshape(x.shape[0], -1).astype(np.float64)
  norms = np.linalg.norm(flat, ord=p, axis=1)  # numpy oracle, not geometry.norm
  assert np.all(norms <= eps * (1 + 1e-5) + 1e-6), (norms, eps)
  if bounds is not None:
    assert np.all(x_adv >= bounds[0]) and np.all(x_adv <= bounds[1])


SHAPES = st.sampled_from([(1, 4), (3, 5), (2, 2, 3), (2, 2, 2, 1)])


@SETTINGS
@hypothesis.given(shape=SHAPES, p=st.sampled_from(PS), eps=st.floats(0.0, 0.6),
                  steps=st.integers(0, 2), restarts=st.integers(1, 2),
                  objective=st.sampled_from(['ce', 'um', 'tl', 'tm']),
                  step_rule=st.sampled_from(['steepest', 'sign', 'adam']),
                  seed=st.integers(0, 2**16))
def test_pgd_stays_in_ball_and_box(shape, p, eps, steps, restarts, objective, step_rule,
                                   seed):
  key = jax.random.PRNGKey(seed)
  dim = int(np.prod(shape[1:]))
  params = mlp_params(key, dim, 3)
  batch = make_batch(jax.random.fold_in(key, 1), shape, 3)
  x_adv = attacks.pgd(mlp, params, batch, rng=key, eps=eps, p=p, steps=steps,
                      restarts=restarts, objective=objective, step_rule=step_rule)
  assert_feasible(x_adv, batch[0], eps, p)


@SETTINGS
@hypothesis.given(shape=SHAPES, p=st.sampled_from(PS), eps=st.floats(0.0, 0.6),
                  objective=st.sampled_from(['ce', 'margin', 'targeted_ce']),
                  seed=st.integers(0, 2**16))
def test_fgsm_stays_in_ball_and_box(shape, p, eps, objective, seed):
  key = jax.random.PRNGKey(seed)
  params = mlp_params(key, int(np.prod(shape[1:])), 3)
  batch = make_batch(jax.random.fold_in(key, 1), shape, 3)
  x_adv = attacks.fgsm(mlp, params, batch, rng=key, eps=eps, p=p, objective=objective)
  assert_feasible(x_adv, batch[0], eps, p)


@hypothesis.settings(max_examples=3, deadline=None, derandomize=True)
@hypothesis.given(shape=SHAPES, p=st.sampled_from(PS), eps=st.floats(0.0, 0.6),
                  seed=st.integers(0, 2**16))
def test_multi_targeted_stays_in_ball_and_box(shape, p, eps, seed):
  key = jax.random.PRNGKey(seed)
  params = mlp_params(key, int(np.prod(shape[1:])), 3)
  batch = make_batch(jax.random.fold_in(key, 1), shape, 3)
  x_adv = attacks.multi_targeted(mlp, params, batch, rng=key, eps=eps, p=p, steps=1)
  assert_feasible(x_adv, batch[0], eps, p)


def test_maximize_array_init_is_projected_start_and_validated():
  x = jnp.array([[0.5, 0.5], [0.05, 0.9]])
  start = jnp.array([[0.5, 0.9], [-0.05, 0.92]])  # row 0 leaves the ball, row 1 the box
  objective = lambda xx: -jnp.sum((xx - start) ** 2, axis=1)
  x0, _ = attacks.maximize(objective, x, rng=jax.random.PRNGKey(0), eps=0.2, p=2.0,
                           steps=0, init=start)
  np.testing.assert_allclose(x0, [[0.5, 0.7], [0.0, 0.92]], atol=1e-6)
  # From that start, ascent on -||x' - start||^2 stays at the projection (a fixed point).
  x3, _ = attacks.maximize(objective, x, rng=jax.random.PRNGKey(0), eps=0.2, p=2.0,
                           steps=3, step_size=0.01, init=start, keep_best=False)
  np.testing.assert_allclose(x3, x0, atol=1e-6)
  assert_feasible(x3, x, 0.2, 2.0)
  for bad in (start[:1], jnp.zeros((2, 3)), 'gaussian'):
    with pytest.raises(ValueError, match='init'):
      attacks.maximize(objective, x, rng=jax.random.PRNGKey(0), eps=0.2, p=2.0, steps=1,
                       init=bad)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0, INF])
@pytest.mark.parametrize('objective', ['ce', 'margin'])
def test_pgd_reaches_linear_binary_worst_case(p, objective):
  # Binary linear model: both objectives increase in u.x with u = w_other - w_y, so the
  # worst case over the Lp ball (no box) is x + lmo(u, eps, p) = x + eps * sign(u) for
  # Linf, eps * u / ||u||_2 for L2.
  key = jax.random.PRNGKey(0)
  params = linear_params(key, 6, 2)
  x, y = make_batch(jax.random.PRNGKey(1), (4, 6), 2)
  eps = 0.3
  x_adv = attacks.pgd(linear, params, (x, y), rng=key, eps=eps, p=p, steps=10,
                      objective=objective, bounds=None, init='zero')
  w = params[0]
  u = (w[:, 1] - w[:, 0])[None, :] * jnp.where(y == 0, 1.0, -1.0)[:, None]
  expected = x + geometry.lmo(u, eps, p)
  np.testing.assert_allclose(x_adv, expected, atol=1e-5)
  if math.isinf(p):
    np.testing.assert_allclose(x_adv, x + eps * jnp.sign(u), atol=1e-6)
  if p == 2:
    np.testing.assert_allclose(x_adv, x + eps * u / jnp.linalg.norm(u, axis=1, keepdims=True),
                               atol=1e-5)


def test_pgd_uniform_start_reaches_linear_worst_case_value():
  # Linf sign steps of total length 2.5 eps reach the corner from any start in the cube.
  p = INF
  key = jax.random.PRNGKey(3)
  params = linear_params(key, 5, 2)
  x, y = make_batch(jax.random.PRNGKey(4), (6, 5), 2)
  eps = 0.2
  x_adv, values = attacks.pgd_with_values(linear, params, (x, y), rng=key, eps=eps, p=p,
                                          steps=20, objective='margin', bounds=None)
  w, b = params
  u = (w[:, 1] - w[:, 0]) * jnp.where(y == 0, 1.0, -1.0)[:, None]
  q = geometry.dual_exponent(p)
  best = -losses.margin(linear(params, x), y) + eps * geometry.norm(u, q)
  np.testing.assert_allclose(values, best, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(-losses.margin(linear(params, x_adv), y), values, atol=1e-5)


def test_multi_targeted_pairwise_reaches_multiclass_linear_worst_case():
  # For a linear K-class model the worst untargeted margin over the Linf ball is
  # max_{t != y} (w_t - w_y).x + b_t - b_y + eps ||w_t - w_y||_1.
  key = jax.random.PRNGKey(5)
  params = linear_params(key, 6, 4)
  x, y = make_batch(jax.random.PRNGKey(6), (5, 6), 4)
  eps = 0.1
  x_adv = attacks.multi_targeted(linear, params, (x, y), rng=key, eps=eps, p=INF, steps=5,
                                 objective='pairwise_margin', bounds=None)
  w, b = params
  z = linear(params, x)
  diffs = w[None, :, :] - jnp.take(w.T, y, axis=0)[:, :, None]  # [B, D, K]
  analytic = (z - jnp.take_along_axis(z, y[:, None], 1)
              + eps * jnp.sum(jnp.abs(diffs), axis=1))
  analytic = jnp.max(jnp.where(jax.nn.one_hot(y, 4, dtype=bool), -jnp.inf, analytic), axis=1)
  np.testing.assert_allclose(-losses.margin(linear(params, x_adv), y), analytic, atol=1e-5)
  assert_feasible(x_adv, x, eps, INF, bounds=None)


def test_multi_targeted_at_least_as_strong_as_single_targeted_runs():
  key = jax.random.PRNGKey(7)
  params = mlp_params(key, 6, 4)
  x, y = make_batch(jax.random.PRNGKey(8), (6, 6), 4)
  kwargs = dict(eps=0.3, p=2.0, steps=4, objective='targeted_margin')
  strength = lambda xa: -losses.margin(mlp(params, xa), y)
  multi = strength(attacks.multi_targeted(mlp, params, (x, y), rng=key, **kwargs))
  singles = []
  for t in range(4):
    xa = attacks.pgd(mlp, params, (x, y), rng=jax.random.fold_in(key, t),
                     targets=jnp.full_like(y, t), **kwargs)
    singles.append(jnp.where(y == t, -jnp.inf, strength(xa)))
  assert np.all(multi >= jnp.max(jnp.stack(singles), axis=0) - 1e-5)


def test_restarts_never_worse_than_first_run():
  key = jax.random.PRNGKey(9)
  params = mlp_params(key, 6, 3)
  batch = make_batch(jax.random.PRNGKey(10), (8, 6), 3)
  run = functools.partial(attacks.pgd_with_values, mlp, params, batch, rng=key, eps=0.4,
                          p=2.0, steps=2, objective='margin')
  x1, v1 = run(restarts=1)
  x3, v3 = run(restarts=3)
  assert np.all(np.asarray(v3) >= np.asarray(v1) - 1e-6)
  assert np.any(np.asarray(v3) > np.asarray(v1))  # later restarts found something
  np.testing.assert_allclose(-losses.margin(mlp(params, x3), batch[1]), v3, atol=1e-5)


def test_deterministic_given_rng_and_no_gradient():
  key = jax.random.PRNGKey(11)
  params = mlp_params(key, 6, 3)
  x, y = make_batch(jax.random.PRNGKey(12), (4, 6), 3)
  run = lambda k: attacks.pgd(mlp, params, (x, y), rng=k, eps=0.3, p=INF, steps=2,
                              objective='tm')
  np.testing.assert_array_equal(run(key), run(key))
  assert not np.allclose(run(key), run(jax.random.PRNGKey(13)))
  # The attack carries no gradient to its inputs or params.
  g = jax.grad(lambda xx, pp: jnp.sum(attacks.pgd(mlp, pp, (xx, y), rng=key, eps=0.3, p=2,
                                                  steps=2)), argnums=(0, 1))(x, params)
  assert all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(g))


def test_jit_and_sharded_batch_agree_with_eager():
  assert len(jax.devices()) == 4
  key = jax.random.PRNGKey(14)
  params = mlp_params(key, 12, 3)
  x, y = make_batch(jax.random.PRNGKey(15), (8, 2, 2, 3), 3)
  attack = functools.partial(attacks.pgd, mlp, eps=0.5, p=2.0, steps=2, restarts=2,
                             objective='margin')
  eager = attack(params, (x, y), rng=key)
  jitted = jax.jit(attack)
  np.testing.assert_allclose(jitted(params, (x, y), rng=key), eager, atol=1e-5)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  shard = NamedSharding(mesh, P('data'))
  xs, ys = jax.device_put(x, shard), jax.device_put(y, shard)
  params_r = jax.device_put(params, NamedSharding(mesh, P()))
  sharded = jitted(params_r, (xs, ys), rng=key)
  np.testing.assert_allclose(sharded, eager, atol=1e-5)
  assert len(sharded.sharding.device_set) == 4


def test_unhashable_logits_fn_runs_uncompiled_with_same_result():

  class Model:  # defines __eq__ without __hash__: unhashable, cannot be a jit static arg
    __eq__ = lambda self, other: self is other

    def __call__(self, params, x):
      return mlp(params, x)

  key = jax.random.PRNGKey(25)
  params = mlp_params(key, 6, 3)
  batch = make_batch(jax.random.PRNGKey(26), (4, 6), 3)
  run = lambda f: attacks.pgd(f, params, batch, rng=key, eps=0.3, p=2.0, steps=2)
  np.testing.assert_allclose(run(Model()), run(mlp), atol=1e-6)


def test_unroll_does_not_change_result():
  key = jax.random.PRNGKey(16)
  params = mlp_params(key, 6, 3)
  batch = make_batch(jax.random.PRNGKey(17), (4, 6), 3)
  run = lambda u: attacks.pgd(mlp, params, batch, rng=key, eps=0.3, p=2.0, steps=4,
                              unroll=u)
  np.testing.assert_allclose(run(True), run(1), atol=1e-6)


def test_pgd_l1_reaches_the_worst_case_of_a_linear_model_in_the_box():
  # max u.δ over the L1 ball ∩ box is a fractional knapsack: fill the coordinates by
  # decreasing |u_i| up to the box. The top coordinate's room is below eps, so a step
  # rule that keeps pushing a coordinate the box blocks stalls there.
  key = jax.random.PRNGKey(7)
  params = linear_params(key, 8, 2)
  x = jax.random.uniform(jax.random.PRNGKey(8), (6, 8), minval=0.3, maxval=0.7)
  y = jnp.zeros(6, jnp.int32)
  eps = 1.2
  x_adv = attacks.pgd(linear, params, (x, y), rng=key, eps=eps, p=1.0, steps=100,
                      objective='margin', init='zero')
  assert_feasible(x_adv, x, eps, 1.0)
  w = np.asarray(params[0], np.float64)
  u = w[:, 1] - w[:, 0]  # the margin objective grows along u
  best = []
  for xi in np.asarray(x, np.float64):
    room, left, total = np.where(u > 0, 1 - xi, xi), eps, 0.0
    for i in np.argsort(-np.abs(u)):
      move = min(room[i], left)
      total, left = total + move * abs(u[i]), left - move
    best.append(total)
  got = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)) @ u
  np.testing.assert_allclose(got, best, rtol=0.02)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0, INF])
def test_fgsm_equals_closed_form(p):
  key = jax.random.PRNGKey(18)
  params = mlp_params(key, 6, 3)
  x, y = make_batch(jax.random.PRNGKey(19), (5, 2, 3), 3)
  eps = 0.2

  def single_loss(xi, yi):  # independent oracle: per-example gradient via vmap
    return losses.cross_entropy(mlp(params, xi[None]), yi[None])[0]

  grad = jax.vmap(jax.grad(single_loss))(x, y)
  expected = jnp.clip(x + geometry.lmo(grad, eps, p), 0.0, 1.0)
  np.testing.assert_allclose(attacks.fgsm(mlp, params, (x, y), eps=eps, p=p), expected,
                             atol=1e-6)


def test_objectives_follow_scorpio_eq12():
  logits = jnp.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
  y, t = jnp.array([0, 1]), jnp.array([2, 0])
  log_p = jax.nn.log_softmax(logits)
  m = lambda c: log_p[jnp.arange(2), c] - jnp.max(
      jnp.where(jax.nn.one_hot(c, 3, dtype=bool), -jnp.inf, log_p), axis=1)
  np.testing.assert_allclose(objectives.get_objective('um')(logits, y, None), -m(y), rtol=1e-6)
  np.testing.assert_allclose(objectives.get_objective('tm')(logits, y, t), m(t), rtol=1e-6)
  np.testing.assert_allclose(objectives.get_objective('ul')(logits, y, None),
                             -log_p[jnp.arange(2), y], rtol=1e-6)
  np.testing.assert_allclose(objectives.get_objective('tl')(logits, y, t),
                             log_p[jnp.arange(2), t], rtol=1e-6)
  with pytest.raises(ValueError, match='objective.*valid choices.*targeted_margin'):
    objectives.get_objective('kl_div')


def test_random_targets_uniform_over_other_classes():
  labels = jnp.array([0, 3, 5] * 400, jnp.int32)
  targets = np.asarray(objectives.random_targets(jax.random.PRNGKey(0), labels, 6))
  assert np.all(targets != np.asarray(labels))
  for label in (0, 3, 5):
    counts = np.bincount(targets[np.asarray(labels) == label], minlength=6)
    others = np.delete(counts, label)
    assert counts[label] == 0 and others.min() > 50  # 400 draws over 5 classes


def _bad_cases():
  x, y = make_batch(jax.random.PRNGKey(0), (3, 4), 3)
  ok = dict(batch=(x, y), eps=0.1, p=2.0, steps=1)
  return [
      (dict(ok, p=0.5), 'p'),
      (dict(ok, eps=-0.1), 'eps'),
      (dict(ok, steps=-1), 'steps'),
      (dict(ok, steps=1.5), 'steps'),
      (dict(ok, restarts=0), 'restarts'),
      (dict(ok, batch=(jnp.ones((3, 4), jnp.int32), y)), 'inputs'),
      (dict(ok, batch=(x, jnp.array([0, 1, 3]))), 'labels'),
      (dict(ok, batch=(x, jnp.array([0, 1]))), 'labels'),
      (dict(ok, batch=(x, y.astype(jnp.float32))), 'labels'),
      (dict(ok, batch=x), 'batch'),
      (dict(ok, objective='cw'), 'objective'),
      (dict(ok, init='gaussian'), 'init'),
      (dict(ok, step_rule='momentum'), 'step_rule'),
      (dict(ok, bounds=(1.0, 0.0)), 'bounds'),
      (dict(ok, objective='tm', targets=jnp.array([0, 1, 7])), 'targets'),
  ]


@pytest.mark.parametrize('kwargs,name', _bad_cases())
def test_pgd_bad_input_raises_value_error_naming_argument(kwargs, name):
  params = mlp_params(jax.random.PRNGKey(0), 4, 3)
  batch = kwargs.pop('batch')
  with pytest.raises(ValueError, match=name):
    attacks.pgd(mlp, params, batch, rng=jax.random.PRNGKey(0), **kwargs)


def test_other_entry_points_reject_bad_input():
  params = mlp_params(jax.random.PRNGKey(0), 4, 3)
  batch = make_batch(jax.random.PRNGKey(0), (3, 4), 3)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='logits_fn'):
    attacks.pgd(lambda p, x: jnp.sum(x, 1), params, batch, rng=key, eps=0.1, p=2, steps=1)
  with pytest.raises(ValueError, match='p must'):
    attacks.fgsm(mlp, params, batch, eps=0.1, p=0.0)
  with pytest.raises(ValueError, match='targets .B. or an rng'):
    attacks.fgsm(mlp, params, batch, eps=0.1, objective='tl')
  with pytest.raises(ValueError, match='targeted objective'):
    attacks.multi_targeted(mlp, params, batch, rng=key, eps=0.1, p=2, steps=1,
                           objective='ce')
  with pytest.raises(ValueError, match='max_eps'):
    attacks.min_norm(mlp, params, batch, max_eps=0.0)
  with pytest.raises(ValueError, match='goal'):
    attacks.min_norm(mlp, params, batch, max_eps=1.0, goal='top5')
  with pytest.raises(ValueError, match='inner'):
    attacks.min_norm(mlp, params, batch, max_eps=1.0, inner='deepfool')
  with pytest.raises(ValueError, match='eps'):
    attacks.simba(mlp, params, batch, rng=key, eps=0.0, steps=3)
  # Under jit the checks still run while tracing, before anything is compiled.
  with pytest.raises(ValueError, match='eps'):
    jax.jit(functools.partial(attacks.pgd, mlp, eps=-1.0, p=2.0, steps=1))(
        params, batch, rng=key)


def _linear_binary(seed, dim=5, batch=6):
  key = jax.random.PRNGKey(seed)
  w = jax.random.normal(key, (dim,))
  b = 0.1
  x = jax.random.uniform(jax.random.fold_in(key, 1), (batch, dim), minval=-1, maxval=1)
  f = x @ w + b
  y = (f > 0).astype(jnp.int32)  # correctly classified by construction
  logits_fn = lambda params, xx: jnp.stack([jnp.zeros(xx.shape[0]), xx @ params[0] + params[1]],
                                           axis=1)
  return (w, b), x, y, jnp.abs(f)


@pytest.mark.parametrize('p,dual', [(2.0, 2.0), (INF, 1.0), (1.0, INF)])
@pytest.mark.parametrize('goal', ['adv', 'btr'])
def test_min_norm_matches_linear_closed_form(p, dual, goal):
  params, x, y, dist = _linear_binary(20)
  max_eps, search_steps = 4.0, 12
  x_adv, norms = attacks.min_norm(lambda pp, xx: jnp.stack(
      [jnp.zeros(xx.shape[0]), xx @ pp[0] + pp[1]], 1), params, (x, y), p=p, max_eps=max_eps,
      goal=goal, search_steps=search_steps, steps=10, bounds=None)
  expected = dist / np.linalg.norm(np.asarray(params[0]), ord=dual)
  assert np.all(expected < max_eps)
  np.testing.assert_allclose(norms, expected, atol=max_eps / 2**search_steps + 1e-4)
  assert np.all(np.asarray(norms) >= expected - 1e-4)  # never below the true minimum
  np.testing.assert_allclose(geometry.norm(x_adv - x, p), norms, rtol=1e-5)
  logits = jnp.stack([jnp.zeros(x.shape[0]), x_adv @ params[0] + params[1]], 1)
  assert np.all(np.asarray(jnp.argmax(logits, 1)) != np.asarray(y))


@pytest.mark.parametrize('p,dual', [(2.0, 2.0), (INF, 1.0)])
def test_min_norm_finds_the_nearest_of_several_linear_boundaries(p, dual):
  # K = 4 linear model, no box: the minimal distance is min_t m_t / ||w_y - w_t||_q with
  # m_t = (w_y - w_t).x + b_y - b_t. Untargeted PGD inside follows the highest other
  # logit and overshoots on some examples (inner='pgd' misses here); the default
  # multi-targeted inner attack must find the nearest boundary for every example.
  params = linear_params(jax.random.PRNGKey(4), 6, 4)
  x = jax.random.normal(jax.random.PRNGKey(31), (12, 6))
  y = jnp.argmax(linear(params, x), 1).astype(jnp.int32)
  w, b = np.asarray(params[0], np.float64), np.asarray(params[1], np.float64)
  z, yy = np.asarray(x, np.float64) @ w + b, np.asarray(y)
  expected = np.array([min((z[i, yy[i]] - z[i, t]) / np.linalg.norm(w[:, yy[i]] - w[:, t], dual)
                           for t in range(4) if t != yy[i]) for i in range(len(yy))])
  max_eps, search_steps = float(1.2 * expected.max()), 12
  x_adv, norms = attacks.min_norm(linear, params, (x, y), p=p, max_eps=max_eps,
                                  search_steps=search_steps, steps=10, bounds=None)
  tol = max_eps / 2**search_steps
  np.testing.assert_allclose(norms, expected, atol=tol + 1e-5)
  assert np.all(np.asarray(norms) >= expected - 1e-5)
  np.testing.assert_allclose(geometry.norm(x_adv - x, p), norms, rtol=1e-5)
  assert np.all(np.asarray(jnp.argmax(linear(params, x_adv), 1)) != yy)


def test_min_norm_sentinels():
  params, x, y, dist = _linear_binary(21)
  logits_fn = lambda pp, xx: jnp.stack([jnp.zeros(xx.shape[0]), xx @ pp[0] + pp[1]], 1)
  y = y.at[0].set(1 - y[0])  # example 0 is misclassified at x: norm 0
  max_eps = float(np.sort(np.asarray(dist / jnp.linalg.norm(params[0])))[3])
  x_adv, norms = attacks.min_norm(logits_fn, params, (x, y), p=2.0, max_eps=max_eps * 0.99,
                                  search_steps=3, steps=5, bounds=None)
  norms = np.asarray(norms)
  assert norms[0] == 0 and np.all(np.asarray(x_adv[0]) == np.asarray(x[0]))
  unreachable = np.isinf(norms)
  assert unreachable.sum() >= 2  # at least the farthest examples are out of reach
  np.testing.assert_array_equal(np.asarray(x_adv)[unreachable], np.asarray(x)[unreachable])


@pytest.mark.parametrize('goal', ['adv', 'btr'])
def test_min_norm_ticktock_approaches_linear_closed_form(goal):
  params, x, y, dist = _linear_binary(24)
  logits_fn = lambda pp, xx: jnp.stack([jnp.zeros(xx.shape[0]), xx @ pp[0] + pp[1]], 1)
  x_adv, norms = attacks.min_norm_ticktock(logits_fn, params, (x, y), goal=goal, steps=200,
                                           bounds=None)
  expected = np.asarray(dist / jnp.linalg.norm(params[0]))
  norms = np.asarray(norms)
  assert np.all(norms >= expected - 1e-5)  # every recorded point crossed the boundary
  assert np.all(norms <= expected + 0.01), norms - expected
  np.testing.assert_allclose(geometry.norm(x_adv - x, 2.0), norms, rtol=1e-5)
  assert np.all(np.asarray(jnp.argmax(logits_fn(params, x_adv), 1)) != np.asarray(y))


def test_simba_lowers_true_class_probability_within_box():
  key = jax.random.PRNGKey(22)
  params = mlp_params(key, 12, 3)
  x, _ = make_batch(jax.random.PRNGKey(23), (6, 2, 2, 3), 3)
  y = jnp.argmax(mlp(params, x), axis=1).astype(jnp.int32)
  eps = 0.2
  x_adv = attacks.simba(mlp, params, (x, y), rng=key, eps=eps, steps=12)
  prob = lambda xx: jax.nn.softmax(mlp(params, xx))[jnp.arange(6), y]
  p0, p1 = np.asarray(prob(x)), np.asarray(prob(x_adv))
  assert np.all(p1 <= p0) and np.mean(p1 < p0 - 1e-4) >= 0.8
  assert_feasible(x_adv, x, eps, INF)
  assert np.all(np.sum(np.asarray(x_adv != x).reshape(6, -1), axis=1) <= 12)
  np.testing.assert_array_equal(
      attacks.simba(mlp, params, (x, y), rng=key, eps=eps, steps=12), x_adv)


def test_simba_stays_in_the_ball_for_any_number_of_steps():
  """Each coordinate is stepped at most once (Guo et al.): 4·D steps never leave the
  L∞ ε-ball ∩ box, and steps past D change nothing."""
  key = jax.random.PRNGKey(24)
  params = mlp_params(key, 12, 3)
  x, _ = make_batch(jax.random.PRNGKey(25), (6, 2, 2, 3), 3)
  y = jnp.argmax(mlp(params, x), axis=1).astype(jnp.int32)
  eps, dim = 0.1, 12
  x_long = attacks.simba(mlp, params, (x, y), rng=key, eps=eps, steps=4 * dim)
  assert_feasible(x_long, x, eps, INF)
  assert float(jnp.max(jnp.abs(x_long - x))) <= eps + 1e-6
  np.testing.assert_array_equal(
      attacks.simba(mlp, params, (x, y), rng=key, eps=eps, steps=dim), x_long)


def test_simba_stop_on_success_freezes_misclassified_examples():
  # Both runs share the coordinate order, so they agree until an example is
  # misclassified; afterwards only the non-stopping run keeps lowering p_y.
  key = jax.random.PRNGKey(27)
  params = mlp_params(key, 12, 3)
  x, _ = make_batch(jax.random.PRNGKey(28), (6, 2, 2, 3), 3)
  y = jnp.argmax(mlp(params, x), axis=1).astype(jnp.int32)
  run = lambda stop: attacks.simba(mlp, params, (x, y), rng=key, eps=0.5, steps=12,
                                   stop_on_success=stop)
  x_stop, x_go = run(True), run(False)
  prob = lambda xx: np.asarray(jax.nn.softmax(mlp(params, xx))[jnp.arange(6), y])
  assert np.all(prob(x_stop) >= prob(x_go) - 1e-7)
  flipped = np.asarray(jnp.argmax(mlp(params, x_go), 1) != y)
  assert flipped.any()  # the test exercises the frozen branch
  still = ~np.asarray(jnp.argmax(mlp(params, x_stop), 1) != y)
  np.testing.assert_array_equal(np.asarray(x_stop)[still], np.asarray(x_go)[still])
