"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020), L∞, L2 and L1.

"Square Attack: a query-efficient black-box adversarial attack via random search" is the
score-based member of AutoAttack (Croce & Hein, ICML 2020): it uses forward passes only,
so it still breaks models whose gradients are masked (quantised inputs, saturated
softmax, non-differentiable preprocessing). Per example it keeps the best point found
and, on every iteration, proposes one random change localised in a square window of side
``s`` (a fraction ``p`` of the pixels, shrinking with the iteration count); the proposal
is accepted when it lowers the margin ``z_y − max_{j≠y} z_j`` (or raises the CE), and an
example stops as soon as it is misclassified.

- L∞: start at a random vertex with *vertical stripes* (one sign per column and channel,
  constant down the column); a proposal sets the window of one channel at a time to
  ``x ± ε`` (one sign per channel), clipped to the box.
- L2: start from a grid of ``meta pseudo-Gaussian`` bumps (side ``⌊min(H, W)/5⌋``), each
  with random sign per channel, rescaled onto the ε-sphere; a proposal moves the mass of
  two random windows (W1 ∪ W2) into W1 as a fresh ± bump plus the old content of W1, so
  the perturbation stays on the sphere, and the box clip is applied last.
- L1 (the variant of AutoAttack's L1 version, Croce & Hein 2021): as L2 with bumps of
  weights ``Σ 1/(k+1)⁴`` normalised in L1, the window's new mass set from the L1 budget,
  and the exact projection onto the L1 ball ∩ box
  (:func:`robustjax.geometry.project_l1_in_box`) in place of the rescaling and clip.
- The window fraction follows the paper's piecewise-constant schedule (:func:`p_selection`,
  ``p_init`` halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000),
  by default rescaled to ``queries`` iterations (the official ``SquareAttack`` default,
  ``resc_schedule=True``); AutoAttack builds its Square with the raw iteration count
  (``resc_schedule=False``: with 5000 queries ``p`` ends at ``p_init/128``), which
  ``rescale_schedule=False`` selects.

Differences from the AutoAttack code (fra31/auto-attack), each as in the paper or in the
authors' original implementation (max-andr/square-attack): window positions, signs and
bump orientations are drawn per example (AutoAttack draws one window per iteration for
the whole batch); the window start is uniform over every position that fits (AutoAttack's
``randint(0, h − s)`` never places a window on the last row/column); an L∞ proposal that
would not change the current point is redrawn among the other sign vectors, as the
authors' code does, so queries are not wasted on no-ops; L2 masses are balanced
per channel (the authors' code; identical to AutoAttack for one channel); and an example
is done when its margin is negative, not at a tie ``margin = 0`` (which argmax may still
resolve to the true class, e.g. on quantised models).

Implementation: the random search is one pure step (:func:`_step`); a host loop runs it
in compiled chunks on the examples still robust, gathered into a bucketed sub-batch
(quarter-octave sizes, under 25% padding: at most ``4 log2(B / 8) + 1`` compilations),
and stops when all are broken (layout and measured costs in :func:`square`'s docstring).
Randomness is drawn per example from a seed keyed by ``(rng, restart, example index)``
and the iteration, so an example's result does not depend on the rest of the batch or
on the compaction.
Under an outer ``jax.jit`` (traced inputs) the same steps run in a ``lax.while_loop``
over the full batch, with the same results.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import _checks
from robustjax import geometry
from robustjax.attacks._src import common as _common
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey

NORMS = (1.0, 2.0, math.inf)
LOSSES = ('margin', 'ce')
# The schedule halves p after these iterations (of 10000; rescaled to ``queries``).
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_NOOP_TOL = 1e-7
_INIT_SALT = np.uint32(0x9E3779B9)  # seeds ^ salt: the initial point's own stream


class SquareResult(NamedTuple):
  """What :func:`square_with_info` returns."""
  inputs: Array  # [B, ...] best point per example (adversarial where margin < 0)
  margin: Array  # [B] float32 margin z_y − max_{j≠y} z_j at ``inputs``
  queries: Array  # [B] int32 forward passes spent on the example (0 if misclassified)


class SquareState(NamedTuple):
  """Carry of the random search (one row per example of a possibly compacted batch)."""
  x_best: Array  # [N, H, W, C] best point found
  margin: Array  # [N] float32 margin at x_best; the example is done once it is < 0
  loss: Array  # [N] float32 minimised objective at x_best (margin, or −CE)
  queries: Array  # [N] int32 forward passes spent


class _Consts(NamedTuple):
  """Per-example constants of the random search."""
  x: Array  # [N, H, W, C] clean points
  labels: Array  # [N] int32
  eps: Array  # [N] radius
  seeds: Array  # [N, 2] uint32 per-example threefry seeds of this restart
  valid: Array  # [N] bool; False for padding rows of a bucket


class _Grid(NamedTuple):
  """Static geometry of the image view ``[B, H, W, C]`` and the attack's settings."""
  height: int
  width: int
  channels: int
  shape: tuple  # the caller's input shape without the batch axis
  p: float
  loss: str
  boxed: bool  # whether points are clipped to a box (its bounds are arguments)


class _Box(NamedTuple):
  """The input box on the image view (traced, so new bounds do not recompile)."""
  low: Array  # [] or [H, W, C]
  high: Array  # [] or [H, W, C]


# ---------------------------------------------------------------------------------------
# Schedule and window sizes (host-side, exact Python arithmetic as the official code).


def p_selection(iteration: int, queries: int, p_init: float,
                rescale: bool = True) -> float:
  """Fraction of pixels changed at ``iteration`` (0-based) of a ``queries``-long run.

  The paper's schedule for 10000 iterations halves ``p_init`` after iterations 10, 50,
  200, 500, 1000, 2000, 4000, 6000 and 8000. With ``rescale`` other budgets use it
  rescaled, ``i -> int(i / queries · 10000)`` (the official ``SquareAttack`` default);
  without, the iteration is used as is (AutoAttack's Square, ``resc_schedule=False``).
  """
  it = int(iteration / queries * 10000) if rescale else int(iteration)
  return p_init / 2 ** sum(it > threshold for threshold in _HALVINGS)


def window_size(p: float, height: int, width: int, norm: float) -> tuple[int, int]:
  """Window ``(rows, cols)`` covering about a fraction ``p`` of an ``H x W`` image.

  Squares of side ``round(sqrt(p·H·W))`` (at least 1; for L2 and L1 at least 3 and odd,
  as the official code), capped at ``min(H, W)``. One-row (or one-column) inputs get strips of
  ``round(p·W)`` (or ``round(p·H)``) pixels under the same rules.
  """
  bumps = norm in (1, 2)
  smallest = 3 if bumps else 1

  def clamp(s, limit):
    s = max(int(s), smallest)
    if bumps and s % 2 == 0:
      s += 1
    return min(s, limit)

  if height > 1 and width > 1:
    s = clamp(round(math.sqrt(p * height * width)), min(height, width))
    return s, s
  if height == 1:
    return 1, clamp(round(p * width), width)
  return clamp(round(p * height), height), 1


def _size_table(queries: int, p_init: float, grid: _Grid, norm: float,
                rescale: bool) -> np.ndarray:
  """``[queries, 2]`` int32 window sizes per iteration."""
  table = np.zeros((queries, 2), np.int32)
  for i in range(queries):
    table[i] = window_size(p_selection(i, queries, p_init, rescale), grid.height,
                           grid.width, norm)
  return table


# ---------------------------------------------------------------------------------------
# Pieces of the step (pure, per example, on the [N, H, W, C] view).


def _bcast(values: Array) -> Array:
  return jnp.reshape(values, (-1, 1, 1, 1))


def _clip(x: Array, box: _Box | None) -> Array:
  if box is None:
    return x
  return jnp.clip(x, box.low.astype(x.dtype), box.high.astype(x.dtype))


def _coords(grid: _Grid, top: Array, left: Array) -> tuple[Array, Array]:
  """Pixel coordinates ``[N, H, W]`` relative to per-example window origins ``[N]``."""
  rows = jnp.arange(grid.height, dtype=jnp.int32)[None, :, None] - top[:, None, None]
  cols = jnp.arange(grid.width, dtype=jnp.int32)[None, None, :] - left[:, None, None]
  return (jnp.broadcast_to(rows, (top.shape[0], grid.height, grid.width)),
          jnp.broadcast_to(cols, (top.shape[0], grid.height, grid.width)))


def _inside(rows: Array, cols: Array, size_h, size_w) -> Array:
  return (rows >= 0) & (rows < size_h) & (cols >= 0) & (cols < size_w)


def _cumulative_inverse_powers(n: int, power: int) -> np.ndarray:
  """``c[k] = Σ_{j<k} 1/(j+1)^power`` for ``k = 0..n``."""
  return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1) ** power)]).astype(
      np.float32)


