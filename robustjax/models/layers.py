"""Shared layers: input standardisation and a BatchNorm whose statistics can be frozen.

``BatchNorm`` behaves like ``flax.linen.BatchNorm`` with one addition that makes
per-example input gradients exact during training (LLR supplement F.2): in train mode it
stores the clean batch's mean/var in the ``'bn_clean_stats'`` collection when that
collection is mutable, and normalises with those stored statistics instead of the
current batch's when they are passed in read-only. The three modes are

=====================================  ===========================================
call                                   normalises with
=====================================  ===========================================
``train=False``                        running averages (``'batch_stats'``)
``train=True``                         the current batch; updates running averages
                                       when ``'batch_stats'`` is mutable and records
                                       the batch's statistics when ``'bn_clean_stats'``
                                       is mutable
``train=True`` + read-only             the given clean statistics: examples no
``'bn_clean_stats'`` in the variables  longer interact
=====================================  ===========================================

:mod:`robustjax.models` wraps these modes in functions; models never need to know.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

CLEAN_STATS = 'bn_clean_stats'


class Standardize(nn.Module):
  """Maps pixel-space inputs ``[B, ..., C]`` to ``(x - mean) / std`` per channel.

  Attributes:
    mean: per-channel means (length C or a scalar), or None for no shift.
    std: per-channel standard deviations, or None for no scaling.
  """
  mean: Sequence[float] | float | None = None
  std: Sequence[float] | float | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.mean is not None:
      x = x - jnp.asarray(self.mean, x.dtype)
    if self.std is not None:
      std = jnp.asarray(self.std, x.dtype)
      x = x / std
    return x


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with freezable clean-batch statistics.

  Attributes:
    momentum: decay of the running averages.
    epsilon: added to the variance.
    scale_init: initialiser of the scale (gamma).
  """
  momentum: float = 0.9
  epsilon: float = 1e-5
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """Normalises ``x [B, ..., C]``; see the module docstring for the modes."""
    features = x.shape[-1]
    axes = tuple(range(x.ndim - 1))
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    scale = self.param('scale', self.scale_init, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)

    if not train:
      mean, var = ra_mean.value, ra_var.value
    elif (self.has_variable(CLEAN_STATS, 'mean')
          and not self.is_mutable_collection(CLEAN_STATS)):
      mean = self.get_variable(CLEAN_STATS, 'mean')
      var = self.get_variable(CLEAN_STATS, 'var')
    else:
      mean = jnp.mean(x, axis=axes)
      var = jnp.mean(jnp.square(x - mean), axis=axes)
      if self.is_mutable_collection('batch_stats') and not self.is_initializing():
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1 - m) * jax.lax.stop_gradient(mean)
        ra_var.value = m * ra_var.value + (1 - m) * jax.lax.stop_gradient(var)
      if self.is_mutable_collection(CLEAN_STATS) and not self.is_initializing():
        self.put_variable(CLEAN_STATS, 'mean', mean)
        self.put_variable(CLEAN_STATS, 'var', var)
    inv = jax.lax.rsqrt(var + self.epsilon) * scale
    return (x - mean) * inv.astype(x.dtype) + bias.astype(x.dtype)
