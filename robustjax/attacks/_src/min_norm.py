"""Minimal-norm attacks: per example, the smallest perturbation that reaches a goal.

These feed the accuracy-robustness area (ARA) metrics of Woods et al. (sec. III-A1/2):
``goal='adv'`` is their ``g_adv`` (eq. 2, the top-1 label changes: attack ARA) and
``goal='btr'`` their ``g_btr`` (eq. 4, the true-class probability falls below the
random-classifier level ``1/K``: BTR ARA). Woods et al. measure perturbations by RMSE,
``||δ||_2 / sqrt(d)`` with ``d`` the number of input features; the functions here return
Lp norms, so divide the L2 norms by ``sqrt(d)`` for their scale.

:func:`min_norm` bisects on the radius with PGD inside (any p; multi-targeted runs for
``2 < K <= 10`` classes, so it finds the nearest boundary); :func:`min_norm_ticktock` is
the paper's Algorithm 1 (L2 only).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax import losses
from robustjax.attacks._src import common as _common
from robustjax.attacks._src import loop
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey

GOALS = ('adv', 'btr')
INNERS = ('auto', 'multi_targeted', 'pgd')
MULTI_TARGETED_MAX_CLASSES = 10  # inner='auto' uses multi-targeted runs for 2 < K <= this


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def goal_objective(logits: Array, labels: Array, goal: str) -> Array:
  """A per-example value ``[B]`` that is ``> 0`` exactly where ``goal`` is reached.

  ``'adv'`` (Woods eq. 2): ``max_{j≠y} z_j − z_y``, positive when misclassified.
  ``'btr'`` (Woods eq. 4): ``−log p_y − log K``, positive when ``p_y < 1/K``.
  Both increase as the attack succeeds, so PGD maximises them.
  """
  _checks.check_choice(goal, 'goal', GOALS)
  if goal == 'adv':
    return -losses.margin(logits, labels)
  return losses.cross_entropy(logits, labels) - math.log(logits.shape[-1])


class BisectionState(NamedTuple):
  """Carry of the radius bisection of :func:`min_norm`."""
  low: Array  # [B] largest radius known (to the attack) not to reach the goal
  high: Array  # [B] smallest radius at which the goal was reached
  best_x: Array  # [B, ...] the goal-reaching point of smallest norm found so far
  best_norm: Array  # [B] its perturbation norm; inf where none was found yet


def min_norm(logits_fn: LogitsFn, params: Params, batch: Batch, *, p: float = 2.0,
             max_eps, goal: str = 'adv', search_steps: int = 10, steps: int = 20,
             step_size=None, rng: PRNGKey | None = None, init: str = 'zero',
             bounds: Bounds | None = DEFAULT_BOUNDS, unroll: int | bool | str = 'auto',
             search_unroll: int | bool = 1, inner: str = 'auto') -> tuple[Array, Array]:
  """Smallest Lp perturbation reaching ``goal`` per example, by bisection on the radius.

  An inner attack (``steps`` PGD steps) first runs at ``max_eps``; examples that reach
  the goal there are bisected ``search_steps`` times on ``[0, max_eps]``, each radius
  tested by an inner attack. The returned norm is that of the returned point (the
  smallest goal-reaching perturbation found), an upper bound on the true minimum that is
  tight to ``max_eps / 2**search_steps`` when the inner attack finds the worst case.

  With K > 2 classes an untargeted PGD on :func:`goal_objective` follows the currently
  highest other class, not the nearest boundary, and can report distances well above the
  minimum (3-class linear model, p = 2: up to 1.9x). The multi-targeted inner attack
  (Gowal et al.) runs, per radius, one PGD per class ``t ≠ y`` on the pairwise margin
  ``z_t − z_y`` plus, in the slot ``t = y``, the untargeted PGD on
  :func:`goal_objective`, all vectorised as one run on a batch K times larger; the
  radius counts as reached if any run reaches the goal. On linear models without a box
  this is exact for ``goal='adv'``, and with ``init='zero'`` it reaches the goal at
  every radius where ``inner='pgd'`` does. It costs K times the compute and memory of
  ``'pgd'``.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    p: norm, ``[1, inf]``.
    max_eps: largest radius searched, scalar or ``[B]``, ``> 0``.
    goal: ``'adv'`` (label change, Woods eq. 2) or ``'btr'`` (``p_y < 1/K``, eq. 4).
    search_steps: bisection steps (``>= 0``).
    steps: PGD steps per tested radius (``>= 1``).
    step_size: PGD step; default ``2.5 eps / steps`` for the tested radius.
    rng: key for random PGD starts; only needed with ``init='uniform'``.
    init: PGD start, ``'zero'`` (default, deterministic) or ``'uniform'``.
    bounds: input box or None.
    unroll: unrolling of the PGD step loop (see :func:`robustjax.attacks.pgd`).
    search_unroll: unrolling of the bisection loop; rolled by default to bound
      compile time (XLA:CPU runs convolutions in loops slower, docs/design.md).
    inner: the attack testing each radius: ``'multi_targeted'`` (above), ``'pgd'``
      (untargeted PGD on :func:`goal_objective`, K times cheaper, exact for K = 2) or
      ``'auto'``: ``'multi_targeted'`` for ``2 < K <= 10``, else ``'pgd'``.

  Returns:
    ``(x_adv [B, ...], norms [B])``: the goal-reaching points of smallest norm found
    and ``||x_adv − x||_p``. Examples already reaching the goal at x get norm 0 and
    ``x_adv = x``; examples for which no point within ``max_eps`` reaches it get
    ``norms = inf`` and ``x_adv = x``.
  """
  p = _checks.check_p(p)
  _checks.check_positive(max_eps, 'max_eps')
  _checks.check_choice(goal, 'goal', GOALS)
  search_steps = _checks.check_int(search_steps, 'search_steps')
  steps = _checks.check_int(steps, 'steps', minimum=1)
  _checks.check_choice(init, 'init', loop.INITS)
  _checks.check_choice(inner, 'inner', INNERS)
  if init == 'uniform' and rng is None:
    raise ValueError("rng is required with init='uniform'")
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  _checks.check_in_bounds(inputs, bounds)
  if inner == 'auto':
    multi = 2 < num_classes <= MULTI_TARGETED_MAX_CLASSES
    inner = 'multi_targeted' if multi else 'pgd'
  rng = jax.random.PRNGKey(0) if rng is None else rng
  schedule = step_size if callable(step_size) else None
  return _min_norm_core(params, inputs, labels, rng, max_eps,
                        None if schedule is not None else step_size, bounds, logits_fn=logits_fn, p=p,
                        goal=goal, search_steps=search_steps, steps=steps, init=init,
                        unroll=unroll, search_unroll=search_unroll, schedule=schedule,
                        inner=inner, num_classes=num_classes)


@_common.compile_static((
    'logits_fn', 'p', 'goal', 'search_steps', 'steps', 'init', 'unroll', 'search_unroll',
    'schedule', 'inner', 'num_classes'))
def _min_norm_core(params, inputs, labels, rng, max_eps, step_size, bounds, *, logits_fn, p,
                   goal, search_steps, steps, init, unroll, search_unroll, schedule, inner,
                   num_classes):
  """Compiled radius bisection on validated arguments."""
  inputs = jax.lax.stop_gradient(inputs)
  batch_size = inputs.shape[0]
  step_size = schedule if schedule is not None else step_size

  def objective(x):
    return goal_objective(logits_fn(params, x), labels, goal)

  def run(objective_fn, radius, key):
    return loop.maximize(objective_fn, inputs, rng=key, eps=radius, p=p, steps=steps,
                         step_size=step_size, init=init, step_rule='steepest',
                         bounds=bounds, keep_best=True, unroll=unroll)

  def pgd_attack(radius, key):
    x_adv, values = run(objective, radius, key)
    return x_adv, values > 0

  def multi_targeted_attack(radius, key):
    def targeted(target):  # PGD on z_t - z_y; for examples with y = t the goal itself
      def objective_t(x):
        logits = logits_fn(params, x)
        pairwise = logits[:, target] - jnp.take_along_axis(logits, labels[:, None], 1)[:, 0]
        return jnp.where(labels == target, goal_objective(logits, labels, goal), pairwise)
      x_adv, _ = run(objective_t, radius, jax.random.fold_in(key, target))
      return x_adv, objective(x_adv) > 0

    x_all, reached_all = jax.vmap(targeted)(jnp.arange(num_classes))  # [K, B, ...], [K, B]
    norms = jnp.where(reached_all, jax.vmap(lambda xa: geometry.norm(xa - inputs, p))(x_all),
                      jnp.inf)
    pick = jnp.argmin(norms, axis=0)  # the goal-reaching run of smallest norm
    return x_all[pick, jnp.arange(batch_size)], jnp.any(reached_all, axis=0)

  attack = multi_targeted_attack if inner == 'multi_targeted' else pgd_attack

  def record(state_x, state_norm, x_adv, reached):
    norms = geometry.norm(x_adv - inputs, p)
    better = reached & (norms < state_norm)
    return (jnp.where(_per_example(better, x_adv), x_adv, state_x),
            jnp.where(better, norms, state_norm))

  high = jnp.broadcast_to(jnp.asarray(max_eps, inputs.dtype), (batch_size,))
  at_clean = objective(inputs) > 0
  inf = jnp.full((batch_size,), jnp.inf, inputs.dtype)
  best_x, best_norm = record(inputs, inf, *attack(high, jax.random.fold_in(rng, 0)))
  best_x = jnp.where(_per_example(at_clean, inputs), inputs, best_x)
  best_norm = jnp.where(at_clean, 0.0, best_norm)
  state = BisectionState(jnp.zeros_like(high), high, best_x, best_norm)

  def body(state: BisectionState, k):
    mid = 0.5 * (state.low + state.high)
    x_adv, reached = attack(mid, jax.random.fold_in(rng, k + 1))
    best_x, best_norm = record(state.best_x, state.best_norm, x_adv, reached)
    return BisectionState(jnp.where(reached, state.low, mid),
                          jnp.where(reached, mid, state.high), best_x, best_norm), None

  if search_steps:
    unroll_n = search_steps if search_unroll is True else max(int(search_unroll), 1)
    state, _ = jax.lax.scan(body, state, jnp.arange(search_steps), unroll=unroll_n)
  return jax.lax.stop_gradient(state.best_x), jax.lax.stop_gradient(state.best_norm)


class TicktockState(NamedTuple):
  """Carry of Woods et al.'s Algorithm 1."""
  delta: Array  # [B, ...] current perturbation δ
  velocity: Array  # [B, ...] SGD momentum buffer
  best_x: Array  # [B, ...] goal-reaching point of smallest L2 norm so far
  best_norm: Array  # [B] its norm; inf where the goal was not reached yet