def _unit(values: Array, norm: float = 2.0) -> Array:
  """``values [N, H, W]`` (or ``[N, H, W, C]`` per channel) over axes 1, 2: unit L2 or L1."""
  if norm == 1:
    size = jnp.sum(jnp.abs(values), axis=(1, 2), keepdims=True)
  else:
    size = jnp.sqrt(jnp.sum(jnp.square(values), axis=(1, 2), keepdims=True))
  return values / jnp.maximum(size, 1e-12)


def _mix32(h: Array) -> Array:
  """A bijective 32-bit integer hash with full avalanche (Wellons' ``lowbias32``)."""
  h = h ^ (h >> 16)
  h = h * np.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * np.uint32(0x846CA68B)
  return h ^ (h >> 16)


def _random_words(seeds: Array, block, count: int) -> Array:
  """``[N, count]`` uint32 random words, counter-based on per-example seeds ``[N, 2]``.

  Word ``j`` of block ``b`` (an iteration) hashes the counter ``b·count + j`` keyed by the
  example's two seed words (themselves from ``jax.random``). One small integer kernel per
  step: ``jax.random``'s threefry made the step's XLA:CPU compile time 2-3x longer.
  """
  counters = (jnp.asarray(block, jnp.uint32) * np.uint32(count)
              + jnp.arange(count, dtype=jnp.uint32))[None, :]
  return _mix32(_mix32(counters ^ seeds[:, :1]) + seeds[:, 1:])


