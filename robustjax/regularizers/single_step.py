"""Single-step adversarial training as penalty-style terms: the loss at one FGSM step.

* ``'fgsm'``: FGSM training. Defaults are Wong et al. (2020), "Fast is better than free:
  Revisiting adversarial training" (FGSM-RS, the catastrophic-overfitting baseline): a
  uniform start ``δ₀ ~ U(ball(ε))``, one step of ``α = 1.25 ε`` along the sign of the
  loss gradient, projection back onto ``ball(x, ε) ∩ box``. ``init='zero', step_size=ε``
  is the FGSM that Andriushchenko & Flammarion (2020) and Abad Rocamora et al. (2024) put
  beside GradAlign and ELLE (its step already lands on the sphere).
* ``'n_fgsm'``: de Jorge et al. (2022), "Make Some Noise: Reliable and Efficient
  Single-Step Adversarial Training": a noisy start ``η ~ U([−kε, kε]^d)`` with ``k = 2``,
  one step of size ``α = ε`` from it, and no projection back to the ε-ball: the training
  point ``x + η + α sign(∇ₓℓ(x + η))`` may lie up to ``(k + 1) ε`` from x (clipped to the
  input box only).

``values`` [B] is the loss at the (stop-gradient'd) training point, differentiable
w.r.t. params; ``aux`` has ``'x_adv'`` [B, ...] (so other terms can be evaluated there
with ``inputs_from``) and ``'perturbed'`` [B] bool. One forward and backward pass for the
step and one forward (and the parameter backward) at the point: about twice a plain step.
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

INITS = ('uniform', 'zero')


def _check(inputs, labels, loss_fn, params, eps, p, bounds, step_size):
  p = _checks.check_p(p)
  _checks.check_float_inputs(inputs)
  _checks.check_radius(eps, inputs.shape[0])
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  if step_size is not None:
    _checks.check_radius(step_size, inputs.shape[0], 'step_size')
  _checks.check_per_example(jax.eval_shape(loss_fn, params, inputs, labels),
                            inputs.shape[0])
  return p, bounds


def gradient_step(loss_fn: LossFn, params: Params, start: Array, labels: Array, *,
                  step_size, p: float) -> Array:
  """``start + lmo(∇ₓℓ(start), step_size)`` (the sign step for p = inf), no gradient.

  Params are frozen: the step is part of the adversary, not of the objective.
  """
  frozen = jax.lax.stop_gradient(params)
  grad = curvature.input_grad(loss_fn, frozen, jax.lax.stop_gradient(start), labels)
  return jax.lax.stop_gradient(start + geometry.lmo(grad, step_size, p))


def _result(loss_fn, params, x_adv, labels) -> tuple[Array, Aux]:
  x_adv = jax.lax.stop_gradient(x_adv)
  return loss_fn(params, x_adv, labels), {
      'x_adv': x_adv, 'perturbed': jnp.ones(x_adv.shape[:1], bool)}


@register('fgsm')
def fgsm(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
         eps=8.0 / 255.0, p: float = math.inf, init: str = 'uniform', step_size=None,
         bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """FGSM training: ``values = ℓ(Π_{ball ∩ box}(x + δ₀ + α sign(∇ₓℓ(x + δ₀))))``.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the random start.
    eps: radius (>= 0), scalar or ``[B]``.
    p: norm of the ball, ``[1, inf]``.
    init: ``'uniform'`` (Wong et al.'s random start) or ``'zero'``.
    step_size: α (None: ``1.25 ε`` for a uniform start, ``ε`` for a zero start).
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``; ``aux['x_adv']`` lies in ``ball(x, ε) ∩ box``.
  """
  inputs, labels = batch
  p, bounds = _check(inputs, labels, loss_fn, params, eps, p, bounds, step_size)
  _checks.check_choice(init, 'init', INITS)
  if step_size is None:
    step_size = 1.25 * jnp.asarray(eps) if init == 'uniform' else eps
  start = inputs
  if init == 'uniform':
    start = geometry.clip_to_box(
        inputs + geometry.random_ball(rng, inputs.shape, eps, p, inputs.dtype), bounds)
  stepped = gradient_step(loss_fn, params, start, labels, step_size=step_size, p=p)
  x_adv = geometry.project_ball_and_box(stepped, jax.lax.stop_gradient(inputs), eps, p,
                                        bounds)
  return _result(loss_fn, params, x_adv, labels)


@register('n_fgsm')
def n_fgsm(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
           eps=8.0 / 255.0, noise: float = 2.0, step_size=None, p: float = math.inf,
           bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """N-FGSM training: ``values = ℓ(clip(x + η + α sign(∇ₓℓ(x + η))))``, no ε-projection.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for η.
    eps: the training radius ε (>= 0), scalar or ``[B]``.
    noise: k >= 0, η is uniform in the Lp ball of radius ``k ε`` (the paper: k = 2, the
      cube ``[−2ε, 2ε]^d``).
    step_size: α (None: ε, the paper's choice).
    p: norm of the noise ball and of the step (the paper: inf).
    bounds: input box or None; ``x + η`` and the training point are clipped to it.

  Returns:
    ``(values [B], aux)``; ``aux['x_adv']`` lies within ``k ε + α`` of x (3ε with the
    defaults) and in the box.
  """
  inputs, labels = batch
  p, bounds = _check(inputs, labels, loss_fn, params, eps, p, bounds, step_size)
  _checks.check_nonnegative(noise, 'noise')
  if step_size is None:
    step_size = eps
  eta = geometry.random_ball(rng, inputs.shape, noise * jnp.asarray(eps), p, inputs.dtype)
  start = geometry.clip_to_box(inputs + eta, bounds)
  stepped = gradient_step(loss_fn, params, start, labels, step_size=step_size, p=p)
  return _result(loss_fn, params, geometry.clip_to_box(stepped, bounds), labels)
