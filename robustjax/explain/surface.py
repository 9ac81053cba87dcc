"""Loss-surface slices: the loss on a 2-D grid spanned by two input directions.

For curvature notebooks (SCORPIO / LLR / CURE-style plots): a smooth, nearly flat
surface around x signals low curvature; a jagged one, gradient masking.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax import geometry
from robustjax.types import Array, Bounds, Labels, LossFn, Params, PRNGKey


def _inner(a: Array, b: Array) -> Array:
  return jnp.sum(a * b, axis=tuple(range(1, a.ndim)))


def surface_directions(loss_fn: LossFn, params: Params, inputs: Array, labels: Labels, *,
                       rng: PRNGKey) -> tuple[Array, Array]:
  """Two orthonormal (L2) directions per example: the input gradient and a random one.

  The random Gaussian direction is made orthogonal to the gradient (Gram-Schmidt); a
  zero gradient gives a zero first direction. Returns ``(d1, d2)``, each ``[B, ...]``.
  """
  grad = curvature.input_grad(loss_fn, params, inputs, labels)
  d1 = geometry.normalize(grad, 2.0)
  noise = jax.random.normal(rng, inputs.shape, inputs.dtype)
  along = jnp.reshape(_inner(noise, d1), (-1,) + (1,) * (inputs.ndim - 1))
  noise = noise - along * d1
  return d1, geometry.normalize(noise, 2.0)


def loss_surface(loss_fn: LossFn, params: Params, inputs: Array, labels: Labels, *,
                 directions: tuple[Array, Array], radius: float = 1.0, num: int = 21,
                 bounds: Bounds | None = None) -> dict[str, Array]:
  """``values[b, i, j] = ℓ(x_b + α_i d1_b + β_j d2_b)`` on a ``num x num`` grid.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    inputs: ``[B, ...]`` centres x.
    labels: ``[B]``.
    directions: ``(d1, d2)``, each ``[B, ...]`` (e.g. :func:`surface_directions`).
    radius: the grid spans ``[-radius, radius]`` along both directions.
    num: grid points per axis (odd keeps x itself on the grid, at the centre).
    bounds: clip the grid points to this box (None: evaluate outside it too).

  Returns:
    ``{'alphas' [num], 'betas' [num], 'values' [B, num, num]}``.
  """
  _checks.check_float_inputs(inputs)
  _checks.check_positive(radius, 'radius')
  num = _checks.check_int(num, 'num', minimum=1)
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  d1, d2 = directions
  _checks.check_same_shape(inputs, d1, 'inputs', 'directions[0]')
  _checks.check_same_shape(inputs, d2, 'inputs', 'directions[1]')
  coords = jnp.linspace(-radius, radius, num, dtype=inputs.dtype)

  def row(alpha):  # one loss evaluation of B * num points per grid row
    points = (inputs[:, None] + alpha * d1[:, None]
              + coords.reshape((1, num) + (1,) * (inputs.ndim - 1)) * d2[:, None])
    points = geometry.clip_to_box(points, bounds)
    flat = jnp.reshape(points, (-1,) + inputs.shape[1:])
    values = loss_fn(params, flat, jnp.repeat(labels, num))
    return jnp.reshape(values, (inputs.shape[0], num))

  values = jax.lax.map(row, coords)  # [num(alpha), B, num(beta)]
  return {'alphas': coords, 'betas': coords, 'values': jnp.transpose(values, (1, 0, 2))}
