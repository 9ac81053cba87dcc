"""The attack engine: maximise a per-example objective over ``ball(x, eps) ∩ box``.

An attack is composed from parts (initialisation, step rule, projection, objective,
step size) and looped with ``jax.lax.scan``. Everything here works on any JAX function
``objective(x_adv) -> [B]``; :mod:`robustjax.attacks.pgd` builds objectives from logits.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax.types import Array, Bounds, DEFAULT_BOUNDS, PRNGKey

INITS = ('zero', 'uniform')
STEP_RULES = ('steepest', 'sign', 'adam')

PerExampleObjective = Callable[[Array], Array]  # x_adv [B, ...] -> values [B]


class AdamState(NamedTuple):
  """Adam moments on the perturbation (LLR's inner loop)."""
  mu: Array  # [B, ...] first moment
  nu: Array  # [B, ...] second moment
  count: Array  # [] int32 steps taken


class AttackState(NamedTuple):
  """Carry of the attack loop."""
  x_adv: Array  # [B, ...] current iterate
  best_x: Array  # [B, ...] best iterate so far
  best_value: Array  # [B] objective at best_x
  adam: AdamState


def check_init(init, inputs: Array):
  """Validates ``init``: one of :data:`INITS` or an array of ``inputs``' shape ``[B, ...]``."""
  if isinstance(init, str):
    return _checks.check_choice(init, 'init', INITS)
  shape = getattr(init, 'shape', None)
  if shape is None or tuple(shape) != tuple(jnp.shape(inputs)):
    raise ValueError(f'init must be one of {", ".join(repr(c) for c in INITS)} or an array '
                     f'of the inputs\' shape {tuple(jnp.shape(inputs))}, got '
                     f'{"shape " + str(tuple(shape)) if shape is not None else repr(init)}')
  if not jnp.issubdtype(jnp.result_type(init), jnp.floating):
    raise ValueError(f'init must be a floating array, got dtype {jnp.result_type(init)}')
  return init


def init_perturbation(rng: PRNGKey, inputs: Array, *, eps, p: float, init,
                      bounds: Bounds | None) -> Array:
  """Starting point ``x + δ₀`` in ``ball ∩ box``.

  ``init='zero'``: ``δ₀ = 0``; ``'uniform'``: uniform in the ball; an array ``[B, ...]``:
  that point projected onto ``ball ∩ box`` (:func:`robustjax.geometry.project_ball_and_box`).
  """
  init = check_init(init, inputs)
  if not isinstance(init, str):
    start = jax.lax.stop_gradient(jnp.asarray(init, inputs.dtype))
    return geometry.project_ball_and_box(start, inputs, eps, p, bounds)
  if init == 'zero':
    return inputs
  delta = geometry.random_ball(rng, inputs.shape, eps, p, inputs.dtype)
  return geometry.clip_to_box(inputs + delta, bounds)


def default_step_size(eps, steps: int, step_rule: str):
  """``2.5 ε / steps`` for steepest/sign (Madry et al.), 0.1 for Adam (LLR F.2)."""
  if step_rule == 'adam':
    return 0.1
  return 2.5 * jnp.asarray(eps) / max(steps, 1)


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def _adam_direction(grad: Array, state: AdamState, b1=0.9, b2=0.999, tiny=1e-8):
  count = state.count + 1
  mu = b1 * state.mu + (1 - b1) * grad
  nu = b2 * state.nu + (1 - b2) * grad * grad
  mu_hat = mu / (1 - b1 ** count)
  nu_hat = nu / (1 - b2 ** count)
  return mu_hat / (jnp.sqrt(nu_hat) + tiny), AdamState(mu, nu, count)


def step_direction(grad: Array, p: float, step_rule: str, adam: AdamState):
  """The ascent direction for one step, and the updated Adam state."""
  if step_rule == 'sign':
    return jnp.sign(grad), adam
  if step_rule == 'adam':
    return _adam_direction(grad, adam)
  return geometry.steepest_ascent(grad, p), adam


def _contains_convolution(jaxpr) -> bool:
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      return True
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, 'jaxpr', sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, 'eqns') and _contains_convolution(sub):
          return True
  return False


def auto_unroll(objective: PerExampleObjective, inputs: Array) -> int | bool:
  """Full unrolling on XLA:CPU when ``objective`` runs convolutions, else a rolled loop.

  Traces ``objective`` abstractly once (no compilation) to look for convolutions.
  """
  if jax.default_backend() != 'cpu':
    return 1
  spec = jax.ShapeDtypeStruct(inputs.shape, inputs.dtype)
  return True if _contains_convolution(jax.make_jaxpr(objective)(spec).jaxpr) else 1