def _uniform_int(words: Array, high) -> Array:
  """Integers in ``[0, high)`` from uint32 ``words`` (24 random bits; bias < 2^-24·high)."""
  unit = (words >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
  return jnp.minimum((unit * high).astype(jnp.int32), high - 1)


def _sign_bits(words: Array, count: int) -> Array:
  """``[N, count]`` of ±1 (int32) from the bits of ``words [N, ceil(count / 32)]``."""
  j = np.arange(count)
  bits = (words[:, j // 32] >> jnp.asarray(j % 32, jnp.uint32)) & 1
  return 2 * bits.astype(jnp.int32) - 1


def _words_for(count_bits: int) -> int:
  return max(-(-count_bits // 32), 1)


def _bump(grid: _Grid, rows: Array, cols: Array, size_h, size_w, transpose: Array) -> Array:
  """The paper's meta pseudo-Gaussian on each example's window, unit norm: ``[N, H, W]``.

  The window is split in two halves along its rows (along the strip for one-row or
  one-column windows; square windows are transposed where ``transpose [N]``); each half
  holds ``Σ_{k >= d} 1/(k+1)²`` at Chebyshev distance ``d`` from its centre cell
  (``⌊a/2⌋, ⌊b/2⌋``) of an ``a x b`` half, normalised, with signs ``+`` then ``−``.
  For L1 (``grid.p == 1``) the weights are ``1/(k+1)⁴`` and the norm is L1.
  """
  norm = 1.0 if grid.p == 1 else 2.0
  table = jnp.asarray(_cumulative_inverse_powers(max(grid.height, grid.width) + 2,
                                                 4 if norm == 1 else 2))
  inside = _inside(rows, cols, size_h, size_w)
  split_cols = (size_h == 1) | ((size_h == size_w) & transpose[:, None, None])
  along = jnp.where(split_cols, cols, rows)
  across = jnp.where(split_cols, rows, cols)
  length = jnp.where(split_cols, size_w, size_h)
  breadth = jnp.where(split_cols, size_h, size_w)
  half = length // 2

  def rectangle(u, v, a, b):
    d = jnp.maximum(jnp.abs(u - a // 2), jnp.abs(v - b // 2))
    k = jnp.maximum(a // 2, b // 2) + 1
    return table[k] - table[jnp.clip(d, 0, table.shape[0] - 1)]

  first = jnp.where(inside & (along < half), rectangle(along, across, half, breadth), 0.0)
  second = jnp.where(inside & (along >= half),
                     rectangle(along - half, across, length - half, breadth), 0.0)
  return _unit(_unit(first, norm) - _unit(second, norm), norm)


def _margin_and_loss(logits: Array, labels: Array, loss: str) -> tuple[Array, Array]:
  """``(margin [N], objective to minimise [N])`` in float32."""
  logits = logits.astype(jnp.float32)
  true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  margin = true - other
  if loss == 'margin':
    return margin, margin
  return margin, true - jax.nn.logsumexp(logits, axis=-1)  # −CE


def _evaluate(logits_fn, params, x: Array, labels: Array, grid: _Grid):
  logits = logits_fn(params, jnp.reshape(x, (x.shape[0],) + grid.shape))
  return _margin_and_loss(logits, labels, grid.loss)


def _init_point(consts: _Consts, box: _Box | None, grid: _Grid, norm: float) -> Array:
  """The first point: L∞ vertical stripes, or the grid of bumps on the L2 sphere (L1:
  projected onto the L1 ball ∩ box)."""
  n, h, w, c = consts.x.shape
  eps = _bcast(consts.eps).astype(consts.x.dtype)
  if norm == math.inf:
    stripe_shape = (h if (w == 1 and h > 1) else 1, w, c)
    count = int(np.prod(stripe_shape))
    words = _random_words(consts.seeds ^ _INIT_SALT, 0, _words_for(count))
    signs = jnp.reshape(_sign_bits(words, count), (n,) + stripe_shape).astype(consts.x.dtype)
    return _clip(consts.x + eps * signs, box)
  window_of, upright, transposed = _init_bumps(grid)
  count = int(window_of.max()) + 1
  bits = _sign_bits(_random_words(consts.seeds ^ _INIT_SALT, 0, _words_for(count * (c + 1))),
                    count * (c + 1))
  signs = jnp.reshape(bits[:, :count * c], (n, count, c)).astype(jnp.float32)
  flips = bits[:, count * c:] > 0  # [N, windows]: transpose that window's bump
  index = np.maximum(window_of, 0)
  bump = jnp.where(flips[:, index], transposed, upright) * (window_of >= 0)  # [N, H, W]
  delta = (bump[..., None] * signs[:, index]).astype(consts.x.dtype)
  if norm == 1:
    return _project_l1(consts.x + delta, consts, box)
  return _clip(consts.x + eps * _unit_image(delta), box)


@functools.lru_cache(maxsize=32)
def _init_bumps(grid: _Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Static maps of the L2 start: window index per pixel (-1: none), bumps both ways.

  Bumps of side ``⌊min(H, W)/5⌋`` tile the image from a centred offset, as the official
  code (one-row / one-column inputs: strips of ``⌊L/25⌋`` pixels, the same 25 bumps of
  1/25 of the pixels). The windows are disjoint, so one ``[H, W]`` map holds them all.
  """
  h, w = grid.height, grid.width
  if h > 1 and w > 1:
    size_h = size_w = max(min(h, w) // 5, 1)
    count_h = count_w = 5
  elif h == 1:
    size_h, size_w, count_h, count_w = 1, max(w // 25, 1), 1, 25
  else:
    size_h, size_w, count_h, count_w = max(h // 25, 1), 1, 25, 1

  def starts(length, size, count):
    offset = max((length - count * size) // 2, 0)
    return [offset + k * size for k in range(length // size)
            if offset + (k + 1) * size <= length]

  windows = [(t, l) for t in starts(h, size_h, count_h) for l in starts(w, size_w, count_w)]
  with jax.ensure_compile_time_eval():
    top = jnp.asarray([t for t, _ in windows], jnp.int32)
    left = jnp.asarray([l for _, l in windows], jnp.int32)
    rows, cols = _coords(grid, top, left)
    inside = np.asarray(_inside(rows, cols, size_h, size_w))  # [windows, H, W]
    maps = [np.asarray(_bump(grid, rows, cols, size_h, size_w,
                             jnp.full((len(windows),), flip))).sum(0) for flip in (False, True)]
  window_of = np.where(inside.any(0), inside.argmax(0), -1)
  return window_of, maps[0].astype(np.float32), maps[1].astype(np.float32)


def _project_l1(x_new: Array, consts: _Consts, box: _Box | None) -> Array:
  """``x_new`` projected onto ``{‖z − x‖₁ <= ε(1 − 1e-6)} ∩ box`` (exact)."""
  x = consts.x
  flat = lambda a: jnp.reshape(a, (x.shape[0], -1))
  if box is None:
    low = jnp.full(x.shape, -jnp.inf, x.dtype)
    high = jnp.full(x.shape, jnp.inf, x.dtype)
  else:
    low = jnp.broadcast_to(box.low.astype(x.dtype), x.shape) - x
    high = jnp.broadcast_to(box.high.astype(x.dtype), x.shape) - x
  radius = consts.eps.astype(x.dtype) * (1 - 1e-6)  # the official code's safety margin
  delta = geometry.project_l1_in_box(flat(x_new - x), flat(low), flat(high), radius)
  return x + jnp.reshape(delta, x.shape)


def _unit_image(delta: Array) -> Array:
  norm = jnp.sqrt(jnp.sum(jnp.square(delta), axis=(1, 2, 3), keepdims=True))
  return delta / (norm + 1e-12)


def _propose_linf(state: SquareState, consts: _Consts, box, grid: _Grid, iteration,
                  size_h, size_w) -> Array:
  """Sets one random window per example to ``x ± ε`` (a sign per channel), in the box."""
  n, h, w, c = consts.x.shape
  k = _words_for(c)
  words = _random_words(consts.seeds, iteration, 3 + 2 * k)
  top = _uniform_int(words[:, 0], h - size_h + 1)
  left = _uniform_int(words[:, 1], w - size_w + 1)
  signs = _sign_bits(words[:, 3:3 + k], c)  # [N, C]
  if c <= 24:  # a uniform non-empty set of channels to flip
    flips = 1 + _uniform_int(words[:, 2], (1 << c) - 1)
    flip = ((flips[:, None] >> jnp.arange(c, dtype=jnp.int32)) & 1) > 0
  else:  # empty with probability 2^-C
    flip = _sign_bits(words[:, 3 + k:], c) > 0
  other = jnp.where(flip, -signs, signs)
  rows, cols = _coords(grid, top, left)
  window = _inside(rows, cols, size_h, size_w)[..., None]  # [N, H, W, 1]
  eps = _bcast(consts.eps).astype(consts.x.dtype)
  plus, minus = _clip(consts.x + eps, box), _clip(consts.x - eps, box)
  # A channel's window is unchanged by sign σ when x_best already equals clip(x + σε).
  # A sign vector that changes nothing is replaced by ``other``: uniform over the other
  # 2^C − 1 vectors, i.e. the authors' resample-until-it-changes, in one draw.
  same_plus = ~jnp.any(window & (jnp.abs(plus - state.x_best) >= _NOOP_TOL), axis=(1, 2))
  same_minus = ~jnp.any(window & (jnp.abs(minus - state.x_best) >= _NOOP_TOL), axis=(1, 2))
  noop = jnp.all(jnp.where(signs > 0, same_plus, same_minus), axis=-1)  # [N]
  sign = jnp.where(noop[:, None], other, signs)  # [N, C]
  value = jnp.where(sign[:, None, None, :] > 0, plus, minus)
  return jnp.where(window, value, state.x_best)


def _two_windows(consts: _Consts, grid: _Grid, iteration, size_h, size_w):
  """The L2 / L1 proposal's draws: windows W1, W2 ``[N, H, W, 1]``, W1's unit bump
  ``[N, H, W, 1]`` (normalised in the grid's norm) and a sign per channel ``[N, C]``."""
  _, h, w, c = consts.x.shape
  words = _random_words(consts.seeds, iteration, 4 + _words_for(c + 1))
  top = _uniform_int(words[:, 0], h - size_h + 1)
  left = _uniform_int(words[:, 1], w - size_w + 1)
  top2 = _uniform_int(words[:, 2], h - size_h + 1)
  left2 = _uniform_int(words[:, 3], w - size_w + 1)
  bits = _sign_bits(words[:, 4:], c + 1)
  signs, transpose = bits[:, :c].astype(jnp.float32), bits[:, c] > 0
  rows, cols = _coords(grid, top, left)
  rows2, cols2 = _coords(grid, top2, left2)
  window = _inside(rows, cols, size_h, size_w)[..., None]
  window2 = _inside(rows2, cols2, size_h, size_w)[..., None]
  bump = _bump(grid, rows, cols, size_h, size_w, transpose)[..., None]
  return window, window2, bump, signs


def _propose_l2(state: SquareState, consts: _Consts, box, grid: _Grid, iteration,
                size_h, size_w) -> Array:
  """Moves the mass of windows W1 ∪ W2 into W1 (old W1 content + a ± bump), on the sphere."""
  c = consts.x.shape[-1]
  window, window2, bump, signs = _two_windows(consts, grid, iteration, size_h, size_w)
  eps = _bcast(consts.eps).astype(jnp.float32)
  delta = (state.x_best - consts.x).astype(jnp.float32)

  def channel_norm(values):  # [N, 1, 1, C]
    return jnp.sqrt(jnp.sum(jnp.square(values), axis=(1, 2), keepdims=True))

  norm_window = channel_norm(jnp.where(window, delta, 0.0))
  norm_union = channel_norm(jnp.where(window | window2, delta, 0.0))
  norm_image = jnp.sqrt(jnp.sum(jnp.square(delta), axis=(1, 2, 3), keepdims=True))
  new = bump * signs[:, None, None, :] + jnp.where(window, delta, 0.0) / (norm_window + 1e-12)
  budget = jnp.maximum(jnp.square(eps) - jnp.square(norm_image), 0.0) / c + jnp.square(
      norm_union)
  new = new / (channel_norm(new) + 1e-12) * jnp.sqrt(budget)
  delta = jnp.where(window, new, jnp.where(window2, 0.0, delta))
  x_new = consts.x + (eps * _unit_image(delta)).astype(consts.x.dtype)
  return _clip(x_new, box)


def _propose_l1(state: SquareState, consts: _Consts, box, grid: _Grid, iteration,
                size_h, size_w) -> Array:
  """L1's proposal: W1 gets its old content plus a ± bump with the budget of W1 ∪ W2."""
  c = consts.x.shape[-1]
  window, window2, bump, signs = _two_windows(consts, grid, iteration, size_h, size_w)
  eps = _bcast(consts.eps).astype(jnp.float32)
  delta = (state.x_best - consts.x).astype(jnp.float32)

  def channel_norm(values):  # [N, 1, 1, C]
    return jnp.sum(jnp.abs(values), axis=(1, 2), keepdims=True)

  norm_window = channel_norm(jnp.where(window, delta, 0.0))
  norm_union = channel_norm(jnp.where(window | window2, delta, 0.0))
  norm_image = jnp.sum(jnp.abs(delta), axis=(1, 2, 3), keepdims=True)
  new = bump * signs[:, None, None, :] + jnp.where(window, delta, 0.0) / (norm_window + 1e-12)
  # As the official L1 code: each channel's window gets the free budget plus c times its
  # share of W1 ∪ W2; the projection below brings the total back to ε.
  budget = (jnp.maximum(eps - norm_image, 0.0) / c + norm_union) * c
  new = new / (channel_norm(new) + 1e-12) * budget
  delta = jnp.where(window, new, jnp.where(window2, 0.0, delta))
  return _project_l1(consts.x + delta.astype(consts.x.dtype), consts, box)


_PROPOSALS = {math.inf: _propose_linf, 2.0: _propose_l2, 1.0: _propose_l1}


def _step(logits_fn, params, state: SquareState, consts: _Consts, box, iteration, sizes, *,
          grid: _Grid, norm: float) -> SquareState:
  """One iteration: a proposal per example still robust, kept when it lowers the loss.

  ``sizes = (rows, cols)`` of this iteration's window; ``(0, 0)`` marks an iteration
  past the budget (nothing changes, no query is counted).
  """
  size_h, size_w = sizes[0], sizes[1]
  alive = consts.valid & (state.margin >= 0) & (size_h > 0)
  size_h, size_w = jnp.maximum(size_h, 1), jnp.maximum(size_w, 1)
  propose = _PROPOSALS[norm]
  x_new = propose(state, consts, box, grid, iteration, size_h, size_w)
  margin, loss = _evaluate(logits_fn, params, x_new, consts.labels, grid)
  accept = alive & ((loss < state.loss) | (margin < 0))
  return SquareState(
      x_best=jnp.where(_bcast(accept), x_new, state.x_best),
      margin=jnp.where(accept, margin, state.margin),
      loss=jnp.where(accept, loss, state.loss),
      queries=state.queries + alive.astype(jnp.int32))


# ---------------------------------------------------------------------------------------
# Compiled pieces.

_STATIC = ('logits_fn', 'grid', 'norm')


@_common.compile_static(_STATIC)
def _init_state(params, consts: _Consts, box, *, logits_fn, grid, norm) -> SquareState:
  """The starting point of a restart, evaluated (one query per valid example)."""
  x0 = _init_point(consts, box, grid, norm)
  margin, loss = _evaluate(logits_fn, params, x0, consts.labels, grid)
  return SquareState(x0, margin, loss, consts.valid.astype(jnp.int32))


@_common.compile_static(('logits_fn', 'grid'))
def _clean(params, x, labels, *, logits_fn, grid):
  return _evaluate(logits_fn, params, x, labels, grid)


@_common.compile_static(_STATIC + ('unroll',))
def _run_chunk(params, state: SquareState, consts: _Consts, box, iterations, sizes, *,
               logits_fn, grid, norm, unroll) -> SquareState:
  """``len(iterations)`` steps, unrolled (straight-line code) or in a rolled scan."""
  if unroll:
    for t in range(iterations.shape[0]):
      state = _step(logits_fn, params, state, consts, box, iterations[t], sizes[t], grid=grid,
                    norm=norm)
    return state

  def body(carry, xs):
    return _step(logits_fn, params, carry, consts, box, xs[0], xs[1], grid=grid,
                 norm=norm), None

  state, _ = jax.lax.scan(body, state, (iterations, sizes))
  return state


@jax.jit
def _take(consts: _Consts, index, count, state: SquareState | None = None):
  """Rows ``index`` of ``consts`` (and ``state``); rows past ``count`` are padding."""
  rows = lambda a: a[jnp.minimum(index, a.shape[0] - 1)]
  sub = jax.tree_util.tree_map(rows, consts)
  sub = sub._replace(valid=sub.valid & (jnp.arange(index.shape[0]) < count))
  return sub, (None if state is None else jax.tree_util.tree_map(rows, state))


@jax.jit
def _scatter(tree, index, values):
  """Writes ``values`` back to rows ``index``; padding rows (index ``B``) are dropped."""
  return jax.tree_util.tree_map(lambda a, v: a.at[index].set(v, mode='drop'), tree, values)


@jax.jit
def _blank(consts: _Consts) -> SquareState:
  zeros = jnp.zeros(consts.valid.shape, jnp.float32)
  return SquareState(consts.x, zeros, zeros, jnp.zeros(consts.valid.shape, jnp.int32))



def _padded(rows: np.ndarray, batch_size: int) -> np.ndarray:
  """``rows`` padded with the out-of-range index ``B`` to their bucket size."""
  index = np.full((_common.bucket_size(rows.size, batch_size),), batch_size, np.int32)
  index[:rows.size] = rows
  return index


# ---------------------------------------------------------------------------------------
# Drivers: a host loop with compaction (concrete inputs) or an in-graph while loop.


def _run_host(logits_fn, params, consts, box, table, *, grid, norm, chunk, sync_every,
              unroll, on_sync=None) -> SquareState:
  """Starts the valid rows and runs the schedule ``table`` on those still robust.

  The rows being attacked live in a bucket-sized sub-batch. Every ``sync_every``
  iterations the host reads their margins (the only transfer) and stops when none is
  left; the sub-batch is re-gathered only when the rows still robust fit a smaller
  bucket (at most ``4 log2(B / 8)`` times), broken rows in between being frozen by the
  step's mask.
  """
  batch_size = consts.x.shape[0]
  queries = table.shape[0]
  full = _blank(consts)
  rows = np.flatnonzero(np.asarray(consts.valid))
  index = _padded(rows, batch_size)
  sub_consts, _ = _take(consts, index, rows.size)
  sub_state = _init_state(params, sub_consts, box, logits_fn=logits_fn, grid=grid, norm=norm)
  start = 0
  while True:
    if on_sync is not None:
      on_sync(start, _scatter(full, index, sub_state))
    alive = np.asarray(sub_state.margin)[:rows.size] >= 0
    if start >= queries or not alive.any():
      break
    if _common.bucket_size(int(alive.sum()), batch_size) < index.size:
      full = _scatter(full, index, sub_state)
      rows = rows[alive]
      index = _padded(rows, batch_size)
      sub_consts, sub_state = _take(consts, index, rows.size, full)
    stop = min(start + sync_every, queries)
    for first in range(start, stop, chunk):
      its = np.arange(first, first + chunk, dtype=np.int32)
      sizes = np.zeros((chunk, 2), np.int32)
      last = min(first + chunk, stop)
      sizes[:last - first] = table[first:last]
      sub_state = _run_chunk(params, sub_state, sub_consts, box, its, sizes,
                             logits_fn=logits_fn, grid=grid, norm=norm, unroll=unroll)
    start = stop
  return _scatter(full, index, sub_state)


def _run_traced(logits_fn, params, state, consts, box, table, *, grid, norm, chunk, unroll):
  """The same schedule in a ``lax.while_loop`` over chunks (no compaction)."""
  queries = table.shape[0]
  if not queries:
    return state
  padded = np.zeros((-(-queries // chunk) * chunk, 2), np.int32)
  padded[:queries] = table
  padded = jnp.asarray(padded)

  def cond(carry):
    first, st = carry
    return (first < queries) & jnp.any(consts.valid & (st.margin >= 0))

  def body(carry):
    first, st = carry
    its = first + jnp.arange(chunk, dtype=jnp.int32)
    sizes = jax.lax.dynamic_slice(padded, (first, 0), (chunk, 2))
    st = _run_chunk(params, st, consts, box, its, sizes, logits_fn=logits_fn, grid=grid,
                    norm=norm, unroll=unroll)
    return first + chunk, st

  _, state = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state))
  return state


def _is_traced(*trees) -> bool:
  return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def _default_chunking() -> tuple[int, int, bool]:
  """``(iterations per compiled call, iterations between syncs, unroll)``.

  XLA:CPU: one step per call (measured in :func:`square`'s docstring: as fast as longer
  chunks, and the cheapest to compile). Accelerators: a rolled 10-step scan per call,
  to amortise dispatch (not measured in this repository yet).
  """
  if jax.default_backend() == 'cpu':
    return 1, 10, True
  return 10, 20, False


def _check_bounds_shape(bounds, example_shape, view_shape):
  """Returns numpy bounds broadcast to the ``[H, W, C]`` view, or None."""
  if bounds is None:
    return None, None
  out = []
  for value in bounds:
    value = np.asarray(value, np.float64)
    try:
      ok = np.broadcast_shapes(value.shape, example_shape) == tuple(example_shape)
    except ValueError:
      ok = False
    if not ok:
      raise ValueError(f'bounds must be scalars or broadcast to one example\'s shape '
                       f'{example_shape}, got shape {value.shape}')
    if value.ndim:
      value = np.reshape(np.broadcast_to(value, example_shape), view_shape)
    out.append(value)
  return tuple(out)


def _image_view(shape: tuple) -> tuple[int, int, int]:
  """``(H, W, C)`` of the image view of inputs of ``shape = [B, ...]``."""
  if len(shape) == 4:
    return tuple(int(d) for d in shape[1:])
  if len(shape) == 3:
    return int(shape[1]), int(shape[2]), 1
  if len(shape) == 2:
    return 1, int(shape[1]), 1
  raise ValueError(f'inputs must be images [B, H, W, C] (also accepted: [B, H, W] as one '
                   f'channel, [B, D] as a one-row image of D pixels), got shape {shape}')


def run(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
        p=math.inf, queries: int = 5000, p_init: float = 0.8, restarts: int = 1,
        bounds: Bounds | None = DEFAULT_BOUNDS, loss: str = 'margin',
        chunking: tuple[int, int, bool] | None = None, on_sync=None,
        example_index=None, rescale_schedule: bool = True) -> SquareResult:
  """:func:`square_with_info` with the loop layout exposed (tests, benchmarks, ensembles).

  ``chunking = (iterations per compiled call, iterations between syncs, unroll)``;
  ``on_sync(iteration, state)`` is called at each sync with the full-batch
  :class:`SquareState`; ``example_index [B]`` replaces ``arange(B)`` in the keys of the
  random draws (an ensemble that passes a sub-batch keeps each example's draws).
  """
  p = _checks.check_supported_p(p, NORMS, 'the Square attack')
  queries = _checks.check_int(queries, 'queries')
  restarts = _checks.check_int(restarts, 'restarts', minimum=1)
  try:
    p_init = float(p_init)
  except (TypeError, ValueError):
    raise ValueError(f'p_init must be a number in (0, 1], got {p_init!r}') from None
  if not 0 < p_init <= 1:
    raise ValueError(f'p_init must be in (0, 1], got {p_init}')
  _checks.check_choice(loss, 'loss', LOSSES)
  if not isinstance(rescale_schedule, (bool, np.bool_)):
    raise ValueError(f'rescale_schedule must be True or False, got {rescale_schedule!r}')
  if rng is None:
    raise ValueError('rng must be a PRNG key (jax.random.key or PRNGKey), got None')
  bounds = _checks.check_bounds(bounds)
  inputs, labels, _ = _common.check_batch(logits_fn, params, batch)
  height, width, channels = _image_view(tuple(inputs.shape))
  batch_size = inputs.shape[0]
  _checks.check_radius(eps, batch_size)
  _checks.check_in_bounds(inputs, bounds)
  if _is_traced(bounds):
    raise ValueError('bounds must be concrete numbers for the Square attack')
  low, high = _check_bounds_shape(bounds, tuple(inputs.shape[1:]), (height, width, channels))
  chunk, sync_every, unroll = chunking or _default_chunking()
  chunk = _checks.check_int(chunk, 'chunk', minimum=1)
  sync_every = max(_checks.check_int(sync_every, 'sync_every', minimum=1) // chunk, 1) * chunk
  if batch_size == 0:
    return SquareResult(inputs, jnp.zeros((0,), jnp.float32), jnp.zeros((0,), jnp.int32))

  grid = _Grid(height, width, channels, tuple(inputs.shape[1:]), p, loss, bounds is not None)
  box = None if bounds is None else _Box(jnp.asarray(low, jnp.float32),
                                         jnp.asarray(high, jnp.float32))
  traced = _is_traced(params, inputs, labels, rng, eps)
  x = jax.lax.stop_gradient(jnp.reshape(inputs, (batch_size, height, width, channels)))
  labels = jnp.asarray(labels, jnp.int32)
  eps_b = jnp.broadcast_to(jnp.asarray(eps, x.dtype), (batch_size,))
  table = _size_table(queries, p_init, grid, p, bool(rescale_schedule))

  clean_margin, _ = _clean(params, x, labels, logits_fn=logits_fn, grid=grid)
  best_x, best_margin = x, clean_margin
  total_queries = jnp.zeros((batch_size,), jnp.int32)
  robust = clean_margin >= 0  # a tie is not misclassified: attack it
  if example_index is None:
    example_index = jnp.arange(batch_size, dtype=jnp.int32)
  elif jnp.shape(example_index) != (batch_size,):
    raise ValueError(f'example_index must have shape [B] = ({batch_size},), got '
                     f'{jnp.shape(example_index)}')
  for restart in range(restarts):
    seeds = _seeds(rng, restart, jnp.asarray(example_index, jnp.int32))
    consts = _Consts(x, labels, eps_b, seeds, robust)
    if traced:
      state = _init_state(params, consts, box, logits_fn=logits_fn, grid=grid, norm=p)
      state = _run_traced(logits_fn, params, state, consts, box, table, grid=grid, norm=p,
                          chunk=chunk, unroll=unroll)
    else:
      if not np.any(np.asarray(robust)):
        break
      state = _run_host(logits_fn, params, consts, box, table, grid=grid, norm=p, chunk=chunk,
                        sync_every=sync_every, unroll=unroll, on_sync=on_sync)
    best_x, best_margin, total_queries, robust = _merge(best_x, best_margin, total_queries,
                                                        robust, state)
  x_adv = jnp.reshape(best_x, inputs.shape)
  return SquareResult(jax.lax.stop_gradient(x_adv), best_margin, total_queries)


@jax.jit
def _seeds(rng, restart, example_index):
  """``[B, 2]`` uint32 seeds of a restart, one pair per example index."""
  key = jax.random.fold_in(rng, restart)
  return jax.vmap(lambda i: jax.random.bits(jax.random.fold_in(key, i), (2,), jnp.uint32))(
      example_index)


@jax.jit
def _merge(best_x, best_margin, total_queries, robust, state: SquareState):
  """Keeps a restart's point where it lowered the margin of an attacked example."""
  better = robust & (state.margin < best_margin)
  return (jnp.where(_bcast(better), state.x_best, best_x),
          jnp.where(better, state.margin, best_margin),
          total_queries + jnp.where(robust, state.queries, 0),
          robust & (state.margin >= 0))


def square_with_info(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
                     eps, p=math.inf, queries: int = 5000, p_init: float = 0.8,
                     restarts: int = 1, bounds: Bounds | None = DEFAULT_BOUNDS,
                     loss: str = 'margin', rescale_schedule: bool = True) -> SquareResult:
  """:func:`square`, also returning the margin at each point and the queries spent.

  Returns:
    :class:`SquareResult` ``(inputs [B, ...], margin [B], queries [B])``: ``queries``
    counts the forward passes spent on each example over all restarts (the initial
    point and one per iteration while the example is still classified correctly; 0 for
    examples misclassified when clean, which are not attacked).
  """
  return run(logits_fn, params, batch, rng=rng, eps=eps, p=p, queries=queries,
             p_init=p_init, restarts=restarts, bounds=bounds, loss=loss,
             rescale_schedule=rescale_schedule)


def square(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
           p=math.inf, queries: int = 5000, p_init: float = 0.8, restarts: int = 1,
           bounds: Bounds | None = DEFAULT_BOUNDS, loss: str = 'margin',
           rescale_schedule: bool = True) -> Array:
  """Square Attack: untargeted random search with forward passes only (L∞, L2 or L1).

  Per restart, each example still classified correctly starts at the norm's initial
  point and runs ``queries`` iterations; every iteration proposes a change in a random
  window covering a fraction :func:`p_selection` of the pixels and keeps it when the loss
  decreases or the example becomes misclassified. Examples stop (and cost nothing more)
  once misclassified, i.e. at a margin ``z_y − max_{j≠y} z_j < 0`` (a tie is attacked
  further); later restarts run only on the examples still robust.

  Input shapes: images are ``[B, H, W, C]`` (channels last). ``[B, H, W]`` is treated
  as one channel and ``[B, D]`` as a one-row image of ``D`` pixels, whose windows are
  strips of about ``p·D`` consecutive coordinates; ``logits_fn`` always receives the
  caller's shape. Other ranks raise ``ValueError`` naming ``inputs``.

  Cost and layout: at most ``restarts · (queries + 1)`` forward passes per example, plus
  one clean pass for the batch. The steps run in compiled calls on a sub-batch of the
  examples still robust (size ``B`` or a bucket under 25% above their count); every 10
  iterations the host reads its margins, stops when all are broken, and re-gathers the
  sub-batch when the survivors fit a smaller size, so broken examples stop costing
  compute. Called under ``jax.jit`` (traced inputs), the steps run in a
  ``lax.while_loop`` on the whole batch instead, with the same results: every random
  draw is keyed by ``(rng, restart, example index, iteration)``.

  Measured with ``experiments/benchmarks/square_speed.py`` (XLA:CPU, a shared 2-core
  machine, L∞, medians of interleaved repeats): one iteration on SOAR's 4-layer CNN,
  ``[128, 32, 32, 3]``, costs 1.02 bare forward passes of the batch with one step per
  compiled call (462 queries/s against 475 for bare forward passes), 1.08 with 10
  unrolled steps per call and 0.94 with a rolled 10-step ``lax.scan`` (run-to-run noise
  about ±0.1; an earlier run gave 1.06 / 1.46 / 1.20); on the digits CNN, ``[128, 8,
  8, 1]``, 0.80-0.82 for all layouts. Unrolled chunks compile 5-15 s against ~1 s, so
  XLA:CPU runs one step per call (unlike gradient loops, forward-only scans were not
  slower here); accelerators run a rolled 10-step scan per call. Re-gathering the rows at
  every sync instead (the first version) cost 1.32 forward passes per iteration on the
  digits CNN.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``; only called forward.
    params: model parameters.
    batch: ``(inputs [B, H, W, C] floats in the box, labels [B] int in [0, K))``.
    rng: PRNG key; the result is a deterministic function of it.
    eps: radius, scalar or ``[B]``, ``>= 0``.
    p: ``float('inf')``, ``2`` or ``1``.
    queries: iterations per restart (``>= 0``), after the initial point.
    p_init: initial fraction of pixels in a window, ``(0, 1]`` (0.8 in AutoAttack).
    restarts: runs from fresh random starts on the examples still robust (``>= 1``).
    bounds: input box ``(low, high)`` (scalars or arrays broadcasting to one example's
      shape) or None.
    loss: ``'margin'`` (``z_y − max_{j≠y} z_j``, AutoAttack's) or ``'ce'``: the
      objective whose decrease accepts a proposal.
    rescale_schedule: True (the official ``SquareAttack`` default) rescales the window
      schedule to ``queries`` iterations; False follows the raw iteration count, as
      AutoAttack's Square (:func:`p_selection`).

  Returns:
    ``x_adv [B, ...]`` in ``ball(inputs, eps) ∩ box``, without gradient: per example the
    adversarial point found, else the point of smallest margin over all restarts, and
    ``inputs`` itself for examples misclassified when clean.

  Raises:
    ValueError (before anything compiles): ``p`` not 1, 2 or inf; ``eps < 0`` or not scalar
      / ``[B]``; ``queries < 0``; ``restarts < 1``; ``p_init`` outside ``(0, 1]``;
      unknown ``loss``; ``rng`` None; bad ``bounds``; inputs not floats, of another
      rank, or outside ``bounds``; labels not ``[B]`` in ``[0, K)``; ``logits_fn`` not
      returning ``[B, K]``.
  """
  return square_with_info(logits_fn, params, batch, rng=rng, eps=eps, p=p, queries=queries,
                          p_init=p_init, restarts=restarts, bounds=bounds, loss=loss,
                          rescale_schedule=rescale_schedule).inputs
