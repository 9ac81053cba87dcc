"""Gradient-masking diagnostics: black-box vs white-box margins, confidence, local linearity.

- SCORPIO fig. 4: the margin (eq. 12) after SimBA against the margin after PGD, per
  example; points where the gradient-free SimBA finds a lower margin than PGD (below
  ``y = x``) indicate gradients that mislead the white-box attack.
- SOAR sec. 4.2 / table 5: the mean top-class probability; near-certain predictions
  flatten the loss and hint at masking.
- LLR (supplement sec. C, F): the local linearity ``γ(ε, x) = max_{δ∈B(ε)} g(δ; x)``,
  ``g(δ; x) = |ℓ(x+δ) − ℓ(x) − δᵀ∇ₓℓ(x)|``; large values mean the loss is far from linear
  in the ball, which gradient attacks of few steps cannot follow.
- transfer accuracy: accuracy on attacks crafted against a different (source) model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import attacks
from robustjax import curvature
from robustjax import losses
from robustjax.metrics import robustness
from robustjax.types import (
    Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, LossFn, Params, PRNGKey)


def classification_margin(logits_fn: LogitsFn, params: Params, inputs: Array,
                          labels: Array) -> Array:
  """SCORPIO eq. 12, ``M = log p_y − max_{j≠y} log p_j`` ``[B]`` (= the logit margin)."""
  return losses.margin(logits_fn(params, inputs), labels)


def simba_vs_pgd(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
                 pgd_eps, p: float, pgd_steps: int, simba_eps, simba_steps: int,
                 restarts: int = 1, bounds: Bounds | None = DEFAULT_BOUNDS,
                 tolerance: float = 1e-3) -> dict[str, Array]:
  """Per-example margins after PGD (margin objective) and after SimBA (SCORPIO fig. 4).

  Args:
    logits_fn, params: the model.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key, split between the two attacks.
    pgd_eps, p, pgd_steps, restarts: the white-box attack (paper: PGD(100), 8/255, L∞).
    simba_eps, simba_steps: SimBA's per-coordinate step and step count (paper: 0.2, 200).
    bounds: input box or None.
    tolerance: how much lower SimBA's margin must be to count as stronger.

  Returns:
    ``{'clean_margin', 'pgd_margin', 'simba_margin' [B], 'simba_stronger' [B] bool,
    'fraction_simba_stronger' []}``.
  """
  _checks.check_nonnegative(tolerance, 'tolerance')
  inputs, labels = batch[0], batch[1]
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  rng_pgd, rng_simba = jax.random.split(rng)
  x_pgd = attacks.pgd(logits_fn, params, (inputs, labels), rng=rng_pgd, eps=pgd_eps, p=p,
                      steps=pgd_steps, restarts=restarts, objective='margin',
                      bounds=bounds)
  x_simba = attacks.simba(logits_fn, params, (inputs, labels), rng=rng_simba,
                          eps=simba_eps, steps=simba_steps, bounds=bounds)
  pgd_margin = classification_margin(logits_fn, params, x_pgd, labels)
  simba_margin = classification_margin(logits_fn, params, x_simba, labels)
  stronger = simba_margin < pgd_margin - tolerance
  return {
      'clean_margin': classification_margin(logits_fn, params, inputs, labels),
      'pgd_margin': pgd_margin,
      'simba_margin': simba_margin,
      'simba_stronger': stronger,
      'fraction_simba_stronger': jnp.mean(stronger),
  }


def mean_confidence(logits_fn: LogitsFn, params: Params, inputs: Array, *,
                    mask: Array | None = None) -> Array:
  """Mean over examples of the top-class probability ``max_i p_i(x)`` (SOAR table 5)."""
  _checks.check_float_inputs(inputs)
  top = jnp.max(jax.nn.softmax(logits_fn(params, inputs), axis=-1), axis=-1)
  mask = jnp.ones_like(top, bool) if mask is None else jnp.asarray(mask, bool)
  return jnp.sum(jnp.where(mask, top, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def local_linearity(loss_fn: LossFn, params: Params, inputs: Array, labels: Array, *,
                    rng: PRNGKey, eps, p: float, steps: int = 50, step_size=0.1,
                    step_rule: str = 'adam', bounds: Bounds | None = DEFAULT_BOUNDS,
                    unroll: int | bool | str = 'auto') -> tuple[Array, Array]:
  """LLR's ``γ(ε, x)``: the largest linearisation error in the ball, ``[B]``.

  Maximises ``g(δ; x)`` over ``ball(ε) ∩ box`` from a uniform start, by default with
  Adam on δ (the paper: 50 steps of size 0.1). The value is attained at the returned
  δ, so it is a lower bound on the true maximum. Returns ``(gamma [B], delta [B, ...])``.
  """
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  inputs = jax.lax.stop_gradient(inputs)
  loss0, grad0 = curvature.value_and_input_grad(loss_fn, params, inputs, labels)
  axes = tuple(range(1, inputs.ndim))

  def gap(x_adv):
    delta = x_adv - inputs
    linear = loss0 + jnp.sum(delta * grad0, axis=axes)
    return jnp.abs(loss_fn(params, x_adv, labels) - linear)

  x_adv, gamma = attacks.maximize(gap, inputs, rng=rng, eps=eps, p=p, steps=steps,
                                  step_size=step_size, init='uniform', step_rule=step_rule,
                                  bounds=bounds, keep_best=True, unroll=unroll)
  return gamma, x_adv - inputs


def transfer_accuracy(source_logits_fn: LogitsFn, source_params: Params,
                      target_logits_fn: LogitsFn, target_params: Params, batches, *,
                      rng: PRNGKey, eps, p: float, steps: int, restarts: int = 1,
                      objective: str = 'ce', bounds: Bounds | None = DEFAULT_BOUNDS) -> float:
  """Accuracy of the target model on PGD points crafted against the source model.

  Much lower white-box than transfer accuracy is expected; a target that resists
  white-box attacks but falls to transferred ones masks its gradients (SOAR app. B).
  """
  batches = robustness.iter_batches(batches)

  @jax.jit
  def robust(x, y, key):
    x_adv = attacks.pgd(source_logits_fn, source_params, (x, y), rng=key, eps=eps, p=p,
                        steps=steps, restarts=restarts, objective=objective, bounds=bounds)
    return (robustness.correct(target_logits_fn, target_params, x, y)
            & robustness.correct(target_logits_fn, target_params, x_adv, y))

  hits = total = 0
  bounds = _checks.check_bounds(bounds)
  for i, (inputs, labels, mask) in enumerate(batches):
    _checks.check_in_bounds(inputs, bounds)
    ok = robust(inputs, labels, jax.random.fold_in(rng, i))
    hits += int(jnp.sum(ok & mask))
    total += int(jnp.sum(mask))
  return hits / max(total, 1)
