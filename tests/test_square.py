"""Square Attack: schedule, bumps, feasibility, monotone acceptance, worst cases, masking."""

import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks
from robustjax.attacks._src import square as square_lib
from toy_models import linear, mlp  # pylint: disable=g-bad-import-order


INF = math.inf
SETTINGS = hypothesis.settings(max_examples=6, deadline=None, derandomize=True)


def mlp_params(seed, dim, classes, hidden=8):
  rng = np.random.default_rng(seed)
  return ((jnp.asarray(rng.normal(size=(dim, hidden)) / np.sqrt(dim), jnp.float32),
           jnp.zeros(hidden)),
          (jnp.asarray(rng.normal(size=(hidden, classes)) * 2.0, jnp.float32),
           jnp.zeros(classes)))


def uniform(seed, shape, low=0.0, high=1.0):
  return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape), jnp.float32)


def quantised(params, x):
  """A linear model on inputs rounded to quarters, with no gradient through the rounding."""
  q = jax.lax.stop_gradient(jnp.round(x * 4.0) / 4.0)
  return linear(params, q)


def margins(logits_fn, params, x, y):
  z = np.asarray(logits_fn(params, x), np.float64)
  true = z[np.arange(len(y)), y]
  z[np.arange(len(y)), y] = -np.inf
  return true - z.max(1)


def predicted_batch(logits_fn, params, x):
  """Labels = the clean prediction, so every example starts correctly classified."""
  return x, jnp.argmax(logits_fn(params, x), -1).astype(jnp.int32)


def assert_feasible(x_adv, x, eps, p, bounds=(0.0, 1.0)):
  x_adv, x = np.asarray(x_adv), np.asarray(x)
  assert x_adv.shape == x.shape and np.all(np.isfinite(x_adv))
  norms = np.linalg.norm((x_adv - x).reshape(len(x), -1).astype(np.float64), ord=p, axis=1)
  assert np.all(norms <= np.asarray(eps) * (1 + 1e-5) + 1e-6), norms
  if bounds is not None:
    assert x_adv.min() >= bounds[0] and x_adv.max() <= bounds[1]


# --- schedule and window shapes ---------------------------------------------------------


def official_p(it, n_queries, p_init, rescale):
  """SquareAttack.p_selection of the official code (fra31/auto-attack square.py)."""
  if rescale:
    it = int(it / n_queries * 10000)
  if 10 < it <= 50:
    return p_init / 2
  elif 50 < it <= 200:
    return p_init / 4
  elif 200 < it <= 500:
    return p_init / 8
  elif 500 < it <= 1000:
    return p_init / 16
  elif 1000 < it <= 2000:
    return p_init / 32
  elif 2000 < it <= 4000:
    return p_init / 64
  elif 4000 < it <= 6000:
    return p_init / 128
  elif 6000 < it <= 8000:
    return p_init / 256
  elif 8000 < it:
    return p_init / 512
  return p_init


def official_side(p, h, w, c, norm):
  """The official window side: s = max(round(sqrt(p·n_features/c)), 1) (L2: >= 3, odd)."""
  s = max(int(round(math.sqrt(p * c * h * w / c))), 3 if norm == 2.0 else 1)
  if norm == 2.0 and s % 2 == 0:
    s += 1
  return min(s, min(h, w))


def test_p_schedule_matches_the_official_code_raw_and_rescaled():
  for queries in (10000, 5000, 100):
    for rescale in (False, True):
      for it in range(queries):
        assert square_lib.p_selection(it, queries, 0.8, rescale) == pytest.approx(
            official_p(it, queries, 0.8, rescale)), (queries, rescale, it)
  # Pinned: with 5000 queries the raw schedule (AutoAttack's) ends at p_init/128, the
  # rescaled one (SquareAttack's default) at p_init/512.
  assert square_lib.p_selection(4999, 5000, 0.8, False) == pytest.approx(0.8 / 128)
  assert square_lib.p_selection(4999, 5000, 0.8) == pytest.approx(0.8 / 512)