def min_norm_ticktock(logits_fn: LogitsFn, params: Params, batch: Batch, *,
                      goal: str = 'adv', steps: int = 450, learning_rate: float = 0.01,
                      momentum: float = 0.9, eta: float = 0.55,
                      bounds: Bounds | None = DEFAULT_BOUNDS,
                      unroll: int | bool = 1) -> tuple[Array, Array]:
  """Woods et al.'s Algorithm 1: alternate lowering ``p_y`` and shrinking ``||δ||_2``.

  Each step evaluates ``x̂ = clip(x + δ)``. If the goal is reached (``'adv'``: eq. 2,
  ``'btr'``: eq. 4) the point is recorded when its norm is the smallest so far and the
  step direction is ``∇||δ||² = 2δ``; otherwise it is ``∇ₓ p_y(x̂)``. The direction is
  rescaled to L2 length ``eta`` (the algorithm's "fixed gradient magnitude"; the paper's
  listing is ambiguous about whether this also applies to the ``2δ`` branch, here it
  does) and SGD with momentum *descends* along it. Defaults are the paper's (N = 450,
  learning rate 0.01, momentum 0.9, η = 0.55).

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    goal: ``'adv'`` or ``'btr'``.
    steps: N, number of optimiser steps (``>= 0``).
    learning_rate: SGD learning rate (``> 0``).
    momentum: SGD momentum in ``[0, 1)``.
    eta: length of the normalised step direction (``> 0``).
    bounds: input box or None.
    unroll: ``lax.scan`` unrolling (rolled by default: N is large).

  Returns:
    ``(x_adv [B, ...], norms [B])``: the goal-reaching point of smallest L2 norm among
    the iterates and ``||x_adv − x||_2``; ``x_adv = x`` and ``norms = inf`` where the goal
    was never reached (0 where it holds at x).
  """
  _checks.check_choice(goal, 'goal', GOALS)
  steps = _checks.check_int(steps, 'steps')
  _checks.check_positive(learning_rate, 'learning_rate')
  _checks.check_positive(eta, 'eta')
  if not 0 <= momentum < 1:
    raise ValueError(f'momentum must be in [0, 1), got {momentum}')
  bounds = _checks.check_bounds(bounds)
  inputs, labels, _ = _common.check_batch(logits_fn, params, batch)
  _checks.check_in_bounds(inputs, bounds)
  return _ticktock_core(params, inputs, labels, learning_rate, momentum, eta, bounds,
                        logits_fn=logits_fn, goal=goal, steps=steps, unroll=unroll)


