"""APGD (Croce & Hein 2020): checkpoints, DLR losses, a reference loop, linear worst cases,
feasibility, jit / eager / sharded agreement and argument errors."""

import fractions
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
from robustjax.attacks._src import apgd as apgd_lib
from toy_models import linear, mlp  # pylint: disable=g-bad-import-order

INF = math.inf
KEY = jax.random.PRNGKey(0)
SETTINGS = hypothesis.settings(max_examples=3, deadline=None, derandomize=True)


def mlp_params(key, dim=6, classes=5, hidden=8):
  k1, k2, k3 = jax.random.split(key, 3)
  return ((jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim),
           0.1 * jax.random.normal(k3, (hidden,))),
          (jax.random.normal(k2, (hidden, classes)) * 2.0, jnp.zeros(classes)))


MLP_PARAMS = mlp_params(KEY)
X = jax.random.uniform(jax.random.PRNGKey(1), (8, 6))
Y = jnp.argmax(mlp(MLP_PARAMS, X), -1).astype(jnp.int32)


def assert_feasible(x_adv, x, eps, p, bounds=(0.0, 1.0)):
  x_adv, x = np.asarray(x_adv, np.float64), np.asarray(x, np.float64)
  assert x_adv.shape == x.shape and np.all(np.isfinite(x_adv))
  norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), ord=p, axis=1)
  assert np.all(norms <= eps * (1 + 1e-5) + 1e-6), (norms, eps)
  if bounds is not None:
    assert np.all(x_adv >= bounds[0]) and np.all(x_adv <= bounds[1])


# ---------------------------------------------------------------------------------------
# Checkpoints and losses against formulas written here.