def maximize(objective: PerExampleObjective, inputs: Array, *, rng: PRNGKey, eps,
             p: float, steps: int, step_size=None, init: str | Array = 'uniform',
             step_rule: str = 'steepest', bounds: Bounds | None = DEFAULT_BOUNDS,
             keep_best: bool = True,
             unroll: int | bool | str = 'auto') -> tuple[Array, Array]:
  """Projected ascent on ``objective`` over ``ball(inputs, eps) ∩ box``.

  Args:
    objective: ``x_adv [B, ...] -> [B]``; examples must not interact.
    inputs: ``[B, ...]`` clean points.
    rng: key for the random start.
    eps: radius, scalar or ``[B]``.
    p: norm of the ball, ``[1, inf]``.
    steps: number of ascent steps (0 returns the start).
    step_size: scalar, ``[B]`` or a schedule ``step -> size``; default from
      :func:`default_step_size`.
    init: ``'zero'``, ``'uniform'`` (uniform in the ball) or a starting point
      ``[B, ...]`` of ``inputs``' shape, projected onto ``ball ∩ box`` (e.g. TRADES'
      ``x + 0.001·N(0, I)``); no gradient flows through it.
    step_rule: ``'steepest'`` (normalised steepest ascent for p; sign for inf; for
      p = 1 the single steepest coordinate among those the box does not block),
      ``'sign'`` or ``'adam'`` (Adam on δ, LLR Alg. 1).
    bounds: the input box or None.
    keep_best: return, per example, the iterate with the highest objective seen
      (costs one extra forward pass) instead of the last one.
    unroll: ``lax.scan`` unroll: True unrolls fully, an int unrolls that many steps per
      loop iteration, ``'auto'`` picks per :func:`auto_unroll`. On XLA:CPU any loop
      around convolutions runs them several times slower
      (``experiments/benchmarks/attack_speed.py``, SOAR CNN, batch 128: a step costs
      0.87x one input gradient fully unrolled, 3.2x rolled), while an MLP's step costs
      less rolled (1.08x) than unrolled (1.20x); full unrolling makes compile time grow
      about linearly with ``steps``. On accelerators a rolled loop compiles faster at
      little runtime cost.

  Returns:
    ``(x_adv [B, ...], values [B])``: the perturbed points, in ``ball ∩ box``, and the
    objective there. No gradient flows through ``x_adv``.
  """
  p = _checks.check_p(p)
  _checks.check_nonnegative(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  _checks.check_choice(step_rule, 'step_rule', STEP_RULES)
  _checks.check_float_inputs(inputs)
  check_init(init, inputs)
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  inputs = jax.lax.stop_gradient(inputs)
  if step_size is None:
    step_size = default_step_size(eps, steps, step_rule)
  schedule = step_size if callable(step_size) else (lambda _: step_size)

  def summed(x):
    values = objective(x)
    return jnp.sum(values), values

  value_and_grad = jax.value_and_grad(summed, has_aux=True)

  def body(state: AttackState, k):
    (_, values), grad = value_and_grad(state.x_adv)
    improved = values > state.best_value
    best_x = jnp.where(_per_example(improved, grad), state.x_adv, state.best_x)
    best_value = jnp.where(improved, values, state.best_value)
    if p == 1 and step_rule == 'steepest' and bounds is not None:
      # L1's steepest ascent moves one coordinate: skip those the box blocks (at a face,
      # the gradient pointing out), or the whole step would be clipped away.
      low, high = bounds
      blocked = (((state.x_adv <= low) & (grad < 0)) | ((state.x_adv >= high) & (grad > 0)))
      grad = jnp.where(blocked, jnp.zeros_like(grad), grad)
    direction, adam = step_direction(grad, p, step_rule, state.adam)
    size = jnp.broadcast_to(jnp.asarray(schedule(k), inputs.dtype), inputs.shape[:1])
    x_next = state.x_adv + _per_example(size, direction) * direction
    x_next = geometry.project_ball_and_box(x_next, inputs, eps, p, bounds)
    return AttackState(jax.lax.stop_gradient(x_next), best_x, best_value, adam), None

  x0 = init_perturbation(rng, inputs, eps=eps, p=p, init=init, bounds=bounds)
  zeros = jnp.zeros_like(inputs)
  state = AttackState(x0, x0, jnp.full(inputs.shape[:1], -jnp.inf, inputs.dtype),
                      AdamState(zeros, zeros, jnp.zeros([], jnp.int32)))
  if unroll == 'auto':
    unroll = auto_unroll(objective, inputs)
  unroll_n = steps if unroll is True else max(int(unroll), 1)
  if steps and unroll_n >= steps:
    # Fully unrolled: straight-line steps. (XLA:CPU runs a length-1 scan ~4x slower
    # than the same step outside a scan, even with unroll=True.)
    for k in range(steps):
      state, _ = body(state, jnp.asarray(k))
  elif steps:
    state, _ = jax.lax.scan(body, state, jnp.arange(steps), unroll=unroll_n)
  final_x = jax.lax.stop_gradient(state.x_adv)
  if not keep_best:
    return final_x, objective(final_x)
  final_value = objective(final_x)
  improved = final_value > state.best_value
  best_x = jnp.where(_per_example(improved, final_x), final_x, state.best_x)
  return jax.lax.stop_gradient(best_x), jnp.maximum(final_value, state.best_value)