@_common.compile_static(('logits_fn', 'goal', 'steps', 'unroll'))
def _ticktock_core(params, inputs, labels, learning_rate, momentum, eta, bounds, *,
                   logits_fn, goal, steps, unroll):
  """Compiled Algorithm 1 on validated arguments."""
  inputs = jax.lax.stop_gradient(inputs)

  def true_prob(x):
    probs = jax.nn.softmax(logits_fn(params, x), axis=-1)
    return jnp.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]

  def body(state: TicktockState, _):
    x_hat = geometry.clip_to_box(inputs + state.delta, bounds)
    reached = goal_objective(logits_fn(params, x_hat), labels, goal) > 0
    grad_p = jax.grad(lambda x: jnp.sum(true_prob(x)))(x_hat)
    norms = geometry.norm(x_hat - inputs, 2.0)
    better = reached & (norms < state.best_norm)
    best_x = jnp.where(_per_example(better, x_hat), x_hat, state.best_x)
    best_norm = jnp.where(better, norms, state.best_norm)
    direction = jnp.where(_per_example(reached, grad_p), 2.0 * state.delta, grad_p)
    direction = eta * geometry.normalize(direction, 2.0)
    velocity = momentum * state.velocity + direction
    delta = state.delta - learning_rate * velocity
    return TicktockState(delta, velocity, best_x, best_norm), None

  zeros = jnp.zeros_like(inputs)
  state = TicktockState(zeros, zeros, inputs,
                        jnp.full(inputs.shape[:1], jnp.inf, inputs.dtype))
  if steps:
    unroll_n = steps if unroll is True else max(int(unroll), 1)
    state, _ = jax.lax.scan(body, state, None, length=steps, unroll=unroll_n)
  return jax.lax.stop_gradient(state.best_x), jax.lax.stop_gradient(state.best_norm)
