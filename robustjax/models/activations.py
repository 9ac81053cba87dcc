"""Pointwise activations by name, including the half-Huber ReLU of Woods et al.

Models name their nonlinearity by string (``activation='hhrelu'``) so configs never hold
Python objects; :func:`get_activation` turns the name into a ``jnp`` function.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

Activation = Callable[[jax.Array], jax.Array]

HHRELU_DEFAULT_D = 1.0  # Woods et al. only used d = 1 (Sec. III-D).


def hhrelu(x: jax.Array, d: float = HHRELU_DEFAULT_D) -> jax.Array:
  """Half-Huber ReLU (Woods et al. eq. 11): a ReLU with a continuous first derivative.

  ``f(x) = 0`` for ``x < 0``, ``d x^2`` for ``0 <= x < 1/(2d)`` and ``x - 1/(4d)`` above,
  so ``f'(x) = clip(2 d x, 0, 1)`` is continuous while ``f''`` jumps (0, 2d, 0).

  Args:
    x: any-shape array.
    d: curvature of the quadratic piece (> 0); the paper uses d = 1.

  Returns:
    ``f(x)``, same shape and dtype as ``x``.
  """
  if not isinstance(d, jax.core.Tracer) and not d > 0:
    raise ValueError(f'd must be > 0, got {d}')
  knee = 1.0 / (2.0 * d)
  quadratic = d * jnp.square(x)
  linear = x - 1.0 / (4.0 * d)
  return jnp.where(x < 0, jnp.zeros_like(x), jnp.where(x < knee, quadratic, linear))


_ACTIVATIONS: dict[str, Activation] = {
    'relu': jax.nn.relu,
    'softplus': jax.nn.softplus,
    'sigmoid': jax.nn.sigmoid,
    'tanh': jnp.tanh,
    'hhrelu': hhrelu,
}


def activation_names() -> tuple[str, ...]:
  """Names accepted by :func:`get_activation`."""
  return tuple(_ACTIVATIONS)


def get_activation(name: str | Activation, **kwargs: Any) -> Activation:
  """Returns the activation called ``name``; a callable is passed through unchanged.

  Args:
    name: one of ``'relu', 'softplus', 'sigmoid', 'tanh', 'hhrelu'``, or a function.
    **kwargs: fixed keyword arguments of the activation, e.g. ``d=2.0`` for ``'hhrelu'``.

  Returns:
    A pointwise function ``x -> f(x)``.

  Raises:
    ValueError: for an unknown name.
  """
  if callable(name):
    return functools.partial(name, **kwargs) if kwargs else name
  if name not in _ACTIVATIONS:
    valid = ', '.join(repr(n) for n in _ACTIVATIONS)
    raise ValueError(f'unknown activation {name!r}; valid choices: {valid}')
  fn = _ACTIVATIONS[name]
  return functools.partial(fn, **kwargs) if kwargs else fn
