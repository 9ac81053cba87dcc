"""FAB: the fast adaptive boundary attack (Croce & Hein, ICML 2020), as used by AutoAttack.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020. Each step linearises the decision boundary between the label ``y`` and
one class ``k`` at the current iterate ``x_i``,

  ``f(z) ≈ f(x_i) + <∇f(x_i), z − x_i>``,  ``f = z_k − z_y``,

and projects both ``x_i`` and the clean ``x`` onto that hyperplane intersected with the
input box (:func:`project_hyperplane_box`: exact for L∞, L2 and L1), giving
``δ_i`` and ``δ_orig``. The next iterate is a biased convex combination of the two
extrapolated projections,

  ``x_{i+1} = clip((1 − α)(x_i + η δ_i) + α(x + η δ_orig))``,
  ``α = min(‖δ_i‖ / (‖δ_i‖ + ‖δ_orig‖), α_max)``,

which pulls the iterate toward ``x``. When ``x_{i+1}`` is misclassified it is recorded if
it is closer to ``x`` than the best so far, and the iterate steps back to
``x + β(x_{i+1} − x)``. Untargeted FAB picks, per step, the class ``k ≠ y`` whose
linearised boundary is closest in the attack norm, ``|f_k| / ‖∇f_k‖_q`` (q the dual
exponent): this needs the Jacobian of all K logits (K backward passes sharing one forward
pass). Targeted FAB (FAB-T) fixes ``k`` to a target class and needs one backward pass per
step; it runs once per target, the ``num_targets`` classes with the largest clean logits
other than ``y``, all targets vectorised in one batch ``num_targets`` times larger.

Restart 0 starts at ``x``; restart ``r > 0`` starts at a random point on the Lp sphere of
radius ``min(best norm so far, eps) / 2`` around ``x`` (clipped to the box), as the
original FAB code; per example the smallest adversarial perturbation over restarts (and
targets) is kept.

:func:`fab_min_norm` returns those minimal points and their norms whatever ``eps``;
:func:`fab` and :func:`fab_targeted` (AutoAttack's ``'fab'`` and ``'fab-t'``) return the
point only where its norm is ``<= eps`` and the clean ``x`` elsewhere, so their output
always lies in ``ball(x, eps) ∩ box``. An example misclassified when clean has norm 0
and comes back as ``x``.

Cost (``experiments/benchmarks/fab_speed.py``, XLA:CPU, batch 128 of 32x32x3): a FAB-T
step is one backward pass plus the forward pass that checks the new iterate, 1.1 input
gradients on a small CNN (loop unrolled, as ``unroll='auto'`` does there) and 1.9 on an
MLP, where the two projections of ``[2B, 3072]`` rows weigh more; an untargeted step on
the MLP costs 5.7 gradients (K = 10). ``experiments/benchmarks/fab_vs_official.py``
compares the projections and the minimal norms with the official code.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax.attacks._src import common as _common
from robustjax.attacks._src import loop
from robustjax.types import (
    Array, Batch, Bounds, DEFAULT_BOUNDS, Labels, LogitsFn, Params, PRNGKey)

SUPPORTED_P = (1.0, 2.0, math.inf)

_TINY_DIST = 1e-12  # official FAB's guard in |f| / (‖∇f‖_q + tiny)
_TINY_NORM = 1e-8  # floor on ‖δ‖ in the bias α
_STEP_CHUNK = 5  # fully unrolled steps per compiled call


class FABState(NamedTuple):
  """Carry of the FAB step loop (N = batch rows, e.g. B or targets·B)."""
  x: Array  # [N, n] current iterate, flattened
  best_x: Array  # [N, n] smallest adversarial point found (the clean x where none)
  best_norm: Array  # [N] its Lp distance to x; inf where none found, 0 if x misclassified


# ----------------------------------------------------------------------------------------
# Projection onto {z : <w, z> = b} ∩ box.
#
# Both solvers are exact and sort-free: XLA:CPU sorts float rows several times slower
# than an input gradient of a small model (a [256, 3072] argsort took ~8 MLP gradients),
# while the loops below touch each row a handful of times (see fab_speed.py).


def _water_fill(a: Array, s: Array, cap: Array, c: Array) -> tuple[Array, Array]:
  """Solves ``Σ a_i min(μ s_i, cap_i) = c`` for ``μ >= 0`` and returns ``min(μ s, cap)``.

  ``a, s >= 0``, ``cap >= 0`` (may be inf), ``c >= 0``, rows ``[N, n]`` (``c`` [N]).
  The left side ``g(μ)`` is concave, nondecreasing and piecewise linear with breakpoints
  ``τ_i = cap_i / s_i``. Newton's method from ``μ = 0`` never overshoots a concave
  function and passes at least one breakpoint per step, so it ends on the piece holding
  ``c`` after at most ``n`` steps (2-10 in practice); once a step saturates no new
  coordinate, the piece's closed form ``μ = (c − Σ_sat a cap) / Σ_free a s`` is exact.
  Coordinates with ``a_i = 0`` stay 0.

  Returns:
    ``(e [N, n], feasible [N])``; infeasible rows (``Σ a cap < c``) get ``e = cap``.
  """
  active = a > 0
  tau = jnp.where(active, cap / jnp.where(s > 0, s, 1.0), jnp.inf)
  finite = tau < jnp.inf
  a_cap = jnp.where(active & finite, a * jnp.where(finite, cap, 0.0), 0.0)
  a_s = jnp.where(active, a * s, 0.0)
  unbounded = jnp.any(active & ~finite, axis=1)
  feasible = unbounded | (jnp.sum(a_cap, axis=1) >= c)

  def newton(mu):  # the Newton step from μ is the closed form on μ's piece
    saturated = tau <= mu[:, None]
    slope = jnp.sum(jnp.where(saturated, 0.0, a_s), axis=1)
    reach = c - jnp.sum(jnp.where(saturated, a_cap, 0.0), axis=1)
    return jnp.where(slope > 0, jnp.maximum(reach, 0.0) / jnp.where(slope > 0, slope, 1.0),
                     jnp.inf)

  def body(carry):
    # A row is done once a step saturates no new coordinate (the count of saturated
    # coordinates rises strictly until then, so the loop ends within n + 1 steps).
    mu, done, count = carry
    mu_next = newton(mu)
    count_next = jnp.sum(tau <= mu_next[:, None], axis=1)
    mu = jnp.where(done, mu, mu_next)
    return mu, done | (count_next <= count), jnp.where(done, count, count_next)

  def cond(carry):
    return ~jnp.all(carry[1])

  mu0 = jnp.zeros_like(c)
  count0 = jnp.sum(tau <= 0.0, axis=1)
  mu, _, _ = jax.lax.while_loop(cond, body, (mu0, ~feasible, count0))
  e = jnp.where(tau <= mu[:, None], cap, mu[:, None] * s)
  e = jnp.where(feasible[:, None], e, cap)
  return jnp.where(active, e, 0.0), feasible


def _greedy_l1(a: Array, cap: Array, c: Array) -> tuple[Array, Array]:
  """Minimises ``Σ e_i`` s.t. ``Σ a_i e_i = c``, ``0 <= e <= cap`` (a fractional
  knapsack): coordinates with the largest ``a`` (progress per unit of L1 norm) fill first.

  The threshold ``θ``, the largest ``a_i`` with ``Σ_{a_j >= θ} a_j cap_j >= c``, is found
  exactly by bisection on the bit patterns of ``a >= 0`` (monotone as int32; 31 steps);
  coordinates above it saturate and the tie group at ``θ`` shares the rest in proportion
  to its caps (every such split costs the same L1 norm).

  Returns:
    ``(e [N, n], feasible [N])``; infeasible rows get ``e = cap`` where ``a > 0``.
  """
  active = a > 0
  finite = cap < jnp.inf
  a_cap = jnp.where(active, a * cap, 0.0)
  feasible = jnp.sum(a_cap, axis=1) >= c
  # float32 bit patterns whatever the dtype (int32 exists without x64); values equal in
  # float32 then form one tie group.
  bits = jax.lax.bitcast_convert_type(a.astype(jnp.float32), jnp.int32)

  def reach_from(theta):  # Σ_{a_j >= θ} a_j cap_j
    return jnp.sum(jnp.where(active & (bits >= theta[:, None]), a_cap, 0.0), axis=1)

  def bisect(_, bracket):
    lo, hi = bracket
    mid = lo + (hi - lo) // 2
    ok = reach_from(mid) >= c
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo = jnp.ones(c.shape, jnp.int32)  # the smallest positive float: every active a
  hi = jnp.max(bits, axis=1) + 1
  lo, _ = jax.lax.fori_loop(0, 31, bisect, (lo, hi))
  above = active & (bits > lo[:, None])
  tie = active & (bits == lo[:, None])
  rest = jnp.maximum(c - jnp.sum(jnp.where(above, a_cap, 0.0), axis=1), 0.0)
  # The tie group reaches the rest, shared by cap (or equally among uncapped members when
  # there is no box): e_i = rest·weight_i / Σ a weight, within the caps by the choice of θ.
  uncapped = tie & ~finite
  weight = jnp.where(jnp.any(uncapped, axis=1, keepdims=True), uncapped.astype(a.dtype),
                     jnp.where(tie, jnp.where(finite, cap, 0.0), 0.0))
  total = jnp.sum(a * weight, axis=1, keepdims=True)
  share = rest[:, None] * weight / jnp.where(total > 0, total, 1.0)
  e = jnp.where(above, cap, jnp.where(tie, jnp.minimum(share, cap), 0.0))
  e = jnp.where(feasible[:, None], e, cap)
  return jnp.where(active, e, 0.0), feasible


def project_hyperplane_box(points: Array, w: Array, b: Array, p: float,
                           bounds: Bounds | None = DEFAULT_BOUNDS) -> Array:
  """Minimal-Lp step from ``points`` onto the hyperplane ``<w, z> = b`` inside the box.

  Solves, per row, ``min ‖d‖_p`` s.t. ``<w, t + d> = b`` and ``low <= t + d <= high``
  exactly for p in {1, 2, inf}. Only moves that bring ``<w, t + d>`` toward ``b`` help, so
  coordinate i moves by ``e_i ∈ [0, cap_i]`` (its room to the box face in that direction)
  and the problem becomes ``min ‖e‖_p`` s.t. ``Σ |w_i| e_i = |b − <w, t>|``:

  - L∞: ``e_i = min(λ, cap_i)``; L2 (KKT): ``e_i = min(μ |w_i|, cap_i)``; the scalar
    found exactly by Newton steps over the breakpoints (:func:`_water_fill`);
  - L1 (an LP): fill the coordinates with the largest ``|w_i|`` first, each up to its cap
    (:func:`_greedy_l1`).

  When the hyperplane misses the box, the step goes to the box corner nearest to it
  (every useful coordinate at its face; as the official FAB code). Coordinates with
  ``w_i = 0`` never move.

  Args:
    points: ``[N, n]`` points ``t`` (inside the box).
    w: ``[N, n]`` normals.
    b: ``[N]`` offsets.
    p: 1, 2 or inf.
    bounds: ``(low, high)`` box or None (unbounded).

  Returns:
    ``d [N, n]``.
  """
  p = _check_p(p)
  c = b - jnp.sum(w * points, axis=1)
  direction = jnp.sign(w) * jnp.where(c >= 0, 1.0, -1.0)[:, None]  # useful move
  a = jnp.abs(w)
  c = jnp.abs(c)
  if bounds is None:
    cap = jnp.full_like(points, jnp.inf)
  else:
    low, high = bounds
    cap = jnp.maximum(jnp.where(direction > 0, high - points, points - low), 0.0)
  if p == 1:
    e, _ = _greedy_l1(a, cap, c)
  else:
    e, _ = _water_fill(a, a if p == 2 else jnp.ones_like(a), cap, c)
  return direction * e


# ----------------------------------------------------------------------------------------
# The attack.


def _check_p(p) -> float:
  return _checks.check_supported_p(p, SUPPORTED_P,
                                   'FAB (the exact hyperplane-box projections)')


def _rows_norm(x: Array, p: float) -> Array:
  """Lp norm over the last axis."""
  if math.isinf(p):
    return jnp.max(jnp.abs(x), axis=-1)
  if p == 1:
    return jnp.sum(jnp.abs(x), axis=-1)
  return jnp.sqrt(jnp.sum(x * x, axis=-1))


def _linearised_boundary(logits_fn, params, x: Array, shape, labels: Labels,
                         targets: Labels | None, num_classes: int, p: float):
  """``(f [N], ∇f [N, n], logits [N, K])`` of the boundary FAB steps toward at ``x``.

  Targeted: ``f = z_t − z_y`` (one backward pass). Untargeted: the class ``k ≠ y`` with the
  smallest linearised distance ``|z_k − z_y| / ‖∇(z_k − z_y)‖_q`` (K backward passes).
  """

  def model(flat):
    return logits_fn(params, jnp.reshape(flat, shape))

  rows = jnp.arange(x.shape[0])
  if targets is not None:

    def margin(flat):
      z = model(flat)
      return jnp.sum(z[rows, targets] - z[rows, labels]), z

    grad, z = jax.grad(margin, has_aux=True)(x)
    return z[rows, targets] - z[rows, labels], grad, z
  z, vjp = jax.vjp(model, x)
  eye = jnp.eye(num_classes, dtype=z.dtype)
  cotangents = eye[:, None, :] - eye[labels][None, :, :]  # [K, N, K]: e_k − e_y
  (grads,) = jax.vmap(vjp)(cotangents)  # [K, N, n]: ∇(z_k − z_y)
  diffs = z - z[rows, labels][:, None]  # [N, K]
  dual = geometry.dual_exponent(p)
  dist = jnp.abs(diffs) / (_rows_norm(jnp.swapaxes(grads, 0, 1), dual) + _TINY_DIST)
  dist = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), jnp.inf, dist)
  closest = jnp.argmin(dist, axis=1)
  return diffs[rows, closest], grads[closest, rows], z


def _random_sphere(rng: PRNGKey, shape, radius: Array, p: float, dtype) -> Array:
  """Points ``[N, n]`` with ``‖·‖_p = radius`` (official FAB restarts)."""
  if math.isinf(p):
    t = jax.random.uniform(rng, shape, dtype, -1.0, 1.0)
  else:
    t = jax.random.normal(rng, shape, dtype)
  size = _rows_norm(t, p)
  return t * (radius / jnp.where(size > 0, size, 1.0))[:, None]


def _rows(params, inputs, labels, eps, *, logits_fn, num_classes, num_targets):
  """The rows FAB runs on: ``(x0 [N, n], labels [N], targets [N] or None, eps [N],
  misclassified [N])``, N = B untargeted or ``num_targets·B`` (target-major) targeted."""
  batch_size = inputs.shape[0]
  x0 = jnp.reshape(inputs, (batch_size, -1))
  clean = logits_fn(params, inputs)
  eps = jnp.broadcast_to(jnp.asarray(eps, x0.dtype), (batch_size,))
  misclassified = jnp.argmax(clean, axis=1) != labels
  if not num_targets:
    return x0, labels, None, eps, misclassified
  others = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, clean)
  targets = jnp.swapaxes(jax.lax.top_k(others, num_targets)[1], 0, 1)  # [T, B]
  tile = lambda v: jnp.tile(v, (num_targets,) + (1,) * (v.ndim - 1))
  return (tile(x0), tile(labels), jnp.reshape(targets, (-1,)), tile(eps),
          tile(misclassified))


_ROWS_STATIC = ('logits_fn', 'num_classes', 'num_targets')


@_common.compile_static(_ROWS_STATIC)
def _fab_init(params, inputs, labels, eps, *, logits_fn, num_classes, num_targets):
  """The rows ``(x0, labels, targets, eps)`` (see :func:`_rows`) and the state before any
  step, ``best_x = x0`` and ``best_norm`` (0 where x is misclassified, else inf)."""
  x0, labels, targets, eps, misclassified = _rows(
      params, inputs, labels, eps, logits_fn=logits_fn, num_classes=num_classes,
      num_targets=num_targets)
  return (x0, labels, targets, eps), x0, jnp.where(misclassified, 0.0, jnp.inf).astype(x0.dtype)


def _clip(x, bounds):
  return x if bounds is None else jnp.clip(x, bounds[0], bounds[1])


@_common.compile_static(('p',))
def _fab_start(x0, eps, rng, bounds, restart, best_norm, *, p):
  """The first iterate ``[N, n]`` of restart ``restart`` (a traced int: one compilation).

  Restart 0 starts at x; restart ``r > 0`` at ``x + δ``, ``‖δ‖_p = min(best_norm, eps) / 2``
  (0 when both are inf), ``δ`` from ``fold_in(rng, r)``, clipped to the box.
  """
  radius = jnp.minimum(best_norm, eps) / 2
  radius = jnp.where(jnp.isfinite(radius), radius, 0.0)
  shifted = _clip(x0 + _random_sphere(jax.random.fold_in(rng, restart), x0.shape, radius, p,
                                      x0.dtype), bounds)
  return jnp.where(restart > 0, shifted, x0)


@_common.compile_static(('logits_fn', 'num_classes', 'shape', 'p', 'steps', 'unroll'))
def _fab_steps(params, x0, labels, targets, bounds, alpha_max, eta, beta, x, best_x,
               best_norm, *, logits_fn, num_classes, shape, p, steps, unroll):
  """``steps`` FAB steps from the iterate ``x [N, n]``: ``(x, best_x, best_norm)`` after.

  ``shape`` is the rows' input shape ``[N, ...]``; ``unroll`` an int or True.
  """
  rows_shape = shape
  alpha_max, eta, beta = (jnp.asarray(v, x0.dtype) for v in (alpha_max, eta, beta))

  clip = functools.partial(_clip, bounds=bounds)

  def step(state: FABState, _):
    f, g, _ = _linearised_boundary(logits_fn, params, state.x, rows_shape, labels, targets,
                                   num_classes, p)
    offset = jnp.sum(g * state.x, axis=1) - f  # hyperplane <g, z> = offset
    d = project_hyperplane_box(jnp.concatenate([state.x, x0]), jnp.concatenate([g, g]),
                               jnp.concatenate([offset, offset]), p, bounds)
    d_here, d_orig = jnp.split(d, 2)
    n_here = jnp.maximum(_rows_norm(d_here, p), _TINY_NORM)
    n_orig = jnp.maximum(_rows_norm(d_orig, p), _TINY_NORM)
    alpha = jnp.minimum(n_here / (n_here + n_orig), alpha_max)[:, None]
    x_new = clip((1 - alpha) * (state.x + eta * d_here) + alpha * (x0 + eta * d_orig))
    z_new = logits_fn(params, jnp.reshape(x_new, rows_shape))
    adversarial = jnp.argmax(z_new, axis=1) != labels
    dist = _rows_norm(x_new - x0, p)
    better = adversarial & (dist < state.best_norm)
    best_x = jnp.where(better[:, None], x_new, state.best_x)
    best_norm = jnp.where(better, dist, state.best_norm)
    x_next = jnp.where(adversarial[:, None], x0 + beta * (x_new - x0), x_new)
    return FABState(jax.lax.stop_gradient(x_next), best_x, best_norm), None

  state = FABState(x, best_x, best_norm)
  unroll_n = steps if unroll is True else max(int(unroll), 1)
  if steps and unroll_n >= steps:
    for _ in range(steps):  # straight-line steps
      state, _ = step(state, None)
  elif steps:
    state, _ = jax.lax.scan(step, state, None, length=steps, unroll=unroll_n)
  return tuple(jax.lax.stop_gradient(v) for v in state)


@_common.compile_static(('shape', 'num_targets'))
def _best_over_targets(best_x, best_norm, *, shape, num_targets):
  """``(x [B, ...], norm [B])``: per example the smallest norm over the target rows."""
  batch_size = shape[0]
  if num_targets:
    best_norm = jnp.reshape(best_norm, (num_targets, batch_size))
    pick = jnp.argmin(best_norm, axis=0)
    cols = jnp.arange(batch_size)
    best_x = jnp.reshape(best_x, (num_targets, batch_size, -1))[pick, cols]
    best_norm = best_norm[pick, cols]
  return jnp.reshape(best_x, shape), best_norm


def _validate(logits_fn, params, batch, eps, p, steps, restarts, alpha_max, eta, beta,
              bounds, num_targets):
  p = _check_p(p)
  steps = _checks.check_int(steps, 'steps')
  restarts = _checks.check_int(restarts, 'restarts', minimum=1)
  if num_targets is not None:
    num_targets = _checks.check_int(num_targets, 'num_targets', minimum=1)
  for value, name, low, high in ((alpha_max, 'alpha_max', 0.0, 1.0),
                                 (beta, 'beta', 0.0, 1.0), (eta, 'eta', 1.0, math.inf)):
    try:
      ok = low <= float(value) <= high
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f'{name} must be a number in [{low}, {high}], got {value!r}')
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  _checks.check_radius(eps, inputs.shape[0])
  _checks.check_in_bounds(inputs, bounds)
  if num_targets is not None:
    num_targets = min(num_targets, num_classes - 1)
  return p, steps, restarts, bounds, inputs, labels, num_classes, num_targets


def fab_min_norm(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
                 p: float = math.inf, steps: int = 100, restarts: int = 1,
                 targeted: bool = False, num_targets: int = 9, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, bounds: Bounds | None = DEFAULT_BOUNDS,
                 unroll: int | bool | str = 'auto') -> tuple[Array, Array]:
  """FAB's minimally distorted adversarial points and their norms, whatever ``eps``.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...] in the box, labels [B] int in [0, K))``.
    rng: key for the random starts of restarts ``r > 0`` (``fold_in(rng, r)``).
    eps: scalar or ``[B]``, ``>= 0``: caps the random-start radius of restarts,
      ``min(best norm so far, eps) / 2`` (a restart with neither starts at ``x``).
    p: 1, 2 or inf.
    steps: FAB iterations per restart (and target).
    restarts: runs per target (``>= 1``); restart 0 starts at ``x``.
    targeted: FAB-T (one run per target class) instead of untargeted FAB.
    num_targets: targets of FAB-T, the classes ``≠ y`` with the largest clean logits;
      capped at K − 1.
    alpha_max: the largest bias ``α`` toward the clean point, in [0, 1].
    eta: extrapolation of the projection steps, ``>= 1``.
    beta: backward step ``x + β(x_adv − x)`` after a misclassified iterate, in [0, 1].
    bounds: input box ``(low, high)`` or None.
    unroll: ``lax.scan`` unrolling of the step loop, as
      :func:`robustjax.attacks.pgd` (``'auto'``: fully unrolled on XLA:CPU for models
      with convolutions). Full unrolling runs compiled chunks of 5 steps from a host
      loop (bounded memory, one compilation), inlined under an outer ``jit``.

  Returns:
    ``(x_adv [B, ...], norms [B])``: per example the misclassified point of smallest
    ``‖x_adv − x‖_p`` found and that norm; ``x`` and ``inf`` where none was found; ``x``
    and 0 where ``x`` itself is misclassified. No gradient flows through them.

  Raises:
    ValueError: ``p`` not in {1, 2, inf}, negative ``eps``, bad ``steps``, ``restarts``,
      ``num_targets``, ``alpha_max``, ``eta``, ``beta`` or ``bounds``, inputs outside the
      box, or a batch that does not match the model.
  """
  p, steps, restarts, bounds, inputs, labels, num_classes, num_targets = _validate(
      logits_fn, params, batch, eps, p, steps, restarts, alpha_max, eta, beta, bounds,
      num_targets if targeted else None)
  labels = jnp.asarray(labels, jnp.int32)
  (x0, labels, targets, eps_rows), best_x, best_norm = _fab_init(
      params, inputs, labels, eps, logits_fn=logits_fn, num_classes=num_classes,
      num_targets=num_targets or 0)
  if unroll == 'auto':
    unroll = loop.auto_unroll(lambda v: jnp.sum(logits_fn(params, v), axis=1), inputs)
  unroll = unroll if unroll is True else max(int(unroll), 1)
  if steps and (unroll is True or unroll >= steps):
    # Fully unrolled (XLA:CPU runs convolutions inside a loop several times slower), in
    # compiled chunks of at most _STEP_CHUNK steps: XLA:CPU keeps every unrolled step's
    # buffers alive (untargeted FAB on a small CNN grew 0.37 GB per step at batch 32), and
    # one chunk compiles once for all.
    chunks = [_STEP_CHUNK] * (steps // _STEP_CHUNK) + [steps % _STEP_CHUNK] * bool(
        steps % _STEP_CHUNK)
    unroll = True
  else:
    chunks = [steps] if steps else []
  rows_shape = (x0.shape[0],) + tuple(inputs.shape[1:])
  # Restarts and chunks loop here, calls of the same compiled programs (inlined under an
  # outer jit); the state stays on the device.
  for r in range(restarts):
    x = _fab_start(x0, eps_rows, rng, bounds, jnp.asarray(r, jnp.int32), best_norm, p=p)
    for chunk in chunks:
      x, best_x, best_norm = _fab_steps(
          params, x0, labels, targets, bounds, alpha_max, eta, beta, x, best_x, best_norm,
          logits_fn=logits_fn, num_classes=num_classes, shape=rows_shape, p=p, steps=chunk,
          unroll=unroll)
  return _best_over_targets(best_x, best_norm, shape=tuple(inputs.shape),
                            num_targets=num_targets or 0)


def _within_eps(inputs: Array, x_adv: Array, norms: Array, eps) -> Array:
  inside = norms <= jnp.asarray(eps, norms.dtype)
  inside = jnp.reshape(inside, (-1,) + (1,) * (inputs.ndim - 1))
  return jax.lax.stop_gradient(jnp.where(inside, x_adv, inputs))


def fab(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
        p: float = math.inf, steps: int = 100, restarts: int = 1, alpha_max: float = 0.1,
        eta: float = 1.05, beta: float = 0.9, bounds: Bounds | None = DEFAULT_BOUNDS,
        unroll: int | bool | str = 'auto') -> Array:
  """Untargeted FAB (AutoAttack's ``'fab'``, 5 restarts in its ``'plus'`` version).

  Runs :func:`fab_min_norm` and keeps, per example, the smallest adversarial point found
  if its Lp norm is ``<= eps``, else the clean ``x`` (AutoAttack counts only points within
  ``eps``). Each step costs one forward pass plus the Jacobian of the K logits (K backward
  passes) and a forward pass at the new iterate.

  Args:
    logits_fn, params, batch, rng, p, steps, restarts, alpha_max, eta, beta, bounds,
      unroll: as :func:`fab_min_norm`.
    eps: radius, scalar or ``[B]``, ``>= 0``; also caps the restart radius.

  Returns:
    ``x_adv [B, ...]`` in ``ball(x, eps) ∩ box``, without gradient.
  """
  x_adv, norms = fab_min_norm(logits_fn, params, batch, rng=rng, eps=eps, p=p, steps=steps,
                              restarts=restarts, targeted=False, alpha_max=alpha_max,
                              eta=eta, beta=beta, bounds=bounds, unroll=unroll)
  return _within_eps(batch[0], x_adv, norms, eps)


def fab_targeted(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
                 p: float = math.inf, steps: int = 100, num_targets: int = 9,
                 restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05,
                 beta: float = 0.9, bounds: Bounds | None = DEFAULT_BOUNDS,
                 unroll: int | bool | str = 'auto') -> Array:
  """Targeted FAB, FAB-T (AutoAttack's ``'fab-t'``): one run per target class.

  The targets are the ``num_targets`` classes other than ``y`` with the largest clean
  logits (capped at K − 1); every step moves toward the linearised boundary
  ``z_t = z_y`` (one backward pass) and any misclassification counts. The runs are
  vectorised over targets (memory grows ``num_targets``-fold). Per example, the smallest
  adversarial point over targets is returned if its Lp norm is ``<= eps``, else ``x``.

  Args:
    logits_fn, params, batch, rng, p, steps, restarts, alpha_max, eta, beta, bounds,
      unroll: as :func:`fab_min_norm`.
    eps: radius, scalar or ``[B]``, ``>= 0``; also caps the restart radius.
    num_targets: number of target classes (``>= 1``, default 9 as AutoAttack).

  Returns:
    ``x_adv [B, ...]`` in ``ball(x, eps) ∩ box``, without gradient.
  """
  x_adv, norms = fab_min_norm(logits_fn, params, batch, rng=rng, eps=eps, p=p, steps=steps,
                              restarts=restarts, targeted=True, num_targets=num_targets,
                              alpha_max=alpha_max, eta=eta, beta=beta, bounds=bounds,
                              unroll=unroll)
  return _within_eps(batch[0], x_adv, norms, eps)
