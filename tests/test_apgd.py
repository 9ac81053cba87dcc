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


def official_checkpoints(n, p=INF):
  """The iterations (1-based) after which autopgd_base.py checks, transcribed from its loop.

  __init__: n_iter_2 = max(int(0.22 * n_iter), 1), n_iter_min = max(int(0.06 * n_iter), 1),
  size_decr = max(int(0.03 * n_iter), 1); attack_single_run: k = n_iter_2 (L1:
  max(int(.04 * n_iter), 1)), counter3 += 1 per iteration, check when counter3 == k, then
  counter3 = 0 and (L∞/L2 only) k = max(k - size_decr, n_iter_min).
  """
  n_iter_2, n_iter_min, size_decr = (max(int(0.22 * n), 1), max(int(0.06 * n), 1),
                                     max(int(0.03 * n), 1))
  k = max(int(.04 * n), 1) if p == 1 else n_iter_2
  counter3, out = 0, []
  for i in range(n):
    counter3 += 1
    if counter3 == k:
      out.append(i + 1)
      if p != 1:
        k = max(k - size_decr, n_iter_min)
      counter3 = 0
  return tuple(out)


@pytest.mark.parametrize('n', [10, 30, 100, 1000, 1])
def test_checkpoints_follow_the_reference_counter(n):
  for p in (INF, 2.0, 1.0):
    assert attacks.apgd_checkpoints(n, p) == official_checkpoints(n, p), (n, p)
  # Pinned from the reference code: N = 30 checks after 6, 11, 15, 18, 20, 21 and then
  # every iteration; N = 100 after 22 (+19) 41 (+16) 57 (+13) 70 (+10) 80 (+7) 87 (+6) 93, 99.
  pinned = {30: (6, 11, 15, 18, 20, 21) + tuple(range(22, 31)),
            100: (22, 41, 57, 70, 80, 87, 93, 99), 10: (2, 3, 4, 5, 6, 7, 8, 9, 10)}
  if n in pinned:
    assert attacks.apgd_checkpoints(n) == pinned[n]
  assert attacks.apgd_checkpoints(1000, 1.0) == tuple(range(40, 1001, 40))


def test_checkpoints_are_where_the_official_code_checks():
  """autopgd_base itself: the iterations at which it calls check_oscillation (L∞/L2) or
  recomputes the sparsity (L1, ``L0_norm``), counted by model calls."""
  torch = pytest.importorskip('torch')
  autopgd_base = pytest.importorskip('pyautoattack.autopgd_base')
  calls = []
  model = lambda x: (calls.append(None), torch.stack([x.sum(1), -x.sum(1), 0 * x[:, 0]], 1))[1]
  x, y = torch.full((1, 4), 0.5), torch.zeros(1, dtype=torch.long)
  for n in (10, 30, 100, 1000):
    for norm, p in (('Linf', INF), ('L1', 1.0)):
      seen = []
      attack = autopgd_base.APGDAttack(model, n_iter=n, norm=norm, eps=0.1, device='cpu')
      attack.init_hyperparam(x)
      if p == INF:
        attack.check_oscillation = lambda *a, **k: (seen.append(len(calls) - 1),
                                                    torch.zeros(1))[1]
      original = autopgd_base.L0_norm
      autopgd_base.L0_norm = lambda v: (seen.append(len(calls) - 1), original(v))[1]
      try:
        del calls[:]
        attack.attack_single_run(x, y)
      finally:
        autopgd_base.L0_norm = original
      assert attacks.apgd_checkpoints(n, p) == tuple(seen), (n, norm)


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
  """Alg. 1 of Croce & Hein (2020) as a plain eager loop (CE loss, one run), with the
  reference code's checkpoints and its zero-initialised loss history."""
  rho, marks = 0.75, official_checkpoints(steps)
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
      before = lambda i: history[i] if i else np.zeros_like(history[0])  # loss_steps[-1] = 0
      rises = sum((history[i + 1] > before(i)).astype(int) for i in range(last_mark, w))
      halve = (rises <= rho * (w - last_mark)) | (~last_halved & (last_best >= best_loss))
      eta[halve] /= 2
      cur[halve], grad[halve] = best[halve], best_grad[halve]
      last_mark, last_best, last_halved = w, best_loss.copy(), halve
  return np.where(fooled[:, None], adv, best)


@pytest.mark.parametrize('p,eps', [(INF, 0.15)])
def test_apgd_equals_a_plain_loop_of_algorithm_1(p, eps):
  steps = 30  # checkpoints 6, 11, 15, 18, 20, 21, 22, ..., 30
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


def _torch_mlp(params):
  torch = pytest.importorskip('torch')
  (w1, b1), (w2, b2) = [(torch.tensor(np.asarray(w)), torch.tensor(np.asarray(b)))
                        for w, b in params]
  return lambda x: torch.tanh(x.reshape(len(x), -1) @ w1 + b1) @ w2 + b2


