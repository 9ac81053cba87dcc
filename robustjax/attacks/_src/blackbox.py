"""Black-box attacks, for gradient-masking diagnostics (SCORPIO fig. 4).

SimBA (Guo et al., 2019, "Simple Black-box Adversarial Attacks"), Cartesian basis: per
example, walk a random permutation of the input coordinates; at each step try
``x − eps·e_i`` and ``x + eps·e_i`` (clipped to the box) and keep the first that lowers
the true-class probability. Each orthonormal direction is used at most once (the
paper's sampling without replacement), so the result stays in the L∞ ε-ball ∩ box for
any number of steps: after all D coordinates were tried the attack stops. Only forward
passes are used, so a model that masks its gradients is still attacked.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax.attacks._src import common as _common
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey


class SimbaState(NamedTuple):
  """Carry of the SimBA loop."""
  x_flat: Array  # [B, D] current point, flattened
  log_prob: Array  # [B] log p_y at x_flat
  correct: Array  # [B] bool, x_flat still classified as y


def simba(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
          steps: int, bounds: Bounds | None = DEFAULT_BOUNDS, stop_on_success: bool = False,
          unroll: int | bool = 1) -> Array:
  """SimBA with the pixel (Cartesian) basis: ``steps`` coordinate steps of size ``eps``.

  Each step costs one forward pass on ``2B`` points (both signs tried together; the
  ``−eps`` step is preferred when both lower ``p_y``, as in the original). Coordinates
  are drawn without replacement per example and each is stepped at most once, so
  ``||x_adv − x||_inf <= eps`` and ``||x_adv − x||_2 <= sqrt(min(T, D))·eps`` for any T;
  steps beyond the D coordinates of an input are not taken (the basis is exhausted).

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the coordinate order.
    eps: step size per coordinate, scalar or ``[B]``, ``> 0``.
    steps: number of coordinate steps T (queries: ``2 min(T, D)`` forward passes of B
      points, D the number of input elements).
    bounds: input box or None.
    stop_on_success: freeze an example once it is misclassified (the original
      untargeted SimBA); by default keep lowering ``p_y``, which gives margins
      comparable with PGD's for gradient-masking plots.
    unroll: ``lax.scan`` unrolling of the step loop (rolled by default: T is
      typically hundreds and each step is only a forward pass).

  Returns:
    ``x_adv [B, ...]`` in the box, with ``p_y(x_adv) <= p_y(x)``, without gradient.
  """
  _checks.check_positive(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  bounds = _checks.check_bounds(bounds)
  inputs, labels, _ = _common.check_batch(logits_fn, params, batch)
  _checks.check_in_bounds(inputs, bounds)
  dim = int(inputs.size // max(inputs.shape[0], 1))
  steps = min(steps, dim)  # one step per orthonormal direction, never a second
  return _simba_core(params, inputs, labels, rng, eps, bounds, logits_fn=logits_fn,
                     steps=steps, stop_on_success=stop_on_success, unroll=unroll)


@_common.compile_static(('logits_fn', 'steps', 'stop_on_success', 'unroll'))
def _simba_core(params, inputs, labels, rng, eps, bounds, *, logits_fn, steps,
                stop_on_success, unroll):
  """Compiled SimBA on validated arguments."""
  inputs = jax.lax.stop_gradient(inputs)
  batch_size = inputs.shape[0]
  dim = int(inputs.size // max(batch_size, 1))
  eps = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), (batch_size,))
  rows = jnp.arange(batch_size)

  def log_prob_and_correct(x_flat):
    logits = logits_fn(params, jnp.reshape(x_flat, (-1,) + inputs.shape[1:]))
    labels2 = jnp.tile(labels, x_flat.shape[0] // batch_size)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    true = jnp.take_along_axis(log_probs, labels2[:, None], axis=-1)[:, 0]
    return true, jnp.argmax(logits, axis=-1) == labels2

  order = jax.vmap(lambda k: jax.random.permutation(k, dim))(
      jax.random.split(rng, batch_size)) if batch_size else jnp.zeros((0, dim), jnp.int32)

  def body(state: SimbaState, k):
    coord = order[:, k]  # [B], k < D: every coordinate at most once
    current = state.x_flat[rows, coord]
    steps_pm = jnp.stack([current - eps, current + eps])  # [2, B]
    if bounds is not None:
      steps_pm = jnp.clip(steps_pm, bounds[0], bounds[1])
    candidates = jnp.stack([state.x_flat, state.x_flat])  # [2, B, D]
    candidates = candidates.at[:, rows, coord].set(steps_pm)
    log_p, correct = log_prob_and_correct(jnp.reshape(candidates, (2 * batch_size, dim)))
    log_p = jnp.reshape(log_p, (2, batch_size))
    correct = jnp.reshape(correct, (2, batch_size))
    take_minus = log_p[0] < state.log_prob
    take_plus = ~take_minus & (log_p[1] < state.log_prob)
    if stop_on_success:
      take_minus &= state.correct
      take_plus &= state.correct
    new_value = jnp.where(take_minus, steps_pm[0], jnp.where(take_plus, steps_pm[1], current))
    x_flat = state.x_flat.at[rows, coord].set(new_value)
    log_prob = jnp.where(take_minus, log_p[0], jnp.where(take_plus, log_p[1], state.log_prob))
    still = jnp.where(take_minus, correct[0], jnp.where(take_plus, correct[1], state.correct))
    return SimbaState(x_flat, log_prob, still), None

  x_flat = jnp.reshape(inputs, (batch_size, dim))
  state = SimbaState(x_flat, *log_prob_and_correct(x_flat))
  if steps:
    unroll_n = steps if unroll is True else max(int(unroll), 1)
    state, _ = jax.lax.scan(body, state, jnp.arange(steps), unroll=unroll_n)
  x_adv = geometry.clip_to_box(jnp.reshape(state.x_flat, inputs.shape), bounds)
  return jax.lax.stop_gradient(x_adv)
