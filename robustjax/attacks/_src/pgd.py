"""Gradient attacks on a model's logits: PGD with restarts, FGSM and multi-targeted PGD.

All entry points take ``logits_fn(params, inputs) -> [B, K]``, ``batch = (inputs [B, ...],
labels [B])`` and keyword-only hyperparameters, and return perturbed inputs ``[B, ...]``
inside ``ball(inputs, eps) ∩ box`` that carry no gradient. Objectives are named as in
:mod:`robustjax.attacks.objectives` (``'ce'``, ``'margin'``, ``'targeted_ce'``,
``'targeted_margin'`` or the SCORPIO aliases ``'ul'``, ``'um'``, ``'tl'``, ``'tm'``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax import losses
from robustjax.attacks._src import common as _common
from robustjax.attacks._src import loop
from robustjax.attacks._src import objectives as objectives_lib
from robustjax.types import (
    Array, Batch, Bounds, DEFAULT_BOUNDS, Labels, LogitsFn, Params, PRNGKey)


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def _check_common(eps, p, steps=0, restarts=1):
  p = _checks.check_p(p)
  _checks.check_nonnegative(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  restarts = _checks.check_int(restarts, 'restarts', minimum=1)
  return p, steps, restarts


def _check_targets(objective: str, rng, labels: Labels, targets, num_classes: int):
  """Validates given targets; a targeted objective without targets needs an rng."""
  if not objectives_lib.is_targeted(objective):
    return None
  if targets is not None:
    _checks.check_labels(targets, labels.shape[0], num_classes, name='targets')
    return jnp.asarray(targets, jnp.int32)
  if rng is None:
    raise ValueError(f'objective {objective!r} is targeted: pass targets [B] or an rng '
                     'to draw random targets')
  return None


_PGD_STATIC = ('logits_fn', 'num_classes', 'p', 'steps', 'restarts', 'objective', 'init',
               'step_rule', 'unroll', 'schedule')


@_common.compile_static(_PGD_STATIC)
def _pgd_core(params, inputs, labels, rng, eps, step_size, bounds, targets, *, logits_fn,
              num_classes, p, steps, restarts, objective, init, step_rule, unroll,
              schedule):
  """Compiled PGD on validated arguments: ``(x_adv [B, ...], values [B])``."""
  rng_targets, rng_init = jax.random.split(rng)
  if objectives_lib.is_targeted(objective) and targets is None:
    targets = objectives_lib.random_targets(rng_targets, labels, num_classes)
  objective_fn = objectives_lib.get_objective(objective)

  def per_example(x):
    return objective_fn(logits_fn(params, x), labels, targets)

  best_x, best_value = None, None
  for r in range(restarts):
    # fold_in keeps restart 0 identical to a single run with the same rng.
    x_adv, values = loop.maximize(
        per_example, inputs, rng=jax.random.fold_in(rng_init, r), eps=eps, p=p,
        steps=steps, step_size=schedule if schedule is not None else step_size,
        init=init, step_rule=step_rule, bounds=bounds, keep_best=True, unroll=unroll)
    if best_x is None:
      best_x, best_value = x_adv, values
      continue
    improved = values > best_value
    best_x = jnp.where(_per_example(improved, x_adv), x_adv, best_x)
    best_value = jnp.where(improved, values, best_value)
  return jax.lax.stop_gradient(best_x), jax.lax.stop_gradient(best_value)


def pgd_with_values(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
                    eps, p: float, steps: int, step_size=None, restarts: int = 1,
                    objective: str = 'ce', bounds: Bounds | None = DEFAULT_BOUNDS,
                    init: str = 'uniform', step_rule: str = 'steepest',
                    targets: Labels | None = None,
                    unroll: int | bool | str = 'auto') -> tuple[Array, Array]:
  """:func:`pgd` that also returns the objective at the returned points, ``[B]``."""
  p, steps, restarts = _check_common(eps, p, steps, restarts)
  objective = objectives_lib.canonical_name(objective)
  _checks.check_choice(init, 'init', loop.INITS)
  _checks.check_choice(step_rule, 'step_rule', loop.STEP_RULES)
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  _checks.check_in_bounds(inputs, bounds)
  targets = _check_targets(objective, rng, labels, targets, num_classes)
  schedule = step_size if callable(step_size) else None
  return _pgd_core(params, inputs, labels, rng, eps, None if schedule is not None else step_size,
                   bounds, targets, logits_fn=logits_fn, num_classes=num_classes, p=p,
                   steps=steps, restarts=restarts, objective=objective, init=init,
                   step_rule=step_rule, unroll=unroll, schedule=schedule)


def pgd(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps, p: float,
        steps: int, step_size=None, restarts: int = 1, objective: str = 'ce',
        bounds: Bounds | None = DEFAULT_BOUNDS, init: str = 'uniform',
        step_rule: str = 'steepest', targets: Labels | None = None,
        unroll: int | bool | str = 'auto') -> Array:
  """Projected gradient ascent (Madry et al.) on an objective over ``ball(x, eps) ∩ box``.

  Each restart runs :func:`robustjax.attacks.maximize` from its own random start
  (``fold_in(rng, r)``, so restart 0 equals a single run with the same ``rng``); per
  example the point with the highest objective over all restarts and iterates is kept.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...] floats in the box, labels [B] int in [0, K))``.
    rng: key for random starts and (targeted objectives) random targets.
    eps: radius, scalar or ``[B]``, ``>= 0``.
    p: norm of the ball, ``[1, inf]``.
    steps: ascent steps per restart (``>= 0``).
    step_size: scalar, ``[B]`` or schedule ``step -> size``; default ``2.5 eps / steps``.
    restarts: number of random restarts (``>= 1``).
    objective: ``'ce'``/``'ul'``, ``'margin'``/``'um'``, ``'targeted_ce'``/``'tl'`` or
      ``'targeted_margin'``/``'tm'`` (SCORPIO eq. 12).
    bounds: input box ``(low, high)`` or None.
    init: ``'uniform'`` (uniform in the ball) or ``'zero'``.
    step_rule: ``'steepest'`` (normalised steepest ascent for p, sign for inf),
      ``'sign'`` or ``'adam'``.
    targets: ``[B]`` target classes for targeted objectives; drawn uniformly from the
      classes ``!= y`` when None.
    unroll: ``lax.scan`` unrolling of the step loop (True: full, int: that many steps
      per iteration). The default ``'auto'`` unrolls fully on XLA:CPU when the model
      has convolutions (a rolled loop runs them several times slower, docs/design.md) and
      keeps the loop rolled otherwise (:func:`robustjax.attacks.loop.auto_unroll`).

  Returns:
    ``x_adv [B, ...]`` in ``ball ∩ box``, without gradient.

  Raises:
    ValueError: bad ``p``, ``eps``, ``steps``, ``restarts``, ``objective``, ``init``,
      ``step_rule``, ``bounds``, non-float inputs, labels or targets not ``[B]`` in
      ``[0, K)``, or a ``logits_fn`` that does not return ``[B, K]``.
  """
  return pgd_with_values(logits_fn, params, batch, rng=rng, eps=eps, p=p, steps=steps,
                         step_size=step_size, restarts=restarts, objective=objective,
                         bounds=bounds, init=init, step_rule=step_rule, targets=targets,
                         unroll=unroll)[0]


def fgsm(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey | None = None,
         eps, p: float = math.inf, objective: str = 'ce',
         bounds: Bounds | None = DEFAULT_BOUNDS, targets: Labels | None = None) -> Array:
  """One step of size ``eps`` from x along the LMO of the gradient (Goodfellow et al.).

  ``x_adv = clip(x + lmo(∇ₓ objective, eps, p))``: the sign step for p = inf, the
  normalised gradient for p = 2, the largest coordinate for p = 1.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: only needed to draw random targets for a targeted objective.
    eps: step length, scalar or ``[B]``.
    p: norm, ``[1, inf]``.
    objective: as :func:`pgd`.
    bounds: input box or None.
    targets: ``[B]`` targets for targeted objectives.

  Returns:
    ``x_adv [B, ...]`` in ``ball ∩ box`` (for inputs inside the box), without gradient.
  """
  p, _, _ = _check_common(eps, p)
  objective = objectives_lib.canonical_name(objective)
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  _checks.check_in_bounds(inputs, bounds)
  targets = _check_targets(objective, rng, labels, targets, num_classes)
  return _fgsm_core(params, inputs, labels, rng, eps, bounds, targets, logits_fn=logits_fn,
                    num_classes=num_classes, p=p, objective=objective)


@_common.compile_static(('logits_fn', 'num_classes', 'p', 'objective'))
def _fgsm_core(params, inputs, labels, rng, eps, bounds, targets, *, logits_fn,
               num_classes, p, objective):
  """Compiled FGSM on validated arguments."""
  if objectives_lib.is_targeted(objective) and targets is None:
    targets = objectives_lib.random_targets(jax.random.split(rng)[0], labels, num_classes)
  objective_fn = objectives_lib.get_objective(objective)
  inputs = jax.lax.stop_gradient(inputs)
  grad = jax.grad(lambda x: jnp.sum(objective_fn(logits_fn(params, x), labels, targets)))(
      inputs)
  x_adv = geometry.clip_to_box(inputs + geometry.lmo(grad, eps, p), bounds)
  return jax.lax.stop_gradient(x_adv)


def multi_targeted(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
                   eps, p: float, steps: int, step_size=None, restarts: int = 1,
                   objective: str = 'targeted_margin',
                   bounds: Bounds | None = DEFAULT_BOUNDS, init: str = 'uniform',
                   step_rule: str = 'steepest', unroll: int | bool | str = 'auto') -> Array:
  """Multi-targeted PGD (Gowal et al.): one targeted run per class, worst case kept.

  For every class ``c`` a targeted :func:`pgd` run toward ``c`` (random start
  ``fold_in(rng, c)``); per example the run ending with the largest untargeted margin
  ``max_{j≠y} z_j − z_y`` over ``c ≠ y`` is kept. The K runs are vectorised (one
  compiled PGD on a batch K times larger), so memory grows with K.

  Args:
    logits_fn, params, batch, eps, p, steps, step_size, restarts, bounds, init,
      step_rule, unroll: as :func:`pgd`.
    rng: key; run ``c`` uses ``fold_in(rng, c)`` as the ``rng`` of :func:`pgd`.
    objective: a targeted objective: ``'targeted_margin'`` (``'tm'``),
      ``'targeted_ce'`` (``'tl'``) or ``'pairwise_margin'`` (``z_t − z_y``, Gowal et
      al.; exact on linear models).

  Returns:
    ``x_adv [B, ...]`` in ``ball ∩ box``, without gradient.
  """
  p, steps, restarts = _check_common(eps, p, steps, restarts)
  objective = objectives_lib.canonical_name(objective)
  if not objectives_lib.is_targeted(objective):
    raise ValueError(f'multi_targeted needs a targeted objective; valid choices: '
                     f'{", ".join(repr(o) for o in objectives_lib.TARGETED)}, '
                     f'got objective {objective!r}')
  _checks.check_choice(init, 'init', loop.INITS)
  _checks.check_choice(step_rule, 'step_rule', loop.STEP_RULES)
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  _checks.check_in_bounds(inputs, bounds)
  schedule = step_size if callable(step_size) else None
  return _multi_targeted_core(
      params, inputs, labels, rng, eps, None if schedule is not None else step_size, bounds,
      logits_fn=logits_fn, num_classes=num_classes, p=p, steps=steps, restarts=restarts,
      objective=objective, init=init, step_rule=step_rule, unroll=unroll,
      schedule=schedule)


@_common.compile_static(_PGD_STATIC)
def _multi_targeted_core(params, inputs, labels, rng, eps, step_size, bounds, *, logits_fn,
                         num_classes, p, steps, restarts, objective, init, step_rule, unroll,
                         schedule):
  """Compiled multi-targeted PGD: the K targeted runs vectorised with ``vmap``."""

  def run(target_class):
    targets = jnp.full(labels.shape, target_class, jnp.int32)
    x_adv, _ = _pgd_core(params, inputs, labels, jax.random.fold_in(rng, target_class), eps,
                         step_size, bounds, targets, logits_fn=logits_fn,
                         num_classes=num_classes, p=p, steps=steps, restarts=restarts,
                         objective=objective, init=init, step_rule=step_rule,
                         unroll=unroll, schedule=schedule)
    strength = -losses.margin(logits_fn(params, x_adv), labels)
    return x_adv, jnp.where(labels == target_class, -jnp.inf, strength)

  x_all, strength = jax.vmap(run)(jnp.arange(num_classes, dtype=jnp.int32))  # [K, B, ...]
  best = jnp.argmax(strength, axis=0)  # [B]
  return jax.lax.stop_gradient(x_all[best, jnp.arange(inputs.shape[0])])
