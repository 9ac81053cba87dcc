"""Fully connected classifier: flatten, hidden Dense layers, linear logits."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import activations
from robustjax.models import layers


class MLP(nn.Module):
  """Multilayer perceptron on flattened inputs ``[B, ...] -> [B, num_classes]``.

  Smooth activations (``'softplus'``, ``'sigmoid'``, ``'tanh'``) make it the smooth MLP
  whose input Hessian the CRT/CRC certificate bounds in closed form.

  Attributes:
    widths: hidden layer sizes, e.g. ``(128, 128)``; empty for a linear model.
    num_classes: number of logits K.
    activation: activation name (see :func:`activations.get_activation`) or function.
    mean: per-channel input mean (standardisation inside the model), or None.
    std: per-channel input std, or None.
  """
  widths: Sequence[int] = (128, 128)
  num_classes: int = 10
  activation: str = 'relu'
  mean: Sequence[float] | float | None = None
  std: Sequence[float] | float | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    """Maps inputs ``[B, ...]`` in pixel space to logits ``[B, K]``."""
    del train  # No BatchNorm or dropout.
    act = activations.get_activation(self.activation)
    x = layers.Standardize(self.mean, self.std)(x)
    x = jnp.reshape(x, (x.shape[0], -1))
    for width in self.widths:
      x = act(nn.Dense(width)(x))
    return nn.Dense(self.num_classes)(x)
