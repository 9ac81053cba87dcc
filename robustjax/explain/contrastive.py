"""Explanations by attack: SCORPIO's contrastive explanations and Woods' adversarial ones.

- Contrastive (SCORPIO eq. 13-14): ``δ_max = argmax_{‖δ‖₂≤ε} ℓ(x+δ, y)`` and
  ``δ_min = argmin_{‖δ‖₂≤ε} ℓ(x+δ, y)`` by PGD. For a correct prediction δ_min holds the
  pertinent positive features (what supports the class) and δ_max the pertinent negative
  ones (what is missing: the features of a nearby class); for a wrong prediction the
  roles swap. (This follows the paper's text and its ship/airplane example; its summary
  table lists the correct-prediction roles the other way round.)
- Adversarial explanations (Woods et al. sec. III-A2, Algorithm 1 with ``g_explain±``,
  eq. 3): follow ``∂s_t/∂x`` (the softmax of class t) until the perturbation's RMSE
  exceeds ρ, then shrink the perturbation, alternating ("tick-tock") with SGD + momentum
  on gradients normalised to length η. ``positive=True`` raises ``s_t`` (what would make
  the input look like class t), ``False`` lowers it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import attacks
from robustjax import geometry
from robustjax.types import (
    Array, Batch, Bounds, DEFAULT_BOUNDS, Labels, LogitsFn, Params, PRNGKey)


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def contrastive_explanations(logits_fn: LogitsFn, params: Params, batch: Batch, *,
                             rng: PRNGKey, eps, steps: int = 20, p: float = 2.0,
                             step_size=None, init: str = 'uniform',
                             bounds: Bounds | None = DEFAULT_BOUNDS) -> dict[str, Array]:
  """Pertinent positive / negative perturbations (SCORPIO eq. 13-14), ``[B, ...]`` each.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the PGD starts.
    eps: radius (the paper: L2, ε = 4 on CIFAR-10 in [0, 255]-scale, 20 steps).
    steps: PGD steps.
    p: norm of the ball.
    step_size: PGD step; default ``2.5 eps / steps``.
    init: PGD start, ``'uniform'`` in the ball or ``'zero'`` (deterministic).
    bounds: input box or None.

  Returns:
    ``{'delta_max', 'delta_min', 'pertinent_positive', 'pertinent_negative'}``
    perturbations and ``'correct'`` ``[B]`` bool (the prediction at x is right).
  """
  inputs, labels = batch[0], batch[1]
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  rng_max, rng_min = jax.random.split(rng)
  kwargs = dict(eps=eps, p=p, steps=steps, step_size=step_size, init=init, bounds=bounds)
  x_max = attacks.pgd(logits_fn, params, (inputs, labels), rng=rng_max, objective='ce',
                      **kwargs)
  # 'targeted_ce' toward the true label maximises −ℓ(x+δ, y): the loss minimiser.
  x_min = attacks.pgd(logits_fn, params, (inputs, labels), rng=rng_min,
                      objective='targeted_ce', targets=labels, **kwargs)
  delta_max, delta_min = x_max - inputs, x_min - inputs
  correct = jnp.argmax(logits_fn(params, inputs), axis=-1) == labels
  mask = _per_example(correct, inputs)
  return {
      'delta_max': delta_max,
      'delta_min': delta_min,
      'pertinent_positive': jnp.where(mask, delta_min, delta_max),
      'pertinent_negative': jnp.where(mask, delta_max, delta_min),
      'correct': correct,
  }


class TickTockState(NamedTuple):
  """Carry of the adversarial-explanation loop (Woods Alg. 1)."""
  delta: Array  # [B, ...] perturbation
  velocity: Array  # [B, ...] SGD momentum buffer


def _rmse(delta: Array) -> Array:
  flat = jnp.reshape(delta, (delta.shape[0], -1))
  return jnp.sqrt(jnp.mean(flat * flat, axis=1))


def adversarial_explanation(logits_fn: LogitsFn, params: Params, inputs: Array,
                            targets: Labels, *, rho: float, steps: int = 450,
                            learning_rate: float = 0.01, momentum: float = 0.9,
                            eta: float = 0.55, positive: bool = True,
                            bounds: Bounds | None = DEFAULT_BOUNDS,
                            unroll: int | bool = 1) -> dict[str, Array]:
  """Woods' adversarial explanation of class ``targets`` at RMSE ``rho``.

  Algorithm 1 with ``g_explain+(δ; ρ) = [rmse(δ) > ρ]``: while ``g`` holds the step
  shrinks δ (gradient ``2δ`` of ``‖δ‖²``), otherwise it follows ``∓∂s_t/∂x̂`` at
  ``x̂ = clip(x + δ)``; every step gradient is rescaled to L2 length η and applied by
  SGD with momentum (the paper: 450 steps, lr 0.01, momentum 0.9, η = 0.55).

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    inputs: ``[B, ...]`` images x.
    targets: ``[B]`` class t to explain per example.
    rho: the RMSE budget ρ > 0 (the paper: 0.075-0.15).
    steps: iterations N.
    learning_rate, momentum: the SGD optimiser o(·).
    eta: length η of each normalised step gradient.
    positive: raise ``s_t`` (``g_explain+``) or lower it (``g_explain−``).
    bounds: input box or None.
    unroll: ``lax.scan`` unrolling.

  Returns:
    ``{'x' [B, ...] the explanation image x̂, 'delta' x̂ − x, 'rmse' [B],
    'probs' [B, K] softmax at x̂}``.
  """
  _checks.check_float_inputs(inputs)
  _checks.check_positive(rho, 'rho')
  steps = _checks.check_int(steps, 'steps')
  _checks.check_positive(learning_rate, 'learning_rate')
  _checks.check_nonnegative(momentum, 'momentum')
  _checks.check_positive(eta, 'eta')
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  num_classes = jax.eval_shape(lambda x: logits_fn(params, x), inputs).shape[-1]
  _checks.check_labels(targets, inputs.shape[0], num_classes, name='targets')
  inputs = jax.lax.stop_gradient(inputs)
  sign = -1.0 if positive else 1.0  # SGD descends: minimise ∓s_t

  def prob_t(x_hat):
    probs = jax.nn.softmax(logits_fn(params, x_hat), axis=-1)
    return jnp.sum(jnp.take_along_axis(probs, targets[:, None], axis=-1))

  grad_prob = jax.grad(prob_t)

  def body(state: TickTockState, _):
    x_hat = geometry.clip_to_box(inputs + state.delta, bounds)
    beyond = _rmse(state.delta) > rho  # g_explain+(δ; ρ)
    direction = jnp.where(_per_example(beyond, inputs), 2.0 * state.delta,
                          sign * grad_prob(x_hat))
    direction = eta * geometry.normalize(direction, 2.0)
    velocity = momentum * state.velocity + direction
    return TickTockState(state.delta - learning_rate * velocity, velocity), None

  zeros = jnp.zeros_like(inputs)
  state = TickTockState(zeros, zeros)
  if steps:
    state, _ = jax.lax.scan(body, state, None, length=steps,
                            unroll=steps if unroll is True else max(int(unroll), 1))
  x_hat = jax.lax.stop_gradient(geometry.clip_to_box(inputs + state.delta, bounds))
  return {
      'x': x_hat,
      'delta': x_hat - inputs,
      'rmse': _rmse(x_hat - inputs),
      'probs': jax.nn.softmax(logits_fn(params, x_hat), axis=-1),
  }
