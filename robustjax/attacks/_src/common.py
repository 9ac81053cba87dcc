"""Argument checks shared by the attack entry points (raised before any tracing)."""

from __future__ import annotations

import functools
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
    ValueError: ``params`` has a leaf that is not an array (e.g. an Equinox module not
      split by ``eqx.partition``), ``batch`` is not a pair (a dict is named as such),
      ``inputs`` are not floats, ``logits_fn`` does not return ``[B, K]``, or ``labels``
      are not integers ``[B]`` in ``[0, K)``.
  """
  _checks.check_params(params)
  _checks.check_not_mapping(batch, name)
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


def compile_static(static_argnames: tuple[str, ...]):
  """``jax.jit`` with keyword ``static_argnames``, falling back to plain tracing.

  Entry points validate their arguments eagerly, then call a core decorated with this, so
  eager calls run one compiled program (cached per ``logits_fn`` object and static
  hyperparameters) instead of op-by-op dispatch. A static argument that is not hashable
  (e.g. an unhashable callable) runs the core uncompiled instead of failing; inside an
  outer ``jit`` both paths inline.
  """

  def decorate(fn):
    jitted = jax.jit(fn, static_argnames=static_argnames)

    @functools.wraps(fn)
    def call(*args, **kwargs):
      try:
        for name in static_argnames:
          hash(kwargs.get(name))
      except TypeError:
        return fn(*args, **kwargs)
      return jitted(*args, **kwargs)

    return call

  return decorate


MIN_BUCKET = 8  # smallest padded batch of the compacting attacks (AutoAttack, Square)


def bucket_size(count: int, batch_size: int, *, per_octave: int = 4) -> int:
  """Padded size for ``count`` rows still attacked, at most B: ``per_octave`` buckets.

  ``count`` in ``(2^(m−1), 2^m]`` is rounded up to a multiple of ``2^m / (2 per_octave)``
  (``per_octave`` 4: ..., 20, 24, 28, 32, 40, 48, ...; at least 8), so padding adds under
  ``1 / per_octave`` of the rows. One compiled program serves every count in a bucket:
  compacting a batch as its points are broken costs at most ``per_octave`` compilations
  per halving, ``per_octave · log2(B / 8) + 1`` in all.
  """
  if count <= MIN_BUCKET:
    return min(MIN_BUCKET, batch_size)
  step = max((1 << (count - 1).bit_length()) // (2 * per_octave), 1)
  return min(-(-count // step) * step, batch_size)