@pytest.mark.parametrize('p,eps', [(INF, 0.15), (2.0, 0.4), (1.0, 1.0)])
def test_one_run_equals_the_official_apgd_from_the_same_start(p, eps):
  """autopgd_base's attack_single_run (x_init given) on a PyTorch port of the MLP: the
  same iterates' best points, losses and fooled sets, for CE, DLR and targeted DLR."""
  torch = pytest.importorskip('torch')
  autopgd_base = pytest.importorskip('pyautoattack.autopgd_base')
  model, steps = _torch_mlp(MLP_PARAMS), 30
  x_t, y_t = torch.tensor(np.asarray(X)), torch.tensor(np.asarray(Y)).long()
  keys, radius = apgd_lib.example_keys(KEY, len(X)), jnp.full((len(X),), eps)
  norm = {INF: 'Linf', 2.0: 'L2', 1.0: 'L1'}[p]
  for loss in ('ce', 'dlr', 'dlr-targeted'):
    x0 = geometry.project_ball_and_box(
        X + 0.7 * eps * jax.random.normal(jax.random.PRNGKey(9), X.shape) / len(X[0]) ** (
            0 if p == INF else 1 / p), X, radius, p, (0.0, 1.0))
    if loss == 'dlr-targeted':
      official = autopgd_base.APGDAttack_targeted(model, n_iter=steps, norm=norm, eps=eps,
                                                  device='cpu')
      official.y_target = model(x_t).sort(dim=1)[1][:, -2]  # the runner-up (target_class 2)
    else:
      official = autopgd_base.APGDAttack(model, n_iter=steps, norm=norm, eps=eps,
                                         loss=loss, device='cpu')
    official.init_hyperparam(x_t)
    best, acc, loss_best, best_adv = (v.detach().numpy() for v in official.attack_single_run(
        x_t, y_t, x_init=torch.tensor(np.asarray(x0))))
    ours = apgd_lib.run_single(MLP_PARAMS, X, Y, keys, radius, jnp.zeros([], jnp.int32),
                               (0.0, 1.0), logits_fn=mlp, p=p, steps=steps, loss=loss,
                               unroll=1, eot_samples=1, stochastic=False, x_init=x0,
                               with_best=True)
    x_adv, fooled, ours_loss, ours_best = map(np.asarray, ours)
    np.testing.assert_array_equal(fooled, ~acc.astype(bool), err_msg=loss)
    np.testing.assert_allclose(ours_loss, loss_best, atol=2e-4, err_msg=loss)
    np.testing.assert_allclose(ours_best, best, atol=3e-4, err_msg=loss)
    np.testing.assert_allclose(x_adv[fooled], best_adv[fooled], atol=3e-4, err_msg=loss)


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


def test_restarts_keep_the_first_fooling_run_else_the_highest_loss():
  # Oracle: the three restarts run alone (restart r: keys of fold_in(rng, r)); per example
  # the first run that fooled it (the reference re-attacks only the robust points), else
  # the first run of highest loss.
  x = jax.random.uniform(jax.random.PRNGKey(5), (32, 6))
  y = jnp.argmax(mlp(MLP_PARAMS, x), -1).astype(jnp.int32)
  eps, steps = 0.05, 2
  runs = [apgd_lib.run_single(
      MLP_PARAMS, x, y, apgd_lib.example_keys(jax.random.fold_in(KEY, r), len(x)),
      jnp.full((len(x),), eps), jnp.zeros([], jnp.int32), (0.0, 1.0), logits_fn=mlp, p=INF,
      steps=steps, loss='ce', unroll=1, eot_samples=1, stochastic=False) for r in range(3)]
  x_adv, fooled, loss = (np.stack([np.asarray(r[i]) for r in runs]) for i in range(3))
  hit = fooled.any(0)
  pick = np.where(hit, np.argmax(fooled, 0), np.argmax(loss, 0))
  assert 0 < hit.sum() < len(x) and (pick[~hit] > 0).any()  # both branches exercised
  got = attacks.apgd(mlp, MLP_PARAMS, (x, y), rng=KEY, eps=eps, p=INF, steps=steps,
                     restarts=3, unroll=1)
  np.testing.assert_array_equal(np.asarray(got), x_adv[pick, np.arange(len(x))])
  # The merge on literal runs: a later fooling run replaces an unfooled one whatever its
  # loss, never an earlier fooling one; between unfooled runs the strictly higher loss.
  old = (jnp.zeros((4, 1)), jnp.array([False, True, False, False]), jnp.array([5., 0., 1., 1.]))
  new = (jnp.ones((4, 1)), jnp.array([True, True, False, False]), jnp.array([0., 9., 2., 1.]))
  merged, merged_fooled, merged_loss = apgd_lib.merge(*old, *new)
  np.testing.assert_array_equal(np.asarray(merged)[:, 0], [1, 0, 1, 0])
  np.testing.assert_array_equal(merged_fooled, [True, True, False, False])
  np.testing.assert_array_equal(merged_loss, [0, 0, 2, 1])


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
