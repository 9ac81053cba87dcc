"""LLR: the local linearity regularizer of Qin et al. (NeurIPS 2019).

``g(δ; x) = |ℓ(x + δ) − ℓ(x) − δᵀ∇ₓℓ(x)|`` measures how far the loss is from its
linearisation; ``γ(ε, x) = max_{δ∈B(ε)} g(δ; x)`` is approximated by a few steps of PGD
with Adam (LLR supplement Alg. 1, F.1-F.2), and the penalty is
``λ g(δ*) + μ |δ*ᵀ∇ₓℓ(x)|``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax.attacks import loop
from robustjax.regularizers.registry import register
from robustjax.types import (
    Array, Aux, Batch, Bounds, DEFAULT_BOUNDS, LossFn, Params, PRNGKey)


def _inner(a: Array, b: Array) -> Array:
  """Per-example inner product ``[B]`` of ``[B, ...]`` arrays."""
  return jnp.sum(a * b, axis=tuple(range(1, a.ndim)))


def linearity_gap(loss_fn: LossFn, params: Params, inputs: Array, labels: Array,
                  delta: Array, losses: Array, grads: Array) -> Array:
  """``g(δ; x) = |ℓ(x + δ) − ℓ(x) − δᵀ∇ₓℓ(x)|`` per example ``[B]``.

  ``losses`` ``[B]`` and ``grads`` ``[B, ...]`` are ``ℓ(x)`` and ``∇ₓℓ(x)``, computed once
  by the caller.
  """
  return jnp.abs(loss_fn(params, inputs + delta, labels) - losses - _inner(delta, grads))


@register('llr')
def llr(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
        eps=8.0 / 255.0, p: float = math.inf, steps: int = 10, lam: float = 4.0,
        mu: float = 3.0, step_size=0.1,
        bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """LLR penalty ``λ g(δ*; x) + μ |δ*ᵀ∇ₓℓ(x)|`` per example.

  ``δ*`` maximises g over ``ball(ε) ∩ box`` by ``steps`` ascent steps of Adam (step
  0.1) from a uniform random start (Alg. 1 lines 5-9, F.1), and is
  ``stop_gradient``'d; the penalty differentiates through ``ℓ(x + δ*)``, ``ℓ(x)`` and
  ``∇ₓℓ(x)`` (double backprop), as LLR's objective (Alg. 1 line 10). ``ℓ(x)`` and
  ``∇ₓℓ(x)`` are computed once and shared by the inner loop and the penalty.

  Defaults are the CIFAR-10 setting of supplement F.2: ε = 8/255 (L∞), λ = 4, μ = 3,
  10 Adam steps of size 0.1 (Wide-ResNet-28-8; 15 for 40-8). The nominal-loss weight (2)
  and the ε ramp over the first 15 epochs belong to the training objective. ImageNet:
  ε = 4/255, λ = 3, μ = 6, 2 steps (16/255: μ = 9, 10 steps).

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the random start of the inner maximisation.
    eps: radius, scalar or ``[B]``.
    p: norm of the ball, ``[1, inf]``.
    steps: inner Adam steps M >= 0.
    lam: weight λ >= 0 of the linearity gap ``g(δ*)``.
    mu: weight μ >= 0 of the gradient term ``|δ*ᵀ∇ₓℓ(x)|``.
    step_size: Adam step on δ (scalar, ``[B]`` or schedule).
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``; aux ``{'loss' ℓ(x) [B], 'gamma' g(δ*) [B],
    'grad_term' |δ*ᵀ∇ℓ(x)| [B], 'delta' δ* [B, ...]}``.
  """
  p = _checks.check_p(p)
  _checks.check_nonnegative(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  _checks.check_nonnegative(lam, 'lam')
  _checks.check_nonnegative(mu, 'mu')
  bounds = _checks.check_bounds(bounds)
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, bounds)

  losses, grads = curvature.value_and_input_grad(loss_fn, params, inputs, labels)
  frozen = jax.lax.stop_gradient((params, losses, grads))
  clean = jax.lax.stop_gradient(inputs)

  def objective(x_adv):
    frozen_params, frozen_losses, frozen_grads = frozen
    return linearity_gap(loss_fn, frozen_params, clean, labels, x_adv - clean,
                         frozen_losses, frozen_grads)

  x_adv, _ = loop.maximize(objective, clean, rng=rng, eps=eps, p=p, steps=steps,
                           step_size=step_size, init='uniform', step_rule='adam',
                           bounds=bounds, keep_best=False)
  delta = jax.lax.stop_gradient(x_adv - clean)
  gap = linearity_gap(loss_fn, params, clean, labels, delta, losses, grads)
  grad_term = jnp.abs(_inner(delta, grads))
  values = lam * gap + mu * grad_term
  return values, {'loss': losses, 'gamma': gap, 'grad_term': grad_term, 'delta': delta}
