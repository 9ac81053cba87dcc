"""Adversarial training as a penalty-style term: the loss at attack points.

Two inner adversaries:

* ``'adversarial'`` (Madry et al.): PGD-k on the loss over ``ball(x, eps) ∩ box`` with
  random start and restarts (the worst case per example is kept), through
  :func:`robustjax.attacks.maximize`. Defaults are Madry's CIFAR-10 L∞ setting
  (ε = 8/255, 7 steps of 2/255, uniform random start). Woods et al.'s "L2" adversary is
  ``p=2, init='zero', steps=7, step_size=eps/7``.
* ``'adversarial_l2min'`` (Woods et al. Sec. III-G, L2,min): before each of the k steps
  the classification is checked; a correctly classified example follows its normalised
  loss gradient, a misclassified one steps back along −δ, both by ``ψ_{k,n} ε`` with
  ``ψ_{k,n} = 2(k−n)/(k(k+1))`` (the steps sum to ε, so no projection is needed; the box
  is enforced by clipping). It stops near the decision boundary. It needs the
  classification, so it takes a ``logits_fn`` and uses cross-entropy as the loss.

``half_half=True`` is Woods' (and Tsipras et al.'s) Half-Half training: only the
examples at even batch positions (0, 2, 4, ...) are attacked, the others keep their
clean input, so ``values`` is the loss of a half-adversarial, half-clean batch. (Strided
rather than the first half so that a batch sharded over devices splits the attack work
evenly.) With half-half, the usual objective is the mean of ``values`` alone (nominal
loss weight 0), since the clean half already carries the clean loss.

``values`` [B] is the loss at the (stop-gradient'd) attack points, differentiable w.r.t.
params; ``aux`` has ``'x_adv'`` [B, ...] and ``'perturbed'`` [B] bool.
Note Woods et al. quote ε as an RMSE: the L2 radius is ``ε_RMSE · sqrt(N)`` (CIFAR-10:
ε_RMSE = 0.01 -> L2 ≈ 0.55).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax import losses
from robustjax.attacks import loop
from robustjax.regularizers.registry import register
from robustjax.types import (
    Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, LossFn, Params, PRNGKey)


def _check_logits_shape(logits_fn: LogitsFn, params: Params, inputs: Array) -> None:
  shape = jax.eval_shape(logits_fn, params, inputs).shape
  if len(shape) != 2 or shape[0] != inputs.shape[0]:
    raise ValueError(f'logits_fn must return logits [B, V] = [{inputs.shape[0]}, V], '
                     f'got shape {shape}')


def _split_half(inputs: Array, labels: Array, half_half: bool):
  if half_half:
    return inputs[::2], labels[::2]
  return inputs, labels


def _merge_half(inputs: Array, attacked: Array, half_half: bool):
  """Writes the attacked rows back; returns ``(x [B, ...], perturbed [B] bool)``."""
  batch = inputs.shape[0]
  if half_half:
    perturbed = (jnp.arange(batch) % 2) == 0
    return inputs.at[::2].set(attacked), perturbed
  return attacked, jnp.ones((batch,), bool)


def pgd_loss_attack(loss_fn: LossFn, params: Params, inputs: Array, labels: Array, *,
                    rng: PRNGKey, eps, p: float, steps: int, step_size, restarts: int,
                    init: str, step_rule: str, keep_best: bool,
                    bounds: Bounds | None) -> Array:
  """PGD-k with restarts on ``loss_fn``; the per-example worst case over restarts.

  Returns ``x_adv`` ``[B, ...]`` in ``ball ∩ box``, stop-gradient'd; params are
  stop-gradient'd inside the attack.
  """
  frozen = jax.lax.stop_gradient(params)
  objective = lambda x: loss_fn(frozen, x, labels)
  best_x, best_v = None, None
  keys = [rng] if restarts == 1 else list(jax.random.split(rng, restarts))
  for key in keys:
    x_adv, values = loop.maximize(objective, inputs, rng=key, eps=eps, p=p, steps=steps,
                                  step_size=step_size, init=init, step_rule=step_rule,
                                  bounds=bounds, keep_best=keep_best)
    if best_x is None:
      best_x, best_v = x_adv, values
    else:
      better = values > best_v
      best_x = jnp.where(jnp.reshape(better, (-1,) + (1,) * (inputs.ndim - 1)), x_adv,
                         best_x)
      best_v = jnp.maximum(values, best_v)
  return jax.lax.stop_gradient(best_x)


@register('adversarial', takes='loss_fn')
def adversarial(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
                eps=8.0 / 255.0, p: float = math.inf, steps: int = 7,
                step_size=2.0 / 255.0, restarts: int = 1, init: str = 'uniform',
                step_rule: str = 'steepest', keep_best: bool = False,
                half_half: bool = False, bounds: Bounds | None = DEFAULT_BOUNDS):
  """Madry adversarial training: the loss at PGD-k points, ``values = ℓ(x_adv)``.

  Args:
    loss_fn: per-example loss ``(params, inputs, labels) -> [B]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the random starts.
    eps: radius (>= 0), scalar or [B].
    p: norm of the ball, ``[1, inf]``.
    steps: PGD steps k (>= 0).
    step_size: step per iteration (None: ``2.5 eps / steps``).
    restarts: random restarts (>= 1); the worst case per example is kept (restart i
      uses ``jax.random.split(rng, restarts)[i]``; a single run uses ``rng`` itself).
    init: ``'uniform'`` (Madry's random start) or ``'zero'``.
    step_rule: ``'steepest'`` (sign for p = inf), ``'sign'`` or ``'adam'``.
    keep_best: return each example's best iterate rather than the last (Madry: last).
    half_half: attack only the even batch positions (Half-Half training).
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``: the loss at the attack points, ``aux['x_adv']``,
    ``aux['perturbed']``.
  """
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  _checks.check_p(p)
  _checks.check_nonnegative(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  restarts = _checks.check_int(restarts, 'restarts', minimum=1)
  _checks.check_choice(init, 'init', loop.INITS)
  _checks.check_choice(step_rule, 'step_rule', loop.STEP_RULES)
  if step_size is not None:
    _checks.check_nonnegative(step_size, 'step_size')
  # Fail before tracing the attack if loss_fn is not per-example (e.g. a mean).
  _checks.check_per_example(jax.eval_shape(loss_fn, params, inputs, labels),
                            inputs.shape[0])
  x_sub, y_sub = _split_half(inputs, labels, half_half)
  if jnp.ndim(eps) and half_half:
    eps = eps[::2]
  attacked = pgd_loss_attack(loss_fn, params, x_sub, y_sub, rng=rng, eps=eps, p=p,
                             steps=steps, step_size=step_size, restarts=restarts,
                             init=init, step_rule=step_rule, keep_best=keep_best,
                             bounds=bounds)
  x_adv, perturbed = _merge_half(inputs, attacked, half_half)
  values = loss_fn(params, x_adv, labels)
  return values, {'x_adv': x_adv, 'perturbed': perturbed}


def l2min_step_sizes(steps: int) -> Array:
  """``ψ_{k,n} = 2(k−n)/(k(k+1))`` for ``n = 0..k−1`` (Woods Sec. III-G); they sum to 1."""
  k = steps
  n = jnp.arange(k, dtype=jnp.float32)
  return 2.0 * (k - n) / (k * (k + 1.0))


def l2min_attack(logits_fn: LogitsFn, params: Params, inputs: Array, labels: Array, *,
                 eps, steps: int, bounds: Bounds | None) -> Array:
  """The L2,min adversary: ascend while correct, step back while misclassified.

  Returns ``x_adv`` ``[B, ...]`` with ``||x_adv − x||₂ <= eps``, stop-gradient'd.
  """
  frozen = jax.lax.stop_gradient(params)
  x0 = jax.lax.stop_gradient(inputs)
  eps_flat = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), inputs.shape[:1])
  eps = jnp.reshape(eps_flat, (-1,) + (1,) * (inputs.ndim - 1))
  if steps == 0:
    return x0

  def summed(x):
    logits = logits_fn(frozen, x)
    return jnp.sum(losses.cross_entropy(logits, labels)), logits

  grad_fn = jax.grad(summed, has_aux=True)

  def body(x, size):
    grad, logits = grad_fn(x)
    correct = jnp.argmax(logits, axis=-1) == labels
    up = geometry.normalize(grad, 2.0)
    back = geometry.normalize(x0 - x, 2.0)
    direction = jnp.where(jnp.reshape(correct, eps.shape), up, back)
    x_next = geometry.clip_to_box(x + size * eps * direction, bounds)
    return jax.lax.stop_gradient(x_next), None

  x, _ = jax.lax.scan(body, x0, l2min_step_sizes(steps).astype(inputs.dtype),
                      unroll=steps)
  # The steps sum to eps; re-project only to absorb rounding.
  return jax.lax.stop_gradient(geometry.project_ball_and_box(x, x0, eps_flat, 2.0, bounds))


@register('adversarial_l2min', takes='logits_fn')
def adversarial_l2min(logits_fn: LogitsFn, params: Params, batch: Batch, *,
                      rng: PRNGKey, eps=0.5, steps: int = 7, half_half: bool = False,
                      bounds: Bounds | None = DEFAULT_BOUNDS):
  """Woods et al.'s L2,min adversarial training: cross-entropy at L2,min points.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, V]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: unused (the adversary is deterministic); accepted for the penalty contract.
    eps: L2 radius (>= 0), scalar or [B] (Woods: ε_RMSE 0.01-0.25 times sqrt(N)).
    steps: k (>= 0), 7 in the paper.
    half_half: attack only the even batch positions (HHAT, recommended by Woods).
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``: cross-entropy at the attack points, ``aux['x_adv']``,
    ``aux['perturbed']``.
  """
  del rng
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  _checks.check_nonnegative(eps, 'eps')
  steps = _checks.check_int(steps, 'steps')
  _check_logits_shape(logits_fn, params, inputs)
  x_sub, y_sub = _split_half(inputs, labels, half_half)
  if jnp.ndim(eps) and half_half:
    eps = eps[::2]
  attacked = l2min_attack(logits_fn, params, x_sub, y_sub, eps=eps, steps=steps,
                          bounds=bounds)
  x_adv, perturbed = _merge_half(inputs, attacked, half_half)
  values = losses.cross_entropy(logits_fn(params, x_adv), labels)
  return values, {'x_adv': x_adv, 'perturbed': perturbed}
