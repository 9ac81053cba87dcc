"""CURE: curvature regularisation by a finite difference of input gradients.

Moosavi-Dezfooli, Fawzi, Uesato and Frossard, "Robustness via curvature regularization,
and vice versa" (CVPR 2019), the curvature baseline of the SCORPIO and SOAR papers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax import geometry
from robustjax.regularizers.registry import register
from robustjax.types import Array, Aux, Batch, LossFn, Params, PRNGKey


@register('cure')
def cure(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey | None = None,
         h: float = 1.5) -> tuple[Array, Aux]:
  """``‖∇ℓ(x + h z) − ∇ℓ(x)‖₂²`` per example, ``z = sign(∇ℓ(x)) / ‖sign(∇ℓ(x))‖₂``.

  The direction ``z`` (the normalised FGSM direction, a unit L2 vector) is
  ``stop_gradient``'d; both gradients are differentiated w.r.t. params (double
  backprop). The gradient at x is computed once, with the loss, and serves both the
  direction and the difference. ``h = 1.5`` is the CIFAR-10 step of the CURE paper for
  inputs in [0, 1] (the authors' code ramps h up over the first epochs; in a config that
  is a schedule on the hparam, e.g. ``term('cure', h=1.5, schedules={'h': {'steps': N,
  'init': 0.1}})``, see :mod:`robustjax.training.schema`). A zero gradient gives
  ``z = 0`` and a zero penalty.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: unused (deterministic); accepted for the common signature.
    h: finite-difference step along the unit direction z (> 0).

  Returns:
    ``(values [B], aux)``; aux ``{'loss' [B], 'direction' z [B, ...],
    'grad_norm' [B]}``.
  """
  del rng
  _checks.check_positive(h, 'h')
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  losses, grads = curvature.value_and_input_grad(loss_fn, params, inputs, labels)
  z = jax.lax.stop_gradient(geometry.normalize(jnp.sign(grads), 2.0))
  shifted = curvature.input_grad(loss_fn, params, inputs + h * z, labels)
  diff = shifted - grads
  values = jnp.sum(diff * diff, axis=tuple(range(1, diff.ndim)))
  return values, {'loss': losses, 'direction': z, 'grad_norm': geometry.norm(grads, 2.0)}
