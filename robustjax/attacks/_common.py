"""Argument checks shared by the attack entry points (raised before any tracing)."""

from __future__ import annotations

from typing import Any

import jax

from robustjax import _checks
from robustjax.types import Array, LogitsFn, Params


def check_batch(logits_fn: LogitsFn, params: Params, batch: Any,
                name: str = 'batch') -> tuple[Array, Array, int]:
  """Validates ``batch = (inputs [B, ...], labels [B])`` against the model.

  Returns:
    ``(inputs, labels, num_classes)``, where ``num_classes`` is K of the model's
    logits ``[B, K]`` (found by shape evaluation, no compute).

  Raises:
    ValueError: ``batch`` is not a pair, ``inputs`` are not floats, ``logits_fn`` does
      not return ``[B, K]``, or ``labels`` are not integers ``[B]`` in ``[0, K)``.
  """
  try:
    inputs, labels = batch
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a pair (inputs [B, ...], labels [B]), '
                     f'got {type(batch).__name__}') from None
  _checks.check_float_inputs(inputs)
  out = jax.eval_shape(lambda x: logits_fn(params, x), inputs)
  if len(out.shape) != 2 or out.shape[0] != inputs.shape[0] or out.shape[1] < 2:
    raise ValueError(f'logits_fn must return logits of shape [B, K] = '
                     f'({inputs.shape[0]}, K>=2), got shape {tuple(out.shape)}')
  num_classes = int(out.shape[1])
  _checks.check_labels(labels, inputs.shape[0], num_classes)
  return inputs, labels, num_classes
