"""SCORPIO: Frank-Wolfe on a local quadratic model of the loss (Tsiligkaridis & Roberts).

The quadratic-approximate attack maximises ``Q(v) = gᵀv + ½vᵀHv`` over ``‖v‖_p ≤ ε``
(SCORPIO eq. 3-4) by Frank-Wolfe (eq. 7-8, ``γ_k = 2/(2+k)``), with ``g = ∇ₓℓ(x)`` and
``Hv`` from a forward-Euler (eq. 10, Alg. 1), central (eq. 11) or exact product; the
penalty is ``ℓ(x + v_Q) − ℓ(x)`` (eq. 6).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import curvature
from robustjax import geometry
from robustjax.regularizers.registry import register
from robustjax.types import (
    Array, Aux, Batch, Bounds, DEFAULT_BOUNDS, LossFn, Params, PRNGKey)

SCHEMES = ('forward', 'central', 'exact')

# An oracle for the ascent direction of Q at v: returns a positive multiple of
# ∇Q(v) = g + Hv, [B, ...]. The LMO is invariant to positive scaling per example, so
# finite-difference schemes return h·∇Q(v) and never divide by a tiny h.
GradQ = Callable[[Array], Array]


def frank_wolfe(grad_q: GradQ, g: Array, *, eps, p: float, steps: int,
                return_iterates: bool = False):
  """Frank-Wolfe ascent on a quadratic over the Lp ball (SCORPIO eq. 7, Alg. 1).

  Starts at the maximiser of the linear term ``v⁰ = lmo(g)`` and runs ``steps``
  iterations ``s = lmo(∇Q(v)), v ← (1 − γ_k) v + γ_k s`` with ``γ_k = 2/(2+k)``. The
  loop is a Python loop (``steps`` is small and static): an unrolled loop keeps each
  step near one gradient on XLA:CPU (docs/design.md, "Loops").

  Args:
    grad_q: ``v [B, ...] -> c·∇Q(v) [B, ...]`` for any per-example ``c > 0``.
    g: ``[B, ...]`` the linear term ``∇ₓℓ(x)``.
    eps: radius, scalar or ``[B]``.
    p: norm of the ball, ``[1, inf]``.
    steps: number of FW iterations N (0 returns ``lmo(g)``).
    return_iterates: also return ``[N + 1, B, ...]`` the iterates ``v⁰ … v^N``.

  Returns:
    ``v^N [B, ...]`` (and the iterates if asked).
  """
  p = _checks.check_p(p)
  steps = _checks.check_int(steps, 'steps')
  v = geometry.lmo(g, eps, p)
  iterates = [v]
  for k in range(steps):
    gamma = 2.0 / (2.0 + k)
    s = geometry.lmo(grad_q(v), eps, p)
    v = (1.0 - gamma) * v + gamma * s
    iterates.append(v)
  if return_iterates:
    return v, jnp.stack(iterates)
  return v


def _check_hparams(eps, p, steps, h, scheme, bounds):
  p = _checks.check_p(p)
  _checks.check_nonnegative(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  _checks.check_choice(scheme, 'scheme', SCHEMES)
  if scheme != 'exact':
    _checks.check_positive(h, 'h')
  bounds = _checks.check_bounds(bounds)
  return p, steps, bounds


def _quadratic_direction(loss_fn: LossFn, params: Params, inputs: Array, labels: Array,
                         *, eps, p: float, steps: int, h: float, scheme: str):
  """Per-example losses ``ℓ(x)`` ``[B]`` and the FW maximiser v of Q ``[B, ...]``.

  The losses keep their dependence on params (for the penalty); the FW direction is
  ``stop_gradient``'d. Costs: forward N + 1 input gradients (the gradient at x
  recycled), central 2N + 1 (the ± points evaluated as one 2B-point pass), exact one
  linearisation of the input gradient at x (which yields g) plus N tangent (HVP) passes.
  """
  frozen = jax.lax.stop_gradient(params)
  grad_fn = lambda x, y=labels: curvature.input_grad(loss_fn, frozen, x, y)
  if scheme == 'exact':
    g0, hvp = jax.linearize(grad_fn, jax.lax.stop_gradient(inputs))
    losses = loss_fn(params, inputs, labels)
    _checks.check_per_example(losses, inputs.shape[0])
    grad_q = lambda v: g0 + hvp(v)
  else:
    losses, grads = curvature.value_and_input_grad(loss_fn, params, inputs, labels)
    g0 = jax.lax.stop_gradient(grads)
    if scheme == 'forward':
      # h·∇Q(v) = h·g + ∇ℓ(x + hv) − g   (eq. 9-10, Alg. 1 line 8)
      grad_q = lambda v: h * g0 + grad_fn(inputs + h * v) - g0
    else:
      labels2 = jnp.concatenate([labels, labels])

      def grad_q(v):
        # 2h·∇Q(v) = 2h·g + ∇ℓ(x + hv) − ∇ℓ(x − hv)   (eq. 11), one 2B-point pass.
        both = grad_fn(jnp.concatenate([inputs + h * v, inputs - h * v]), labels2)
        plus, minus = jnp.split(both, 2)
        return 2.0 * h * g0 + plus - minus
  v = frank_wolfe(grad_q, g0, eps=eps, p=p, steps=steps)
  return losses, jax.lax.stop_gradient(v)


def scorpio_attack(loss_fn: LossFn, params: Params, batch: Batch, *,
                   eps=8.0 / 255.0, p: float = math.inf, steps: int = 3, h: float = 1.05,
                   scheme: str = 'forward',
                   bounds: Bounds | None = DEFAULT_BOUNDS) -> Array:
  """The quadratic-approximate attack ``x + v_Q`` (SCORPIO eq. 4), by FW.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    eps: radius, scalar or ``[B]`` (default 8/255).
    p: norm of the ball, ``[1, inf]`` (default inf).
    steps: FW iterations N (default 3, the paper's FE(3)).
    h: finite-difference step (> 0) for ``'forward'``/``'central'``; the difference is
      taken along the FW iterate v, ``‖hv‖_p = h·ε``.
    scheme: ``'forward'`` (N+1 gradients), ``'central'`` (2N+1) or ``'exact'``.
    bounds: input box the returned point is clipped to, or None.

  Returns:
    ``x_adv [B, ...]`` in ``ball(x, ε) ∩ box``, with no gradient.
  """
  p, steps, bounds = _check_hparams(eps, p, steps, h, scheme, bounds)
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, bounds)
  _, v = _quadratic_direction(loss_fn, params, inputs, labels, eps=eps, p=p,
                              steps=steps, h=h, scheme=scheme)
  return jax.lax.stop_gradient(geometry.clip_to_box(inputs + v, bounds))


@register('scorpio')
def scorpio(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey | None = None,
            eps=8.0 / 255.0, p: float = math.inf, steps: int = 3, h: float = 1.05,
            scheme: str = 'forward',
            bounds: Bounds | None = DEFAULT_BOUNDS) -> tuple[Array, Aux]:
  """SCORPIO penalty ``ℓ(x + v_Q) − ℓ(x)`` (eq. 6) with v_Q from N FW steps.

  Defaults are the CIFAR-10 L∞ FE(3) setting (supplement, "Hyperparameters"):
  ε = 8/255, N = 3, forward Euler, h = 1.05 (regularisation weight r = 1.05 is the
  training objective's). Other settings of the supplement: L∞ FE(1) h = 0.95, CD(1|3)
  h = 0.95; L2 (ε = 0.5) FE(1|3) h = 1.15, CD(3) h = 0.95, CD(1) h = 1.25; SVHN FE(3)
  h = 1.25 (L2) and 1.5 (L∞).

  The paper states the attack over the ε-ball alone (eq. 4); since inputs live in a box
  (``[0, 1]`` pixels, which the authors' data pipeline enforces) the penalty is evaluated
  at ``clip(x + v_Q)``, so it measures a loss increase an attacker can actually reach;
  ``bounds=None`` gives the paper's unclipped point. The finite-difference points
  ``x ± h v`` are not clipped: they estimate curvature at x, not attack points.

  ``ℓ(x)`` and ``∇ℓ(x)`` come from one pass; v_Q is ``stop_gradient``'d, so the param
  gradient is one training pass over the 2B points x and x + v_Q.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: unused (deterministic); accepted for the common signature.
    eps: radius, scalar or ``[B]``.
    p: norm of the ball, ``[1, inf]``.
    steps: FW iterations N >= 0.
    h: finite-difference step (> 0; ignored by ``'exact'``).
    scheme: ``'forward'``, ``'central'`` or ``'exact'``.
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``; aux ``{'loss' ℓ(x) [B], 'loss_adv' ℓ(x + v) [B],
    'direction' v [B, ...], 'x_adv' [B, ...]}``.
  """
  del rng
  p, steps, bounds = _check_hparams(eps, p, steps, h, scheme, bounds)
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, bounds)
  losses, v = _quadratic_direction(loss_fn, params, inputs, labels, eps=eps, p=p,
                                   steps=steps, h=h, scheme=scheme)
  x_adv = jax.lax.stop_gradient(geometry.clip_to_box(inputs + v, bounds))
  losses_adv = loss_fn(params, x_adv, labels)
  _checks.check_per_example(losses_adv, inputs.shape[0])
  return losses_adv - losses, {'loss': losses, 'loss_adv': losses_adv,
                               'direction': v, 'x_adv': x_adv}
