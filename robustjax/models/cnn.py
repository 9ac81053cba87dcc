"""The 4-layer CNN of SOAR (appendix C), the small CNN of the benchmarks."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import activations
from robustjax.models import conv
from robustjax.models import layers


class CNN(nn.Module):
  """SOAR's 4-layer CNN: 3x3 convs, stride 1, channels 32-32-64-64, max-pool after 2 and 4.

  SOAR appendix C fixes the convolutions (kernel 3, stride 1, channels
  ``[32, 32, 64, 64]``, ReLU, 2x2 max-pooling after layers 2 and 4) and not the head;
  here the head is flatten followed by ``hidden`` Dense layers (none by default) and the
  linear logits. 'SAME' padding keeps it valid on any input with H, W divisible by 4,
  e.g. ``[B, 32, 32, 3]`` (CIFAR) or ``[B, 8, 8, 1]`` (digits).

  Attributes:
    num_classes: number of logits K.
    channels: output channels of the four convolutions.
    hidden: widths of Dense layers between the flattened features and the logits.
    activation: activation name or function.
    mean: per-channel input mean, or None.
    std: per-channel input std, or None.
    conv_impl: how convolutions and max-pools are differentiated: 'xla' (XLA's own),
      'patches' (an elementwise max-pool derivative and, for shallow kernels, the
      kernel derivative as a GEMM over input patches, :mod:`robustjax.models.conv`;
      same values and derivatives) or 'auto' (patches on CPU, XLA's elsewhere).
  """
  num_classes: int = 10
  channels: Sequence[int] = (32, 32, 64, 64)
  hidden: Sequence[int] = ()
  activation: str = 'relu'
  mean: Sequence[float] | float | None = None
  std: Sequence[float] | float | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps images ``[B, H, W, C]`` in pixel space to logits ``[B, K]``."""
    del train  # No BatchNorm or dropout.
    if len(self.channels) != 4:
      raise ValueError(f'channels must have 4 entries, got {self.channels!r}')
    act = activations.get_activation(self.activation)
    conv_fn = conv.for_backend(self.conv_impl)
    x = layers.Standardize(self.mean, self.std)(x)
    for i, ch in enumerate(self.channels):
      x = act(nn.Conv(ch, (3, 3), strides=(1, 1), padding='SAME',
                      conv_general_dilated=conv_fn)(x))
      if i in (1, 3):
        x = conv.max_pool(x, (2, 2), strides=(2, 2), impl=self.conv_impl)
    x = jnp.reshape(x, (x.shape[0], -1))
    for width in self.hidden:
      x = act(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)
