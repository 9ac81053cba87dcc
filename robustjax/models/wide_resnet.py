"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis), as trained by LLR (supplement F.2).

LLR trains WRN-28-8, WRN-28-10 and WRN-40-8 on CIFAR-10, the 28-8 one with softplus
activations (``activation='softplus'``). A WRN-d-k has ``(d - 4) / 6`` pre-activation
basic blocks in each of 3 stages of 16k, 32k, 64k channels after a 16-channel stem.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import activations
from robustjax.models import conv
from robustjax.models import layers
from robustjax.models import resnet


class WideResNet(nn.Module):
  """WRN-``depth``-``widen_factor`` on images ``[B, H, W, C]``.

  Attributes:
    depth: total depth d; ``(d - 4)`` must be divisible by 6.
    widen_factor: k, the channel multiplier of the three stages.
    num_classes: number of logits K.
    activation: activation name or function ('relu' or 'softplus' as in LLR).
    zero_init_residual: zero-initialise each block's output convolution (off in the
      original WRN).
    mean: per-channel input mean, or None.
    std: per-channel input std, or None.
    conv_impl: 'auto', 'xla' or 'patches' (see :class:`robustjax.models.CNN`).
  """
  depth: int = 28
  widen_factor: int = 10
  num_classes: int = 10
  activation: str = 'relu'
  zero_init_residual: bool = False
  mean: Sequence[float] | float | None = None
  std: Sequence[float] | float | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps images ``[B, H, W, C]`` in pixel space to logits ``[B, K]``."""
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'depth must be 6n + 4 with n >= 1, got {self.depth}')
    blocks = (self.depth - 4) // 6
    widths = [resnet.scaled_width(w, self.widen_factor) for w in (16, 32, 64)]
    act = activations.get_activation(self.activation)
    x = layers.Standardize(self.mean, self.std)(x)
    x = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                conv_general_dilated=conv.for_backend(self.conv_impl), name='stem')(x)
    for i, width in enumerate(widths):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = resnet.PreActBlock(width, strides, self.activation, self.zero_init_residual,
                               self.conv_impl, name=f'stage{i + 1}_block{j + 1}')(x, train)
    x = act(layers.BatchNorm(name='bn_final')(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='head')(x)


def wrn28_10(**kwargs) -> WideResNet:
  """WRN-28-10."""
  return WideResNet(**{'depth': 28, 'widen_factor': 10, **kwargs})


def wrn28_8(**kwargs) -> WideResNet:
  """WRN-28-8 (LLR's CIFAR-10 network, with ``activation='softplus'``)."""
  return WideResNet(**{'depth': 28, 'widen_factor': 8, **kwargs})


def wrn40_8(**kwargs) -> WideResNet:
  """WRN-40-8."""
  return WideResNet(**{'depth': 40, 'widen_factor': 8, **kwargs})