@pytest.mark.parametrize('side', [32, 28])
def test_window_sides_follow_the_official_schedule_at_32_and_28_pixels(side):
  for norm in (INF, 2.0):
    grid = square_lib._Grid(side, side, 3, (side, side, 3), norm, 'margin', True)
    for rescale in (False, True):
      table = square_lib._size_table(5000, 0.8, grid, norm, rescale)
      want = [official_side(official_p(i, 5000, 0.8, rescale), side, side, 3, norm)
              for i in range(5000)]
      np.testing.assert_array_equal(table[:, 0], want)
      np.testing.assert_array_equal(table[:, 1], want)
  # Pinned from the official formula (32x32: raw and rescaled sides differ on 4879 of
  # 5000 L∞ iterations; mean window area 35.03 vs 19.50 pixels; last side 3 vs 1).
  raw = square_lib._size_table(5000, 0.8, square_lib._Grid(side, side, 3, (side, side, 3),
                                                           INF, 'margin', True), INF, False)
  resc = square_lib._size_table(5000, 0.8, square_lib._Grid(side, side, 3, (side, side, 3),
                                                            INF, 'margin', True), INF, True)
  assert int(np.sum(raw[:, 0] != resc[:, 0])) == 4879
  if side == 32:
    assert np.mean(raw[:, 0] ** 2) == pytest.approx(35.0284)
    assert np.mean(resc[:, 0] ** 2) == pytest.approx(19.499)
    assert (raw[-1, 0], resc[-1, 0]) == (3, 1)


def test_window_sizes_follow_the_official_rounding():
  for (h, w), norm in [((32, 32), INF), ((32, 32), 2.0), ((8, 8), INF), ((8, 8), 2.0)]:
    for it in range(0, 5000, 37):
      p = official_p(it, 5000, 0.8, False)
      assert square_lib.window_size(p, h, w, norm) == (official_side(p, h, w, 1, norm),) * 2
  # One-row inputs ([B, D] as [B, 1, D, 1]): strips of about p·D coordinates.
  assert square_lib.window_size(0.8, 1, 64, INF) == (1, 51)
  assert square_lib.window_size(0.0125, 1, 64, INF) == (1, 1)
  assert square_lib.window_size(0.8, 1, 64, 2.0) == (1, 51)
  assert square_lib.window_size(0.02, 1, 64, 2.0) == (1, 3)


