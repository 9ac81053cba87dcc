"""Wong & Kolter's "small" convolutional network for 28x28 images (MNIST, Fashion-MNIST)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import activations
from robustjax.models import conv
from robustjax.models import layers


class SmallCNN(nn.Module):
  """Two 4x4 stride-2 convolutions (16, 32 channels), a Dense layer of 100, the logits.

  The MNIST "small" model of Wong & Kolter, "Provable defenses against adversarial
  examples via the convex outer adversarial polytope" (2018), also the small model of
  the certified-training literature (IBP, CROWN-IBP):
  ``Standardize -> Conv(16, 4x4, stride 2, pad 1) -> act -> Conv(32, 4x4, stride 2,
  pad 1) -> act -> flatten -> Dense(100) -> act -> Dense(K)``. Each convolution halves
  H and W (28x28 -> 14x14 -> 7x7), so inputs need H, W divisible by 4 (8x8 digits
  work too). Flax names the layers Conv_0, Conv_1, Dense_0, Dense_1; bound propagation
  (:mod:`robustjax.certify`) reads the parameters by these names.

  Attributes:
    num_classes: number of logits K.
    channels: output channels of the two convolutions.
    hidden: width of the Dense layer before the logits.
    activation: activation name or function.
    mean: per-channel input mean, or None.
    std: per-channel input std, or None.
    conv_impl: 'auto' | 'xla' | 'patches', how convolutions are differentiated
      (:mod:`robustjax.models.conv`; same values and derivatives).
  """
  num_classes: int = 10
  channels: Sequence[int] = (16, 32)
  hidden: int = 100
  activation: str = 'relu'
  mean: Sequence[float] | float | None = None
  std: Sequence[float] | float | None = None
  conv_impl: str = 'auto'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps images ``[B, H, W, C]`` in pixel space to logits ``[B, K]``."""
    del train  # No BatchNorm or dropout.
    if len(self.channels) != 2:
      raise ValueError(f'channels must have 2 entries, got {self.channels!r}')
    act = activations.get_activation(self.activation)
    conv_fn = conv.for_backend(self.conv_impl)
    x = layers.Standardize(self.mean, self.std)(x)
    for ch in self.channels:
      x = act(nn.Conv(ch, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                      conv_general_dilated=conv_fn)(x))
    x = jnp.reshape(x, (x.shape[0], -1))
    x = act(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)
