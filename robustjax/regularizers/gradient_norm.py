"""Input-gradient norm penalty (Ros & Doshi-Velez 2018), the first-order baseline.

``‖∇ₓℓ(x)‖_q²`` per example, differentiated w.r.t. params by double backpropagation.
"""

from __future__ import annotations

import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax import geometry
from robustjax.regularizers.registry import register
from robustjax.types import Array, Aux, Batch, LossFn, Params, PRNGKey


def squared_norm(x: Array, q: float) -> Array:
  """``‖x_b‖_q²`` per example ``[B]`` of ``x`` ``[B, ...]``, with finite gradients at 0."""
  if q == 2:
    return jnp.sum(x * x, axis=tuple(range(1, x.ndim)))
  return geometry.norm(x, q) ** 2


@register('gradient_norm')
def gradient_norm(loss_fn: LossFn, params: Params, batch: Batch, *,
                  rng: PRNGKey | None = None, q: float = 2.0) -> tuple[Array, Aux]:
  """Squared q-norm of the input gradient of the loss, per example.

  Ros & Doshi-Velez (AAAI 2018) penalise ``‖∇ₓℓ(x)‖₂²`` ("Gradient Reg" in the SCORPIO
  and SOAR comparisons); ``q`` generalises the norm (q = 1 is the dual of an Linf
  attack). One forward and backward pass gives the gradient; its param-gradient is one
  double-backprop step.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: unused (the penalty is deterministic); accepted for the common signature.
    q: the norm of the gradient, in ``[1, inf]`` (default 2).

  Returns:
    ``(values [B], aux)`` with ``values = ‖∇ₓℓ(x)‖_q²`` and aux ``{'loss' [B],
    'grad_norm' [B]}``.
  """
  del rng
  q = _checks.check_p(q, 'q')
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  losses, grads = curvature.value_and_input_grad(loss_fn, params, inputs, labels)
  values = squared_norm(grads, q)
  return values, {'loss': losses, 'grad_norm': geometry.norm(grads, q)}