def _official_bump(s, transpose):
  """The meta pseudo-Gaussian of the paper's L2 attack, written with explicit loops."""

  def rectangle(a, b):
    out = np.zeros((a, b))
    ca, cb = a // 2, b // 2
    for k in range(max(ca, cb) + 1):
      out[max(ca - k, 0):min(ca + k + 1, a), max(cb - k, 0):min(cb + k + 1, b)] += 1 / (k + 1)**2
    return out / np.sqrt((out**2).sum())

  out = np.zeros((s, s))
  if s // 2:
    out[:s // 2] = rectangle(s // 2, s)
  out[s // 2:] = -rectangle(s - s // 2, s)
  out /= np.sqrt((out**2).sum())
  return out.T if transpose else out


@pytest.mark.parametrize('s', [1, 2, 3, 5, 6, 7])
def test_bump_equals_the_official_meta_pseudo_gaussian(s):
  grid = square_lib._Grid(9, 11, 1, (9, 11, 1), 2.0, 'margin', True)
  top, left = jnp.array([0, 9 - s, 1]), jnp.array([11 - s, 0, 2])
  rows, cols = square_lib._coords(grid, top, left)
  bump = np.asarray(jax.jit(square_lib._bump, static_argnums=0)(
      grid, rows, cols, s, s, jnp.array([False, True, True])))
  for n, transpose in enumerate([False, True, True]):
    expected = np.zeros((9, 11))
    expected[top[n]:top[n] + s, left[n]:left[n] + s] = _official_bump(s, transpose)
    np.testing.assert_allclose(bump[n], expected, atol=1e-6)


@pytest.mark.parametrize('side', [8, 10])
def test_l2_start_is_the_official_grid_of_bumps_on_the_sphere(side):
  # Official start: windows of side s = H // 5 from offset (H - 5s) // 2, as many as fit,
  # each holding ± the meta pseudo-Gaussian of side s (either orientation), rescaled so
  # that ||delta||_2 = eps. 8x8: 7x7 single pixels from (1, 1); 10x10: 5x5 windows of 2x2.
  s = side // 5
  offset = (side - 5 * s) // 2
  starts = [offset + k * s for k in range(side // s) if offset + (k + 1) * s <= side]
  params = mlp_params(8, side * side, 3)
  x, y = predicted_batch(mlp, params, uniform(8, (8, side, side, 1)))
  states = []
  square_lib.run(mlp, params, (x, y), rng=jax.random.PRNGKey(8), eps=0.7, p=2.0,
                     queries=0, bounds=None, on_sync=lambda it, state: states.append(state))
  delta = np.asarray(states[0].x_best - x)[..., 0]
  np.testing.assert_allclose(np.linalg.norm(delta.reshape(8, -1), axis=1), 0.7, rtol=1e-5)
  expected = np.zeros((side, side))
  for top in starts:
    for left in starts:
      expected[top:top + s, left:left + s] = np.abs(_official_bump(s, False))
  for n in range(8):
    magnitude = np.abs(delta[n])
    magnitude /= magnitude.max()
    for top in starts:
      for left in starts:
        window = magnitude[top:top + s, left:left + s]
        assert any(np.allclose(window, np.abs(_official_bump(s, t)) / np.abs(
            _official_bump(s, t)).max(), atol=1e-5) for t in (False, True))
    assert np.all(magnitude[expected == 0] == 0)


# --- feasibility, shapes, determinism ---------------------------------------------------


@hypothesis.given(p=st.sampled_from([2.0, INF]), eps=st.floats(0.0, 0.7),
                  seed=st.integers(0, 2**16), bounds=st.sampled_from([(0.0, 1.0), (-1.0, 2.0)]))
@SETTINGS
def test_points_lie_in_the_ball_and_the_box(p, eps, seed, bounds):
  params = mlp_params(seed, 16, 3)
  x, y = predicted_batch(mlp, params, uniform(seed, (8, 4, 4, 1), *bounds))
  result = square_lib.square_with_info(mlp, params, (x, y), rng=jax.random.PRNGKey(seed),
                                       eps=eps, p=p, queries=12, bounds=bounds)
  assert_feasible(result.inputs, x, eps, p, bounds)
  np.testing.assert_allclose(result.margin, margins(mlp, params, result.inputs, y), atol=1e-4)


@pytest.mark.parametrize('shape,p', [((8, 16), 2.0), ((8, 4, 4), INF)])
def test_flat_and_channelless_inputs_are_attacked_in_their_own_shape(shape, p):
  # [B, D] is a one-row image (windows are strips), [B, H, W] a one-channel image;
  # logits_fn always sees the caller's shape.
  params = mlp_params(1, 16, 3)
  seen = set()

  def model(params, xx):
    seen.add(xx.shape[1:])
    return mlp(params, xx)

  x, y = predicted_batch(model, params, uniform(1, shape))
  eps = 0.5 if p == 2 else 0.1
  result = square_lib.square_with_info(model, params, (x, y), rng=jax.random.PRNGKey(1),
                                       eps=eps, p=p, queries=30)
  assert seen == {shape[1:]}
  assert_feasible(result.inputs, x, eps, p)
  clean = margins(mlp, params, x, y)
  assert np.all(np.asarray(result.margin) <= clean) and np.any(result.margin < clean - 1e-3)


def test_same_rng_same_points_and_examples_do_not_depend_on_the_batch():
  params = mlp_params(3, 16, 3)
  x, y = predicted_batch(mlp, params, uniform(3, (8, 4, 4, 1)))
  key = jax.random.PRNGKey(3)
  run = lambda batch, rng: square_lib.square_with_info(mlp, params, batch, rng=rng, eps=0.3,
                                                       p=INF, queries=40, restarts=2)
  first, second = run((x, y), key), run((x, y), key)
  np.testing.assert_array_equal(first.inputs, second.inputs)
  np.testing.assert_array_equal(first.queries, second.queries)
  assert not np.array_equal(first.inputs, run((x, y), jax.random.PRNGKey(4)).inputs)
  # The draws are keyed by example index: other examples (broken sooner or later, or
  # compacted away) do not change an example's points.
  x_other = x.at[5:].set(uniform(4, (3, 4, 4, 1)))
  x_other, y_other = predicted_batch(mlp, params, x_other)
  np.testing.assert_array_equal(run((x_other, y_other), key).inputs[:5], first.inputs[:5])


@pytest.mark.parametrize('p', [INF, 2.0])
def test_under_jit_the_traced_loop_gives_the_host_loops_result(p):
  params = mlp_params(5, 16, 3)
  x, y = predicted_batch(mlp, params, uniform(5, (8, 4, 4, 1)))
  kwargs = dict(rng=jax.random.PRNGKey(5), eps=0.3 if p == INF else 1.0, p=p, queries=30)
  eager = square_lib.square_with_info(mlp, params, (x, y), **kwargs)
  jitted = jax.jit(lambda xx: square_lib.square_with_info(mlp, params, (xx, y), **kwargs))(x)
  np.testing.assert_allclose(jitted.inputs, eager.inputs, atol=1e-6)
  np.testing.assert_array_equal(jitted.queries, eager.queries)


# --- the random search ------------------------------------------------------------------


@pytest.mark.parametrize('p', [INF, 2.0])
def test_best_margin_never_increases_and_is_the_margin_at_the_best_point(p):
  key = jax.random.PRNGKey(7)
  params = mlp_params(7, 16, 3)
  x, y = predicted_batch(mlp, params, uniform(7, (8, 4, 4, 1)))
  history = []
  result = square_lib.run(
      mlp, params, (x, y), rng=key, eps=0.1 if p == INF else 0.4, p=p, queries=60,
      chunking=(1, 1, True), on_sync=lambda it, state: history.append(state))
  best = np.stack([np.asarray(s.margin) for s in history])  # [iterations, B]
  assert len(history) >= 30
  assert np.all(np.diff(best, axis=0) <= 0)
  assert np.any(np.diff(best, axis=0) < 0)  # proposals do get accepted
  for state in history[::10]:
    np.testing.assert_allclose(state.margin, margins(mlp, params, state.x_best, y), atol=1e-4)
  np.testing.assert_array_equal(result.margin, best[-1])


@pytest.mark.parametrize('size,channels', [(1, 1), (2, 3)])
def test_linf_proposals_change_the_point_inside_one_window_only(size, channels):
  # The current point sits at x + eps everywhere: a proposal drawing "+" for every channel
  # would be a no-op, and is redrawn (1/2^C of AutoAttack's proposals are such no-ops).
  grid = square_lib._Grid(4, 4, channels, (4, 4, channels), INF, 'margin', True)
  box = square_lib._Box(jnp.asarray(0.0), jnp.asarray(1.0))
  x = uniform(9, (8, 4, 4, channels), 0.2, 0.8)
  eps = jnp.full((8,), 0.1)
  seeds = square_lib._seeds(jax.random.PRNGKey(9), 0, jnp.arange(8))
  consts = square_lib._Consts(x, jnp.zeros(8, jnp.int32), eps, seeds, jnp.ones(8, bool))
  state = square_lib.SquareState(x + 0.1, jnp.ones(8), jnp.ones(8), jnp.zeros(8, jnp.int32))
  propose = jax.jit(lambda it: square_lib._propose_linf(state, consts, box, grid, it, size,
                                                        size))
  for it in range(12):
    proposal = np.asarray(propose(it))
    changed = np.abs(proposal - np.asarray(state.x_best)) > 1e-6  # [8, 4, 4, C]
    pixels = changed.any(-1)
    assert np.all(pixels.sum((1, 2)) == size * size)  # one whole window, every time
    window_channels = changed.any((1, 2))  # [8, C]: flipped channels flip the whole window
    assert np.all(changed.sum((1, 2)) == window_channels * size * size)
    np.testing.assert_allclose(proposal[changed], np.asarray(x - 0.1)[changed], atol=1e-6)


def test_linf_reaches_the_linear_models_worst_case():
  # Two classes, so the margin a·x + c is separable: the worst case over ball ∩ box moves
  # every coordinate to the end of its interval [max(x−ε, 0), min(x+ε, 1)] against a.
  key = jax.random.PRNGKey(11)
  a = jnp.asarray(np.random.default_rng(11).normal(size=16), jnp.float32)
  params = (jnp.stack([a, jnp.zeros(16)], 1), jnp.array([0.0, -0.5]))
  x, y = predicted_batch(linear, params, uniform(11, (64, 4, 4, 1)))
  eps = 0.03
  flat = np.asarray(x).reshape(len(x), -1)
  sign = np.where(np.asarray(y)[:, None] == 0, 1.0, -1.0) * np.asarray(a)[None]  # d margin/dx
  worst_x = np.where(sign > 0, np.maximum(flat - eps, 0), np.minimum(flat + eps, 1))
  worst = margins(linear, params, jnp.asarray(worst_x.reshape(x.shape), jnp.float32), y)
  clean = margins(linear, params, x, y)
  keep = np.flatnonzero((worst > 0.01) & (clean - worst > 0.05))[:8]  # nobody breaks
  assert keep.size == 8
  x, y, worst = x[keep], y[keep], worst[keep]
  result = square_lib.square_with_info(linear, params, (x, y), rng=key, eps=eps, p=INF,
                                       queries=300)
  np.testing.assert_allclose(result.margin, worst, atol=1e-4)
  np.testing.assert_array_equal(result.queries, 301)


def test_l2_without_box_stays_on_the_sphere_and_lowers_the_margin():
  key = jax.random.PRNGKey(12)
  params = (jnp.asarray(np.random.default_rng(12).normal(size=(36, 3)), jnp.float32),
            jnp.zeros(3))
  x, y = predicted_batch(linear, params, uniform(12, (8, 6, 6, 1)))
  eps = 0.05
  result = square_lib.square_with_info(linear, params, (x, y), rng=key, eps=eps, p=2.0,
                                       queries=100, bounds=None)
  norms = np.linalg.norm(np.asarray(result.inputs - x).reshape(8, -1), axis=1)
  np.testing.assert_allclose(norms, eps, rtol=1e-4)
  clean = margins(linear, params, x, y)
  assert np.all(np.asarray(result.margin) < clean)


def _quantised_problem():
  """Level-centred inputs of a quantised linear model: breakable, but only by searching."""
  rng = np.random.default_rng(0)
  a = np.tile([1.0, -1.0], 8)
  levels = rng.integers(1, 4, size=(4000, 16)) / 4.0  # pixels at 1/4, 1/2, 3/4
  clean = levels @ a
  keep = np.flatnonzero((np.abs(clean) >= 2.0) & (np.abs(clean) <= 3.0))[:8]
  params = (jnp.asarray(np.stack([a, -a], 1) / 2, jnp.float32), jnp.zeros(2))
  x = jnp.asarray(levels[keep].reshape(8, 4, 4, 1), jnp.float32)
  return params, predicted_batch(quantised, params, x)


def test_square_breaks_a_gradient_free_quantised_model_that_pgd_cannot():
  # With ε = 0.2 every pixel can move one quarter-level, which lowers the margin by 4 > 3:
  # all examples are breakable, but the input gradient is exactly zero.
  params, (x, y) = _quantised_problem()
  key = jax.random.PRNGKey(0)
  x_pgd = attacks.pgd(quantised, params, (x, y), rng=key, eps=0.2, p=INF, steps=10)
  assert np.all(margins(quantised, params, x_pgd, y) > 0)
  x_sq = attacks.square(quantised, params, (x, y), rng=key, eps=0.2, p=INF, queries=200)
  assert_feasible(x_sq, x, 0.2, INF)
  assert np.all(margins(quantised, params, x_sq, y) < 0)


def test_autoattack_flags_square_breaking_what_the_gradient_attack_missed():
  params, (x, y) = _quantised_problem()
  result = attacks.autoattack(quantised, params, (x, y), rng=jax.random.PRNGKey(0), eps=0.2,
                              p=INF, attacks=['apgd-ce', 'square'])
  assert result.attack_names == ('apgd-ce', 'square')
  np.testing.assert_array_equal(result.broken_by, 1)  # all by Square, none by APGD-CE
  assert result.flags['square_improved'] == 8
  assert_feasible(result.inputs, x, 0.2, INF)


def test_queries_are_not_spent_on_broken_or_misclassified_points():
  key = jax.random.PRNGKey(2)
  params = (jnp.asarray(np.random.default_rng(2).normal(size=(16, 3)), jnp.float32),
            jnp.zeros(3))
  x = uniform(2, (32, 4, 4, 1))
  x, y = predicted_batch(linear, params, x)
  y = y.at[:4].set((y[:4] + 1) % 3)  # misclassified when clean: never attacked
  eps = jnp.full((32,), 0.5).at[4:6].set(0.0)  # eps = 0: robust through the whole budget
  rows = []

  def counting(params, xx):
    jax.debug.callback(lambda n: rows.append(int(n)), xx.shape[0])
    return linear(params, xx)

  queries = 200
  result = square_lib.run(counting, params, (x, y), rng=key, eps=eps, p=INF,
                              queries=queries, chunking=(1, 10, True))
  spent = np.asarray(result.queries)
  assert np.all(spent[:4] == 0) and np.all(spent[4:6] == queries + 1)
  broken = np.asarray(result.margin) < 0
  assert broken[6:].sum() >= 20 and np.all(spent[6:][broken[6:]] < 50)
  # Forward rows actually evaluated: the clean pass, the start, then per 10 iterations a
  # bucket of the examples still robust (the two eps = 0 ones: 8 rows), not 32.
  bound = 32 + 32 + 32 * 10 + 8 * queries
  assert sum(rows) <= bound < 32 * (queries + 1)


# --- argument checks ----------------------------------------------------------------------


@pytest.mark.parametrize('kwargs,name', [
    (dict(p=0.5), 'p must be'), (dict(p=3), 'p must be one of 1, 2, inf'),
    (dict(p='l2'), 'p must'), (dict(eps=-0.1), 'eps'), (dict(eps=jnp.ones(3)), 'eps'),
    (dict(queries=-1), 'queries'), (dict(queries=2.5), 'queries'),
    (dict(restarts=0), 'restarts'), (dict(p_init=0.0), 'p_init'),
    (dict(p_init=1.5), 'p_init'), (dict(loss='dlr'), 'loss'), (dict(rng=None), 'rng'),
    (dict(bounds=(1.0, 0.0)), 'bounds'), (dict(bounds=(0.0, np.ones(3))), 'bounds'),
    (dict(inputs=jnp.ones((8, 2, 2, 2, 2)) * 0.5), 'inputs'),
    (dict(inputs=jnp.full((8, 16), 2.0)), 'inputs must lie in bounds'),
    (dict(inputs=jnp.ones((8, 16), jnp.int32)), 'inputs'),
    (dict(labels=jnp.full((8,), 7, jnp.int32)), 'labels'),
])
def test_bad_input_raises_before_anything_compiles(kwargs, name, monkeypatch):
  for core in ('_clean', '_init_state', '_run_chunk', '_take', '_scatter', '_blank',
               '_seeds', '_merge'):
    monkeypatch.setattr(square_lib, core, lambda *a, **k: pytest.fail('compiled'))
  params = mlp_params(0, 16, 3)
  inputs = kwargs.pop('inputs', jnp.full((8, 4, 4, 1), 0.5))
  labels = kwargs.pop('labels', jnp.zeros((8,), jnp.int32))
  args = dict(rng=jax.random.PRNGKey(0), eps=0.1, p=INF, queries=5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    attacks.square(mlp, params, (inputs, labels), **args)