def paper_checkpoints(n):
  """w_j = ceil(p_j n), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
  prev, cur = fractions.Fraction(0), fractions.Fraction(22, 100)
  out = []
  while math.ceil(cur * n) <= n:
    if math.ceil(cur * n) > (out[-1] if out else 0):
      out.append(math.ceil(cur * n))
    prev, cur = cur, cur + max(cur - prev - fractions.Fraction(3, 100),
                               fractions.Fraction(6, 100))
  return tuple(out)


@pytest.mark.parametrize('n', [100, 10, 37, 250, 1])
def test_checkpoints_follow_the_recursion(n):
  assert attacks.apgd_checkpoints(n) == paper_checkpoints(n)


def test_checkpoints_for_100_steps_match_the_reference_counter():
  # The reference code counts k = 22 iterations to the first check, then
  # k <- max(k - 3, 6): 22, 41 (+19), 57 (+16), 70 (+13), 80 (+10), 87 (+7), 93, 99 (+6).
  assert attacks.apgd_checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)


def test_dlr_matches_its_formula():
  logits = np.asarray(jax.random.normal(KEY, (32, 7)) * 3, np.float64)
  labels = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (32,), 0, 7))
  srt = np.sort(logits, axis=1)[:, ::-1]
  true = logits[np.arange(32), labels]
  other = np.max(np.where(np.eye(7, dtype=bool)[labels], -np.inf, logits), axis=1)
  want = -(true - other) / (srt[:, 0] - srt[:, 2] + 1e-12)
  got = attacks.dlr_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Shift and scale invariant: why DLR survives logits multiplied by 1000.
  scaled = attacks.dlr_loss(jnp.asarray(logits * 1000 + 5, jnp.float32), jnp.asarray(labels))
  np.testing.assert_allclose(scaled, want, rtol=1e-4, atol=1e-5)


def test_targeted_dlr_matches_its_formula():
  logits = np.asarray(jax.random.normal(KEY, (32, 6)) * 3, np.float64)
  labels = np.asarray(jax.random.randint(jax.random.PRNGKey(2), (32,), 0, 6))
  targets = (labels + 1 + np.arange(32) % 5) % 6
  srt = np.sort(logits, axis=1)[:, ::-1]
  r = np.arange(32)
  want = -(logits[r, labels] - logits[r, targets]) / (
      srt[:, 0] - (srt[:, 2] + srt[:, 3]) / 2 + 1e-12)
  got = attacks.targeted_dlr_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels),
                                  jnp.asarray(targets))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_target_ranks_follow_the_clean_logits():
  logits = jax.random.normal(KEY, (16, 10))
  order = np.argsort(-np.asarray(logits), axis=1)
  for rank in range(9):
    np.testing.assert_array_equal(apgd_lib.target_classes(logits, rank), order[:, rank + 1])


# ---------------------------------------------------------------------------------------
# The algorithm, step by step, against a plain loop written from Alg. 1.


def reference_apgd(logits_fn, params, x, y, *, eps, p, steps, key):
  """Alg. 1 of Croce & Hein (2020) as a plain eager loop (CE loss, one run)."""
  rho, marks = 0.75, paper_checkpoints(steps)
  @jax.jit
  def evaluate(v):
    f = lambda u: jnp.sum(-jax.nn.log_softmax(logits_fn(params, u))[jnp.arange(len(y)), y])
    per = -jax.nn.log_softmax(logits_fn(params, v))[jnp.arange(len(y)), y]
    return per, jax.grad(f)(v), jnp.argmax(logits_fn(params, v), -1) != y
  def loss_and_grad(v):
    return tuple(np.array(a) for a in evaluate(jnp.asarray(v, jnp.float32)))
  x = np.asarray(x)
  keys = apgd_lib.example_keys(key, len(x))
  if p == INF:
    t = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], minval=-1.0))(keys))
    t = t / np.abs(t).reshape(len(x), -1).max(1)[:, None]
  else:
    t = np.asarray(jax.vmap(lambda k: jax.random.normal(k, x.shape[1:]))(keys))
    t = t / np.linalg.norm(t.reshape(len(x), -1), axis=1)[:, None]
  def proj(v):
    d = v - x
    if p == INF:
      d = np.clip(d, -eps, eps)
    else:
      n = np.linalg.norm(d.reshape(len(x), -1), axis=1)[:, None]
      d = d * np.minimum(1.0, eps / np.maximum(n, 1e-30))
    return np.clip(x + d, 0.0, 1.0)
  def direction(g):
    if p == INF:
      return np.sign(g)
    n = np.linalg.norm(g.reshape(len(x), -1), axis=1)[:, None]
    return np.where(n > 0, g / np.where(n > 0, n, 1), 0)
  cur = np.clip(x + eps * t, 0.0, 1.0)
  loss, grad, wrong = loss_and_grad(cur)
  prev = cur.copy()
  eta = np.full((len(x), 1), 2.0 * eps)
  best, best_loss, best_grad = cur.copy(), loss.copy(), grad.copy()
  adv, fooled = cur.copy(), wrong.copy()
  history = [loss]  # f(x^(0)), f(x^(1)), ...
  last_mark, last_best, last_halved = 0, best_loss.copy(), np.ones(len(x), bool)
  for k in range(steps):
    alpha = 0.75 if k > 0 else 1.0
    z = proj(cur + eta * direction(grad))
    nxt = proj(cur + alpha * (z - cur) + (1 - alpha) * (cur - prev))
    prev, cur = cur, nxt
    loss, grad, wrong = loss_and_grad(cur)
    history.append(loss)
    adv[wrong], fooled = cur[wrong], fooled | wrong
    up = loss > best_loss
    best[up], best_grad[up], best_loss[up] = cur[up], grad[up], loss[up]
    if k + 1 in marks:
      w = k + 1
      rises = sum((history[i + 1] > history[i]).astype(int) for i in range(last_mark, w))
      halve = (rises <= rho * (w - last_mark)) | (~last_halved & (last_best >= best_loss))
      eta[halve] /= 2
      cur[halve], grad[halve] = best[halve], best_grad[halve]
      last_mark, last_best, last_halved = w, best_loss.copy(), halve
  return np.where(fooled[:, None], adv, best)


@pytest.mark.parametrize('p,eps', [(INF, 0.15), (2.0, 0.4)])
def test_apgd_equals_a_plain_loop_of_algorithm_1(p, eps):
  steps = 30  # checkpoints 7, 13, 18, 21, 24, 27, 29
  want = reference_apgd(mlp, MLP_PARAMS, X, Y, eps=eps, p=p, steps=steps, key=KEY)
  got = attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=jax.random.fold_in(KEY, 0), eps=eps, p=p,
                     steps=steps)
  # apgd's restart 0 uses fold_in(rng, 0); the reference was handed KEY itself.
  got_same_key = apgd_lib.run_single(
      MLP_PARAMS, X, Y, apgd_lib.example_keys(KEY, len(X)), jnp.full((len(X),), eps),
      jnp.zeros([], jnp.int32), (0.0, 1.0), logits_fn=mlp, p=p, steps=steps, loss='ce',
      unroll=1, eot_samples=1, stochastic=False)[0]
  # Same branches at every checkpoint; float32 here vs float64 there drifts ~1e-5 (L2).
  np.testing.assert_allclose(got_same_key, want, atol=2e-4)
  assert_feasible(got, X, eps, p)


# ---------------------------------------------------------------------------------------
# Analytic worst cases of linear models (no box: the ball alone).


def _linear_problem(key, classes, dim=12, batch=24):
  kw, kb, kx = jax.random.split(key, 3)
  w = jax.random.normal(kw, (dim, classes))
  b = 0.3 * jax.random.normal(kb, (classes,))
  x = jax.random.normal(kx, (batch, dim))
  y = jnp.argmax(linear((w, b), x), -1).astype(jnp.int32)
  return (w, b), x, y


def worst_margin(params, x, y, eps, p):
  """min over the ball and j != y of z_y - z_j = (z_y - z_j)(x) - eps ||w_y - w_j||_q."""
  w, b = (np.asarray(a, np.float64) for a in params)
  z = np.asarray(x, np.float64) @ w + b
  q = 1.0 if p == INF else 2.0
  out = []
  for i in range(len(y)):
    out.append(min(z[i, y[i]] - z[i, j] - eps * np.linalg.norm(w[:, y[i]] - w[:, j], ord=q)
                   for j in range(w.shape[1]) if j != y[i]))
  return np.asarray(out)


@pytest.mark.parametrize('p,eps', [(INF, 0.1), (2.0, 0.5)])
def test_apgd_ce_reaches_the_worst_case_of_a_binary_linear_model(p, eps):
  params, x, y = _linear_problem(jax.random.PRNGKey(3), classes=2)
  x_adv = attacks.apgd(linear, params, (x, y), rng=KEY, eps=eps, p=p, bounds=None)
  z = np.asarray(linear(params, x_adv), np.float64)
  got = z[np.arange(len(y)), np.asarray(y)] - z[np.arange(len(y)), 1 - np.asarray(y)]
  want = worst_margin(params, x, np.asarray(y), eps, p)
  # Fooled examples keep any misclassifying iterate; the others reach the minimum.
  fooled = want < 0
  assert np.all(got[fooled] < 0)
  np.testing.assert_allclose(got[~fooled], want[~fooled], rtol=1e-3, atol=1e-3)
  assert_feasible(x_adv, x, eps, p, bounds=None)


@pytest.mark.parametrize('p,eps', [(INF, 0.08), (2.0, 0.4)])
def test_apgd_t_breaks_exactly_the_analytically_breakable_points(p, eps):
  params, x, y = _linear_problem(jax.random.PRNGKey(4), classes=5)
  want = worst_margin(params, x, np.asarray(y), eps, p)
  clear = np.abs(want) > 0.05  # away from the boundary, where 100 steps must decide
  assert clear.sum() >= 16 and (want[clear] < 0).any() and (want[clear] > 0).any()
  x_adv = attacks.apgd_targeted(linear, params, (x, y), rng=KEY, eps=eps, p=p, bounds=None)
  robust = np.asarray(jnp.argmax(linear(params, x_adv), -1) == y)
  np.testing.assert_array_equal(robust[clear], want[clear] > 0)
  assert_feasible(x_adv, x, eps, p, bounds=None)


# ---------------------------------------------------------------------------------------
# Properties.


@SETTINGS
@hypothesis.given(eps=st.floats(0.0, 0.6), p=st.sampled_from([INF, 2.0, 1.0]),
                  loss=st.sampled_from(['ce', 'dlr', 'targeted']),
                  edge=st.sampled_from([0.0, 1.0, None]))
def test_apgd_stays_in_ball_and_box(eps, p, loss, edge):
  x = X if edge is None else X.at[:, :3].set(edge)  # inputs on the box's faces
  kw = dict(rng=KEY, eps=eps, p=p, steps=12)
  if loss == 'targeted':
    x_adv = attacks.apgd_targeted(mlp, MLP_PARAMS, (x, Y), num_targets=2, **kw)
  else:
    x_adv = attacks.apgd(mlp, MLP_PARAMS, (x, Y), loss=loss, restarts=2, **kw)
  assert_feasible(x_adv, x, eps, p)


def test_apgd_keeps_a_misclassifying_point_and_is_deterministic():
  a = attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.3, p=INF, steps=12, loss='dlr')
  b = attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.3, p=INF, steps=12, loss='dlr')
  np.testing.assert_array_equal(a, b)
  assert np.any(np.asarray(jnp.argmax(mlp(MLP_PARAMS, a), -1) != Y))


def test_more_restarts_never_lose_a_fooled_point():
  one = attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.12, p=INF, steps=12)
  three = attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.12, p=INF, steps=12,
                       restarts=3)
  fooled = lambda v: np.asarray(jnp.argmax(mlp(MLP_PARAMS, v), -1) != Y)
  assert np.all(fooled(three) >= fooled(one))


def test_chunked_straight_line_and_rolled_loops_agree():
  kw = dict(rng=KEY, eps=0.1, p=INF, steps=20)  # two chunks of 10 (one compilation)
  rolled = attacks.apgd(mlp, MLP_PARAMS, (X, Y), unroll=1, **kw)
  chunked = attacks.apgd(mlp, MLP_PARAMS, (X, Y), unroll='chunked', **kw)
  np.testing.assert_allclose(chunked, rolled, atol=1e-6)


def test_jit_eager_and_four_devices_agree():
  assert len(jax.devices()) == 4
  run = lambda prm, x, y, key: attacks.apgd_targeted(mlp, prm, (x, y), rng=key, eps=0.1,
                                                     p=2.0, steps=10, num_targets=2)
  eager = run(MLP_PARAMS, X, Y, KEY)
  jitted = jax.jit(run)(MLP_PARAMS, X, Y, KEY)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  shard = NamedSharding(mesh, P('data'))
  sharded = run(MLP_PARAMS, jax.device_put(X, shard), jax.device_put(Y, shard), KEY)
  np.testing.assert_allclose(jitted, eager, atol=1e-6)
  np.testing.assert_allclose(sharded, eager, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Bad input: one clear message before anything compiles.


@pytest.fixture
def no_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('compiled before the argument check')
  for name in ('_whole', '_start', '_segment'):
    monkeypatch.setattr(apgd_lib, name, fail)


@pytest.mark.parametrize('call,match', [
    (lambda: attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=-0.1, p=INF), 'eps'),
    (lambda: attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.1, p=3.0), '1, 2, inf'),
    (lambda: attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.1, p=2.0,
                          decreasing_eps=True), 'decreasing_eps.*p=1'),
    (lambda: attacks.apgd_targeted(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.1, p=INF,
                                   decreasing_eps=True), 'decreasing_eps.*p=1'),
    (lambda: attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.1, p=INF, loss='cw'),
     'loss'),
    (lambda: attacks.apgd(mlp, MLP_PARAMS, (X + 2.0, Y), rng=KEY, eps=0.1, p=INF),
     'bounds'),
    (lambda: attacks.apgd(mlp, MLP_PARAMS, (X, Y), rng=KEY, eps=0.1, p=INF, restarts=0),
     'restarts'),
    (lambda: attacks.apgd_targeted(mlp, mlp_params(KEY, classes=3), (X, Y % 3), rng=KEY,
                                   eps=0.1, p=INF), 'K >= 4'),
    (lambda: attacks.apgd(mlp, mlp_params(KEY, classes=2), (X, Y % 2), rng=KEY, eps=0.1,
                          p=INF, loss='dlr'), 'K >= 3'),
])
def test_bad_input_raises_before_compiling(no_compile, call, match):
  with pytest.raises(ValueError, match=match):
    call()
