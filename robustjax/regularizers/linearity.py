"""Local-linearity regularizers that avoid the inner maximisation: GradAlign and ELLE.

* ``'gradalign'``: Andriushchenko & Flammarion (2020), "Understanding and Improving Fast
  Adversarial Training": ``1 − cos(∇ₓℓ(x), ∇ₓℓ(x + η))`` with ``η ~ U([−ε, ε]^d)``, used
  beside FGSM training (zero start, step α = ε). The weight λ of the paper is the term's
  weight; their CIFAR-10 choice is ``λ = 0.2`` at ε = 8/255 and, for other radii,
  ``λ = 0.02 · 10^(ε·255/8)`` (their log-linear interpolation: 0.027 at 1/255, 2.0 at
  16/255). It needs double backpropagation (the gradient at x + η is differentiated).
* ``'elle'``: Abad Rocamora et al. (2024), "Efficient Local Linearity Regularization
  Overcomes Catastrophic Overfitting": for ``x_a, x_b ~ U(ball(x, ε))`` and ``α ~ U(0, 1)``,
  ``x_c = α x_a + (1 − α) x_b``, the linearity error
  ``E_lin = |ℓ(x_c) − α ℓ(x_a) − (1 − α) ℓ(x_b)|²``, zero for a loss linear in x on the
  segment. Three forward passes (one of 3B examples), no double backpropagation. λ is the
  term's weight: the authors use λ = 1000 for ε <= 8/255 on CIFAR-10 (5000 for
  10-20/255, 10000 for 22-26/255), beside FGSM training (zero start, step ε). ELLE-A
  adapts λ with :func:`robustjax.regularizers.controllers.elle_a`, fed this term's mean
  value (``config.controller.name = 'elle_a'``, ``controller.loss`` = the term's label).

Both draw their points in ``ball ∩ box`` (the box clip keeps the model on valid pixels;
``bounds=None`` gives the authors' unclipped points). ``values`` [B] are per example
and differentiable w.r.t. params; the random points are not.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax import geometry
from robustjax.regularizers.registry import register
from robustjax.types import (
    Array, Aux, Batch, Bounds, DEFAULT_BOUNDS, LossFn, Params, PRNGKey)


def _flat(x: Array) -> Array:
  return jnp.reshape(x, (x.shape[0], -1))


def cosine(a: Array, b: Array) -> Array:
  """Per-example cosine ``<a, b> / (|a| |b|)`` ``[B]``; 1 where either is zero.

  Differentiable everywhere (the norms of zero rows are never divided by or
  square-rooted), so a saturated softmax with vanishing input gradients stays finite.
  """
  a, b = _flat(a), _flat(b)
  aa, bb = jnp.sum(a * a, -1), jnp.sum(b * b, -1)
  ok = (aa > 0) & (bb > 0)
  denom = jnp.sqrt(jnp.where(ok, aa, 1.0)) * jnp.sqrt(jnp.where(ok, bb, 1.0))
  return jnp.where(ok, jnp.sum(a * b, -1) / denom, 1.0)


def _check(eps, p, bounds, inputs):
  p = _checks.check_p(p)
  _checks.check_radius(eps, jnp.shape(inputs)[0] if jnp.ndim(inputs) else 0)
  bounds = _checks.check_bounds(bounds)
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, bounds)
  return p, bounds


def _uniform_point(rng: PRNGKey, x: Array, eps, p: float, bounds) -> Array:
  """``clip(x + u)``, ``u`` uniform in the Lp ball of radius ``eps``; no gradient."""
  u = geometry.random_ball(rng, x.shape, eps, p, x.dtype)
  return jax.lax.stop_gradient(geometry.clip_to_box(x + u, bounds))


@register('gradalign')
def gradalign(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
              eps=8.0 / 255.0, p: float = math.inf, stop_clean_grad: bool = True,
              bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """GradAlign ``1 − cos(∇ₓℓ(x), ∇ₓℓ(x + η))`` per example, ``η`` uniform in the ball.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for η.
    eps: radius of the noise (>= 0), scalar or ``[B]`` (the paper: the training ε).
    p: norm of the noise ball (the paper: inf, the cube ``[−ε, ε]^d``).
    stop_clean_grad: treat ``∇ₓℓ(x)`` as a constant, as the authors' code does (only the
      gradient at ``x + η`` is differentiated); False differentiates both.
    bounds: input box (``x + η`` is clipped to it) or None.

  Returns:
    ``(values [B], aux)``: ``aux`` has ``'loss'`` ℓ(x) [B] (differentiable w.r.t.
    params), ``'cos'`` [B] and ``'x_noisy'`` [B, ...]. An example whose gradient is zero
    at either point counts as aligned (value 0; the authors drop such examples).
  """
  inputs, labels = batch
  p, bounds = _check(eps, p, bounds, inputs)
  if not isinstance(stop_clean_grad, bool):
    raise ValueError(f'stop_clean_grad must be a bool, got {stop_clean_grad!r}')
  losses, g_clean = curvature.value_and_input_grad(loss_fn, params, inputs, labels)
  if stop_clean_grad:
    g_clean = jax.lax.stop_gradient(g_clean)
  x_noisy = _uniform_point(rng, inputs, eps, p, bounds)
  g_noisy = curvature.input_grad(loss_fn, params, x_noisy, labels)
  cos = cosine(g_clean, g_noisy)
  return 1.0 - cos, {'loss': losses, 'cos': cos, 'x_noisy': x_noisy}


@register('elle')
def elle(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
         eps=8.0 / 255.0, p: float = math.inf,
         bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """ELLE's linearity error ``|ℓ(x_c) − α ℓ(x_a) − (1 − α) ℓ(x_b)|²`` per example.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for ``x_a``, ``x_b`` and ``α``.
    eps: radius (>= 0), scalar or ``[B]`` (the training ε).
    p: norm of the ball (the paper: inf).
    bounds: input box (``x_a``, ``x_b`` are clipped to it; ``x_c`` then lies in it) or
      None.

  Returns:
    ``(values [B], aux)``: ``aux`` has ``'alpha'`` [B], ``'x_a'``, ``'x_b'``, ``'x_c'``
    [B, ...] and ``'losses'`` [3, B] (ℓ at x_a, x_b, x_c).
  """
  inputs, labels = batch
  p, bounds = _check(eps, p, bounds, inputs)
  key_a, key_b, key_alpha = jax.random.split(rng, 3)
  x_a = _uniform_point(key_a, inputs, eps, p, bounds)
  x_b = _uniform_point(key_b, inputs, eps, p, bounds)
  alpha = jax.random.uniform(key_alpha, inputs.shape[:1], inputs.dtype)
  a = jnp.reshape(alpha, (-1,) + (1,) * (inputs.ndim - 1))
  x_c = jax.lax.stop_gradient(a * x_a + (1.0 - a) * x_b)
  batch_size = inputs.shape[0]
  # One forward pass of 3B examples (the loss_fn is per example).
  stacked = loss_fn(params, jnp.concatenate([x_a, x_b, x_c]), jnp.tile(labels, 3))
  losses = jnp.reshape(stacked, (3, batch_size))
  error = (losses[2] - alpha * losses[0] - (1.0 - alpha) * losses[1]) ** 2
  return error, {'alpha': alpha, 'x_a': x_a, 'x_b': x_b, 'x_c': x_c, 'losses': losses}
