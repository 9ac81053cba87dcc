"""Saliency: the input gradient of a class logit, and its reduction to a 2-D map."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax.types import Array, Labels, LogitsFn, Params

REDUCTIONS = ('abs_max', 'abs_sum', 'l2', 'none')


def saliency(logits_fn: LogitsFn, params: Params, inputs: Array,
             classes: Labels | None = None) -> Array:
  """``∇ₓ z_c(x)`` per example, ``[B, ...]``: how each input feature moves class c's logit.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``; examples must not interact.
    params: model parameters.
    inputs: ``[B, ...]`` points.
    classes: ``[B]`` class per example; default the predicted class ``argmax z(x)``.
  """
  _checks.check_float_inputs(inputs)
  inputs = jax.lax.stop_gradient(inputs)
  if classes is None:
    classes = jnp.argmax(logits_fn(params, inputs), axis=-1)
  _checks.check_labels(classes, inputs.shape[0], name='classes')

  def chosen(x):
    logits = logits_fn(params, x)
    return jnp.sum(jnp.take_along_axis(logits, classes[:, None], axis=-1))

  return jax.grad(chosen)(inputs)


def saliency_map(grads: Array, *, reduce: str = 'abs_max') -> Array:
  """Reduces ``[B, H, W, C]`` gradients over channels to ``[B, H, W]`` maps for display.

  ``'abs_max'`` (Simonyan et al.), ``'abs_sum'``, ``'l2'`` over the last axis, or
  ``'none'`` (the gradients unchanged).
  """
  _checks.check_choice(reduce, 'reduce', REDUCTIONS)
  if reduce == 'none':
    return grads
  if jnp.ndim(grads) < 3:
    raise ValueError(f'grads must be [B, ..., C] with a channel axis, got shape '
                     f'{jnp.shape(grads)}')
  if reduce == 'abs_max':
    return jnp.max(jnp.abs(grads), axis=-1)
  if reduce == 'abs_sum':
    return jnp.sum(jnp.abs(grads), axis=-1)
  return jnp.sqrt(jnp.sum(grads * grads, axis=-1))
