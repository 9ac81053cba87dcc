"""Input-space derivatives of a per-example loss: gradients, HVPs, GGN products, eigenvalues.

All functions are batched (examples must not interact inside ``loss_fn``), jit-able and
differentiable w.r.t. ``params``, so regularizers can backpropagate through them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax.types import Array, Inputs, Labels, LogitsFn, LossFn, Params, PRNGKey

HVP_METHODS = ('exact', 'forward', 'central')


def value_and_input_grad(loss_fn: LossFn, params: Params, inputs: Inputs,
                         labels: Labels) -> tuple[Array, Array]:
  """Per-example losses ``[B]`` and their input gradients ``[B, ...]`` in one pass."""
  _checks.check_float_inputs(inputs)

  def summed(x):
    losses = loss_fn(params, x, labels)
    _checks.check_per_example(losses, x.shape[0])
    return jnp.sum(losses), losses

  grads, losses = jax.grad(summed, has_aux=True)(inputs)
  return losses, grads


def input_grad(loss_fn: LossFn, params: Params, inputs: Inputs, labels: Labels) -> Array:
  """``∇ₓ ℓ(x_b)`` for every example, ``[B, ...]`` (gradient of the summed loss)."""
  return value_and_input_grad(loss_fn, params, inputs, labels)[1]


def hvp(loss_fn: LossFn, params: Params, inputs: Inputs, labels: Labels, v: Array, *,
        method: str = 'exact', h: float = 1e-2, grad: Array | None = None) -> Array:
  """Per-example input Hessian-vector products ``∇²ₓℓ(x_b) v_b``, ``[B, ...]``.

  Args:
    loss_fn: per-example loss.
    params: model parameters.
    inputs: ``[B, ...]`` points x.
    labels: ``[B]``.
    v: ``[B, ...]`` directions.
    method: ``'exact'`` (forward-over-reverse ``jax.jvp`` of the gradient),
      ``'forward'`` (SCORPIO eq. 10, ``(∇ℓ(x+hv) − ∇ℓ(x))/h``) or ``'central'``
      (eq. 11, ``(∇ℓ(x+hv) − ∇ℓ(x−hv))/(2h)``).
    h: finite-difference step (> 0); ignored by ``'exact'``.
    grad: optional ``∇ₓℓ(x)`` ``[B, ...]`` to recycle in ``'forward'`` (SCORPIO Alg. 1),
      saving one gradient evaluation.

  Returns:
    ``[B, ...]`` the products.
  """
  _checks.check_choice(method, 'method', HVP_METHODS)
  _checks.check_float_inputs(inputs)
  _checks.check_same_shape(inputs, v, 'inputs', 'v')
  _checks.check_float_inputs(v, 'v')
  if grad is not None:
    _checks.check_same_shape(inputs, grad, 'inputs', 'grad')
  if method != 'exact':
    _checks.check_positive(h, 'h')
  gradient = lambda x: input_grad(loss_fn, params, x, labels)
  if method == 'exact':
    return jax.jvp(gradient, (inputs,), (v,))[1]
  if method == 'forward':
    g0 = gradient(inputs) if grad is None else grad
    return (gradient(inputs + h * v) - g0) / h
  return (gradient(inputs + h * v) - gradient(inputs - h * v)) / (2.0 * h)


def ggn_vp(logits_fn: LogitsFn, params: Params, inputs: Inputs, v: Array) -> Array:
  """Gauss-Newton products ``Jᵀ (diag(p) − p pᵀ) J v`` for softmax cross-entropy.

  ``J`` is the input Jacobian of the logits and ``p`` the softmax (LLR supplement C.1);
  the GGN of cross-entropy does not depend on the label. Returns ``[B, ...]``.
  """
  _checks.check_float_inputs(inputs)
  _checks.check_same_shape(inputs, v, 'inputs', 'v')
  _checks.check_float_inputs(v, 'v')
  logits, jv = jax.jvp(lambda x: logits_fn(params, x), (inputs,), (v,))  # [B, K] each
  probs = jax.nn.softmax(logits, axis=-1)
  hjv = probs * jv - probs * jnp.sum(probs * jv, axis=-1, keepdims=True)
  _, vjp = jax.vjp(lambda x: logits_fn(params, x), inputs)
  return vjp(hjv)[0]


def top_hessian_eigenvalue(loss_fn: LossFn, params: Params, inputs: Inputs,
                           labels: Labels, *, rng: PRNGKey, num_iters: int = 20,
                           method: str = 'exact', h: float = 1e-2) -> tuple[Array, Array]:
  """Dominant eigenpair of each example's input Hessian by power iteration.

  Returns the eigenvalue of largest magnitude (signed, as the Rayleigh quotient of the
  final iterate) ``[B]`` and the unit-L2 eigenvector ``[B, ...]``.
  """
  num_iters = _checks.check_int(num_iters, 'num_iters', minimum=1)
  _checks.check_choice(method, 'method', HVP_METHODS)
  _checks.check_float_inputs(inputs)
  if method != 'exact':
    _checks.check_positive(h, 'h')
  grad = input_grad(loss_fn, params, inputs, labels) if method == 'forward' else None
  product = lambda v: hvp(loss_fn, params, inputs, labels, v, method=method, h=h, grad=grad)
  v0 = geometry.normalize(jax.random.normal(rng, inputs.shape, inputs.dtype), 2.0)

  def step(v, _):
    return geometry.normalize(product(v), 2.0), None

  v, _ = jax.lax.scan(step, v0, None, length=num_iters)
  hv = product(v)
  axes = tuple(range(1, inputs.ndim))
  return jnp.sum(v * hv, axis=axes), v
