"""Curvature-based Robust Training (CRT): CE at curvature-attack points + γ K(θ).

From Singla & Feizi, "Second-Order Provable Defenses against Adversarial Attacks", ICML 2020.

For a smooth MLP (softplus / sigmoid / tanh) and each example, with t the runner-up
class at x, the margin ``f(x) = z_y − z_t`` has global curvature bounds
``m I ⪯ ∇²f ⪯ M I`` (:func:`robustjax.certify.bounds.margin_curvature_bound`).
CRT minimises

    CE(f_θ(x*), y) + γ K(θ),   K = max(M, −m) (differentiable, power-iteration norms),

where x* is the *curvature attack*: the dual of ``min_{||x−x0||₂<=ρ} f(x)``,
``max_{η >= −m} min_x f(x) + η/2 (||x − x0||² − ρ²)`` (Singla & Feizi's attack problem). For
``η >= −m`` the inner problem is convex; it is solved by majorise-minimise steps
``x <- (M x + η x0 − ∇f(x)) / (M + η)`` and η is found by bisection so that
``||x*(η) − x0|| = ρ`` (the distance decreases with η). x* is then projected onto
``ball ∩ box`` and stop-gradient'd.

MLP layout: ``layers_fn(params) -> [(W [d_in, d_out], b [d_out]), ...]``, default
:func:`robustjax.certify.bounds.mlp_layers` (lists of pairs or Flax
``{'Dense_i': {'kernel', 'bias'}}``). ``logits_fn`` must be that same MLP with the same
``activation`` on every hidden layer (the bound is only valid then).

``values`` = CE at x* + γ K per example (the whole CRT objective: use nominal loss
weight 0); ``aux``: ``'ce'``, ``'curvature'`` (K), ``'lower'``, ``'upper'``, ``'x_adv'``,
``'targets'``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax import losses
from robustjax.certify import bounds as bounds_lib
from robustjax.regularizers.registry import register
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def pair_margin(logits: Array, labels: Array, targets: Array) -> Array:
  """``z_y − z_t`` per example ``[B]``."""
  take = lambda idx: jnp.take_along_axis(logits, idx[:, None], axis=-1)[:, 0]
  return take(labels) - take(targets)


def curvature_attack(logits_fn: LogitsFn, params: Params, inputs: Array, labels: Array,
                     targets: Array, *, lower: Array, upper: Array, lipschitz: Array,
                     eps, bisection_steps: int = 30, inner_steps: int = 10,
                     bounds: Bounds | None = DEFAULT_BOUNDS) -> Array:
  """Minimises ``z_y − z_t`` over the L2 ball by the curvature-bounded dual (CRT's attack).

  Args:
    logits_fn: the model.
    params: its parameters (stop-gradient'd here).
    inputs: ``[B, ...]`` points x0.
    labels: ``[B]`` y.
    targets: ``[B]`` t.
    lower: ``[B]`` m, global lower curvature bound of the margin (<= 0).
    upper: ``[B]`` M, global upper bound (>= 0).
    lipschitz: ``[B]`` bound on the margin's gradient norm (brackets η).
    eps: L2 radius ρ, scalar or [B].
    bisection_steps: bisection steps on η.
    inner_steps: majorise-minimise steps per η (warm-started).
    bounds: input box for the final projection, or None.

  Returns:
    ``x*`` ``[B, ...]`` in ``ball ∩ box``, stop-gradient'd.
  """
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  frozen = jax.lax.stop_gradient(params)
  x0 = jax.lax.stop_gradient(inputs)
  lower, upper, lipschitz = (jax.lax.stop_gradient(a) for a in (lower, upper, lipschitz))
  eps = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), inputs.shape[:1])
  margin_grad = jax.grad(lambda x: jnp.sum(pair_margin(logits_fn(frozen, x), labels,
                                                       targets)))
  eta_lo = -jnp.minimum(lower, 0.0)
  eta_hi = eta_lo + lipschitz / jnp.maximum(eps, 1e-12) + 1e-6
  curv = jnp.maximum(upper, 0.0)

  def solve(eta, x):
    denom = _per_example(jnp.maximum(curv + eta, 1e-12), x)
    eta_b, curv_b = _per_example(eta, x), _per_example(curv, x)

    def step(x, _):
      return (curv_b * x + eta_b * x0 - margin_grad(x)) / denom, None

    x, _ = jax.lax.scan(step, x, None, length=inner_steps)
    return x

  def bisect(carry, _):
    lo, hi, x = carry
    eta = 0.5 * (lo + hi)
    x = solve(eta, x)
    outside = geometry.norm(x - x0, 2.0) > eps
    return (jnp.where(outside, eta, lo), jnp.where(outside, hi, eta), x), None

  (_, _, x), _ = jax.lax.scan(bisect, (eta_lo, eta_hi, x0), None,
                              length=bisection_steps)
  x = geometry.project_ball_and_box(x, x0, eps, 2.0, bounds)
  return jax.lax.stop_gradient(x)


@register('crt', takes='logits_fn')
def crt(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
        gamma: float = 0.01, eps=1.58, activation: str = 'softplus',
        layers_fn=bounds_lib.mlp_layers, num_iters: int = 20,
        bisection_steps: int = 30, inner_steps: int = 10, mode: str = 'norm',
        bounds: Bounds | None = DEFAULT_BOUNDS):
  """CRT objective per example: ``CE(x*) + γ K(θ)`` (Singla & Feizi; MNIST defaults).

  Args:
    logits_fn: the smooth MLP ``(params, inputs [B, ...]) -> [B, V]``.
    params: its parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: unused (power iteration starts from a fixed vector); for the contract.
    gamma: γ (>= 0), the curvature weight (0.01 for 2x[1024] softplus on MNIST).
    eps: attack radius ρ (>= 0; 1.58 in Singla & Feizi's MNIST table); 0 trains on x.
    activation: the MLP's hidden activation: ``'softplus'``, ``'sigmoid'``, ``'tanh'``.
    layers_fn: ``params -> [(W [d_in, d_out], b), ...]`` in pixel space.
    num_iters: power iterations per spectral norm.
    bisection_steps: η bisection steps of the attack (30 as the reference code).
    inner_steps: majorise-minimise steps per η (10 as the reference code).
    mode: curvature bound, ``'norm'`` (spectral norms, the reference code's training
      bound) or ``'gram'`` (tighter, per-example power iterations; see
      :func:`robustjax.certify.bounds.margin_curvature_bound`).
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``.
  """
  del rng
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  _checks.check_nonnegative(gamma, 'gamma')
  _checks.check_nonnegative(eps, 'eps')
  _checks.check_choice(activation, 'activation', tuple(bounds_lib.ACTIVATION_CONSTANTS))
  _checks.check_choice(mode, 'mode', bounds_lib.MODES)
  num_iters = _checks.check_int(num_iters, 'num_iters', minimum=1)
  bisection_steps = _checks.check_int(bisection_steps, 'bisection_steps')
  inner_steps = _checks.check_int(inner_steps, 'inner_steps')
  layers = layers_fn(params)
  logits = logits_fn(params, inputs)
  _checks.check_labels(labels, inputs.shape[0], logits.shape[-1])
  targets = losses.runner_up(jax.lax.stop_gradient(logits), labels)
  bound = bounds_lib.margin_curvature_bound(layers, labels, targets,
                                            activation=activation, num_iters=num_iters,
                                            mode=mode)
  curvature = jnp.maximum(bound.upper, -bound.lower)
  static_zero = not isinstance(eps, jax.core.Tracer) and not jnp.ndim(eps) and eps == 0
  if static_zero or bisection_steps == 0:
    x_adv, adv_logits = jax.lax.stop_gradient(inputs), logits
  else:
    x_adv = curvature_attack(logits_fn, params, inputs, labels, targets,
                             lower=bound.lower, upper=bound.upper,
                             lipschitz=bound.lipschitz, eps=eps,
                             bisection_steps=bisection_steps, inner_steps=inner_steps,
                             bounds=bounds)
    adv_logits = logits_fn(params, x_adv)
  ce = losses.cross_entropy(adv_logits, labels)
  values = ce + gamma * curvature
  aux = {'ce': ce, 'curvature': curvature, 'lower': bound.lower, 'upper': bound.upper,
         'x_adv': x_adv, 'targets': targets}
  return values, aux
