"""SOAR: the second-order adversarial regularizer of Ma, Faghri and Farahmand (2020).

The inner max of the robust objective is bounded through a second-order Taylor model,
``max_{‖δ‖∞≤ε} ℓ(x+δ) ≤ ℓ(x) + ½ max_{‖δ'‖₂≤ε'} δ'ᵀ𝐇δ'`` with the augmented
``(d+1)×(d+1)`` matrix ``𝐇 = [[∇²ℓ, ∇ℓ], [∇ℓᵀ, 1]]`` and ``ε'² = dε² + 1`` (SOAR eq.
5-7); ``‖𝐇‖₂ ≤ ‖𝐇‖_F`` is estimated from ``‖𝐇z‖₂``, ``z ~ N(0, I_{d+1})`` (eq. 8), with
the Hessian product by a finite difference along the normalised direction (eq. 9).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax import geometry
from robustjax.attacks import loop
from robustjax.regularizers.registry import register
from robustjax.types import (
    Array, Aux, Batch, Bounds, DEFAULT_BOUNDS, LossFn, Params, PRNGKey)

INITS = ('clean', 'random', 'pgd1')


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, values.shape + (1,) * (x.ndim - values.ndim))


def starting_point(loss_fn: LossFn, params: Params, inputs: Array, labels: Array, *,
                   rng: PRNGKey, eps, init: str, step_size,
                   bounds: Bounds | None) -> Array:
  """The expansion point x' of SOAR sec. 4.2, ``[B, ...]``, with no gradient.

  ``'clean'``: x' = x. ``'random'``: x' = x + η, η uniform in the L∞ ε-ball.
  ``'pgd1'``: one L∞ PGD step from the random point,
  ``x' = Π(x + η + step_size·sign(∇ℓ(x + η)))`` onto ``ball ∩ box``.
  """
  if init == 'clean':
    return jax.lax.stop_gradient(inputs)
  frozen = jax.lax.stop_gradient(params)
  objective = lambda x: loss_fn(frozen, x, labels)
  steps = 0 if init == 'random' else 1
  x_start, _ = loop.maximize(objective, inputs, rng=rng, eps=eps, p=jnp.inf, steps=steps,
                             step_size=step_size, init='uniform', step_rule='sign',
                             bounds=bounds, keep_best=False)
  return x_start


@register('soar')
def soar(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
         eps=8.0 / 255.0, alpha: float = 8.0 / 255.0, init: str = 'pgd1',
         num_directions: int = 1, value_clip: float = 10.0, step_size=None,
         bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """SOAR regularizer ``R(x'; z, h)`` per example (eq. 11), averaged over m directions.

  ``R = (dε² + 1)/2 · min(‖𝐇z‖₂, value_clip)`` with

  ``𝐇z = [‖z_d‖₂ (∇ℓ(x' + h z̃_d) − ∇ℓ(x'))/h + z₁ ∇ℓ(x');  ∇ℓ(x')ᵀz_d + z₁]``,

  ``z = (z_d, z₁) ~ N(0, I_{d+1})``, ``z̃_d = z_d/‖z_d‖₂``, ``h ~ U(0, α]`` drawn per example
  and direction, d the number of input features. Eq. 11 as printed shows the first
  block; the derivation it summarises (eq. 8 and the expression for 𝐇z above it) takes
  the norm of the whole (d+1)-vector, which is what is computed here. The value clip
  ("a clipping of 10 on the value of the ℓ2 norm part", app. C) bounds ``‖𝐇z‖₂``; the
  clip of 30 on the regularizer's gradient norm is a training-system option. The
  training objective is ``ℓ(x') + λR`` (eq. 12, λ = 0.5 in app. C): ``aux`` carries x'
  and ``ℓ(x')``.

  Defaults are app. C (CIFAR-10, L∞): ε = 8/255, α = 8/255 (sec. 5 quotes 0.03), PGD1
  start (the variant without gradient masking, app. A), one direction (sec. 4.2),
  value clip 10. ``step_size`` of the PGD1 step defaults to α, following x' = x + η +
  α∇ℓ(x + η) below eq. 12, taken as a sign (PGD) step and projected onto ``ball ∩ box``.

  Cost: the PGD1 step is one input gradient; the gradients at x' and at the m points
  ``x' + h z̃`` are one pass over ``(m + 1)B`` points (examples must not interact in
  ``loss_fn``), which also gives ``ℓ(x')``. Both gradients are differentiated w.r.t.
  params (double backprop); z, h and x' are constants.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the start, z and h.
    eps: the L∞ radius ε, scalar or ``[B]``.
    alpha: upper end of the finite-difference step distribution (> 0).
    init: ``'clean'``, ``'random'`` or ``'pgd1'``.
    num_directions: m >= 1 random directions, averaged.
    value_clip: clip on ``‖𝐇z‖₂`` (> 0; ``inf`` disables it).
    step_size: PGD1 step (default ``alpha``).
    bounds: input box for x', or None.

  Returns:
    ``(values [B], aux)``; aux ``{'x_start' x' [B, ...], 'loss_at_start' ℓ(x') [B],
    'hz_norm' ‖𝐇z‖₂ [B] (mean over directions, before the clip)}``.
  """
  _checks.check_nonnegative(eps, 'eps')
  _checks.check_positive(alpha, 'alpha')
  _checks.check_choice(init, 'init', INITS)
  m = _checks.check_int(num_directions, 'num_directions', minimum=1)
  _checks.check_positive(value_clip, 'value_clip')
  bounds = _checks.check_bounds(bounds)
  if step_size is not None:
    _checks.check_nonnegative(step_size, 'step_size')
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, bounds)
  batch_size = inputs.shape[0]
  rng_start, rng_z, rng_z1, rng_h = jax.random.split(rng, 4)

  x_start = starting_point(loss_fn, params, inputs, labels, rng=rng_start, eps=eps,
                           init=init, step_size=alpha if step_size is None else step_size,
                           bounds=bounds)

  z_d = jax.random.normal(rng_z, (m,) + inputs.shape, inputs.dtype)  # [m, B, ...]
  z_1 = jax.random.normal(rng_z1, (m, batch_size), inputs.dtype)  # [m, B]
  # h ~ U(0, α] (never exactly 0, so the difference quotient is always defined).
  h = alpha * (1.0 - jax.random.uniform(rng_h, (m, batch_size), inputs.dtype))
  z_norm = jax.vmap(lambda z: geometry.norm(z, 2.0))(z_d)  # [m, B]
  z_unit = z_d / _per_example(jnp.maximum(z_norm, 1e-30), z_d)
  probes = x_start[None] + _per_example(h, z_unit) * z_unit  # [m, B, ...]

  points = jnp.concatenate([x_start[None], probes]).reshape((-1,) + inputs.shape[1:])
  all_labels = jnp.tile(labels, m + 1)
  losses, grads = curvature.value_and_input_grad(loss_fn, params, points, all_labels)
  grads = grads.reshape((m + 1,) + inputs.shape)
  loss_start, grad_start, grad_probes = losses[:batch_size], grads[0], grads[1:]

  features = tuple(range(2, z_d.ndim))
  top = (_per_example(z_norm / h, z_d) * (grad_probes - grad_start[None])
         + _per_example(z_1, z_d) * grad_start[None])  # [m, B, ...]
  bottom = jnp.sum(grad_start[None] * z_d, axis=features) + z_1  # [m, B]
  squared = jnp.sum(top * top, axis=features) + bottom * bottom
  positive = squared > 0
  hz_norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)

  dim = inputs[0].size
  scale = (dim * jnp.asarray(eps, inputs.dtype) ** 2 + 1.0) / 2.0
  values = scale * jnp.mean(jnp.minimum(hz_norm, value_clip), axis=0)
  return values, {'x_start': x_start, 'loss_at_start': loss_start,
                  'hz_norm': jnp.mean(hz_norm, axis=0)}
