"""Pre-activation ResNets (He et al. 2016) with zero-initialised residual branches.

Woods et al. (Sec. III-I) train pre-activation ResNet-44 on CIFAR-10 (3 stages of 7
basic blocks, 16-32-64 filters, doubled with ``width_multiplier=2``) and ResNet-18 on
ImageNet, both with each residual branch's output convolution initialised to zero, so a
fresh block is the identity on its residual path (Goyal et al.), and average instead of
max pooling in the ImageNet stem.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import activations
from robustjax.models import conv
from robustjax.models import layers

_PAD1 = ((1, 1), (1, 1))


def scaled_width(width: int, multiplier: float) -> int:
  """Channel count ``width * multiplier`` rounded, at least 1."""
  return max(1, int(round(width * multiplier)))


class PreActBlock(nn.Module):
  """Basic pre-activation block ``x + conv(act(bn(conv(act(bn(x))))))``.

  When the stride or channel count changes, the shortcut is a 1x1 convolution of the
  pre-activated input instead of ``x`` itself.

  Attributes:
    features: output channels.
    strides: stride of the first convolution (and the shortcut).
    activation: activation name or function.
    zero_init: initialise the branch's output convolution to zero.
    conv_impl: 'auto', 'xla' or 'patches' (see :class:`robustjax.models.CNN`).
  """
  features: int
  strides: int = 1
  activation: str = 'relu'
  zero_init: bool = True
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps ``[B, H, W, C]`` to ``[B, H/strides, W/strides, features]``."""
    act = activations.get_activation(self.activation)
    s = (self.strides, self.strides)
    conv_fn = conv.for_backend(self.conv_impl)
    pre = act(layers.BatchNorm(name='bn1')(x, train))
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = nn.Conv(self.features, (1, 1), strides=s, use_bias=False,
                         conv_general_dilated=conv_fn, name='shortcut')(pre)
    else:
      shortcut = x
    y = nn.Conv(self.features, (3, 3), strides=s, padding=_PAD1, use_bias=False,
                conv_general_dilated=conv_fn, name='conv1')(pre)
    y = act(layers.BatchNorm(name='bn2')(y, train))
    out_init = (nn.initializers.zeros if self.zero_init
                else nn.initializers.lecun_normal())
    y = nn.Conv(self.features, (3, 3), padding=_PAD1, use_bias=False,
                kernel_init=out_init, conv_general_dilated=conv_fn, name='conv2')(y)
    return shortcut + y


class PreActResNet(nn.Module):
  """Pre-activation ResNet of basic blocks: stem, stages, BN-act, global pool, Dense.

  Attributes:
    stage_sizes: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
    stage_widths: channels per stage before ``width_multiplier``.
    num_classes: number of logits K.
    width_multiplier: scales every channel count (2 for Woods' double-width ResNet-44).
    activation: activation name or function ('hhrelu' as in Woods et al.).
    stem: 'cifar' (3x3 conv, stride 1) or 'imagenet' (7x7 conv stride 2, 3x3 average
      pool stride 2).
    zero_init_residual: zero-initialise each block's output convolution.
    mean: per-channel input mean, or None.
    std: per-channel input std, or None.
    conv_impl: 'auto', 'xla' or 'patches' (see :class:`robustjax.models.CNN`).
  """
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  stage_widths: Sequence[int] = (64, 128, 256, 512)
  num_classes: int = 10
  width_multiplier: float = 1.0
  activation: str = 'relu'
  stem: str = 'cifar'
  zero_init_residual: bool = True
  mean: Sequence[float] | float | None = None
  std: Sequence[float] | float | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps images ``[B, H, W, C]`` in pixel space to logits ``[B, K]``."""
    if len(self.stage_sizes) != len(self.stage_widths):
      raise ValueError('stage_sizes and stage_widths must have the same length, got '
                       f'{self.stage_sizes!r} and {self.stage_widths!r}')
    widths = [scaled_width(w, self.width_multiplier) for w in self.stage_widths]
    act = activations.get_activation(self.activation)
    conv_fn = conv.for_backend(self.conv_impl)
    x = layers.Standardize(self.mean, self.std)(x)
    if self.stem == 'cifar':
      x = nn.Conv(widths[0], (3, 3), padding=_PAD1, use_bias=False,
                  conv_general_dilated=conv_fn, name='stem')(x)
    elif self.stem == 'imagenet':
      x = nn.Conv(widths[0], (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
                  use_bias=False, conv_general_dilated=conv_fn, name='stem')(x)
      x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=_PAD1)
    else:
      raise ValueError(f"unknown stem {self.stem!r}; valid choices: 'cifar', 'imagenet'")
    for i, (size, width) in enumerate(zip(self.stage_sizes, widths)):
      for j in range(size):
        strides = 2 if i > 0 and j == 0 else 1
        x = PreActBlock(width, strides, self.activation, self.zero_init_residual,
                        self.conv_impl, name=f'stage{i + 1}_block{j + 1}')(x, train)
    x = act(layers.BatchNorm(name='bn_final')(x, train))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, name='head')(x)


def resnet18(**kwargs) -> PreActResNet:
  """Pre-activation ResNet-18: 4 stages x 2 blocks, 64-128-256-512 channels."""
  return PreActResNet(**{'stage_sizes': (2, 2, 2, 2),
                         'stage_widths': (64, 128, 256, 512), **kwargs})


def resnet44(**kwargs) -> PreActResNet:
  """CIFAR pre-activation ResNet-44 of Woods et al.: 3 stages x 7 blocks, 16-32-64."""
  return PreActResNet(**{'stage_sizes': (7, 7, 7), 'stage_widths': (16, 32, 64),
                         **kwargs})
