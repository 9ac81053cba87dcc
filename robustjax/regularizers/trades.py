"""TRADES (Zhang et al. 2019): the KL divergence between clean and adversarial outputs.

The inner adversary maximises ``KL(f(x) ‖ f(x'))`` by PGD (sign steps for L∞) from
``x + 0.001·N(0, 1)`` over ``ball(x, eps) ∩ box``; the penalty is
``β · KL(f(x) ‖ f(x'))`` with gradients through both the clean and the adversarial
softmax (x' is stop-gradient'd). The TRADES objective is ``CE(f(x), y) + values``, and
``aux['logits']`` are the clean logits the KL already computed, so a trainer can reuse
that forward pass for the nominal cross-entropy. Set ``beta=1`` to get the raw KL in
``values`` (it is always in ``aux['kl']``).

The attack is the shared loop (:func:`robustjax.attacks.maximize`) started at the array
``x + 0.001·N(0, 1)`` (projected onto ``ball ∩ box``, which leaves it unchanged unless
``eps`` is below the noise or x sits on the box's edge), returning the last iterate:
TRADES' own PGD. (The start must be off x: the KL's gradient vanishes at x' = x.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax.attacks import loop
from robustjax.regularizers.registry import register
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey


def kl_divergence(clean_logits: Array, adv_logits: Array) -> Array:
  """``KL(softmax(clean) ‖ softmax(adv))`` per example ``[B]``; finite when saturated."""
  log_p = jax.nn.log_softmax(clean_logits, axis=-1)
  log_q = jax.nn.log_softmax(adv_logits, axis=-1)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def kl_attack(logits_fn: LogitsFn, params: Params, inputs: Array, *, rng: PRNGKey, eps,
              p: float, steps: int, step_size, init_std: float,
              bounds: Bounds | None) -> Array:
  """TRADES' inner maximisation of the KL; returns x' ``[B, ...]`` (stop-gradient'd)."""
  frozen = jax.lax.stop_gradient(params)
  x0 = jax.lax.stop_gradient(inputs)
  clean = jax.lax.stop_gradient(logits_fn(frozen, x0))
  start = x0 + init_std * jax.random.normal(rng, inputs.shape, inputs.dtype)
  objective = lambda x: kl_divergence(clean, logits_fn(frozen, x))
  x_adv, _ = loop.maximize(objective, x0, rng=rng, eps=eps, p=p, steps=steps,
                           step_size=step_size, init=start, step_rule='steepest',
                           bounds=bounds, keep_best=False)
  return jax.lax.stop_gradient(x_adv)


@register('trades', takes='logits_fn')
def trades(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
           beta: float = 6.0, eps=8.0 / 255.0, p: float = math.inf, steps: int = 10,
           step_size=2.0 / 255.0, init_std: float = 0.001,
           bounds: Bounds | None = DEFAULT_BOUNDS):
  """TRADES penalty ``β · KL(f(x) ‖ f(x'))`` at the KL-maximising x' (CIFAR defaults).

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, V]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])`` (labels are not used by the KL).
    rng: key for the random start.
    beta: β (>= 0), 6 in the paper.
    eps: radius (>= 0), scalar or [B]; 8/255.
    p: norm of the ball (``[1, inf]``).
    steps: PGD steps (>= 0); 10.
    step_size: step per iteration; 2/255.
    init_std: std of the Gaussian start around x; 0.001.
    bounds: input box or None.

  Returns:
    ``(values [B], aux)`` with ``aux`` keys ``'kl'`` [B], ``'x_adv'`` [B, ...] and
    ``'logits'`` [B, V] (clean).
  """
  inputs, labels = batch
  del labels
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  _checks.check_p(p)
  _checks.check_nonnegative(beta, 'beta')
  _checks.check_nonnegative(eps, 'eps')
  _checks.check_nonnegative(init_std, 'init_std')
  steps = _checks.check_int(steps, 'steps')
  if step_size is not None:
    _checks.check_nonnegative(step_size, 'step_size')
  shape = jax.eval_shape(logits_fn, params, inputs).shape
  if len(shape) != 2 or shape[0] != inputs.shape[0]:
    raise ValueError(f'logits_fn must return logits [B, V] = [{inputs.shape[0]}, V], '
                     f'got shape {shape}')
  x_adv = kl_attack(logits_fn, params, inputs, rng=rng, eps=eps, p=p, steps=steps,
                    step_size=step_size, init_std=init_std, bounds=bounds)
  clean_logits = logits_fn(params, inputs)
  kl = kl_divergence(clean_logits, logits_fn(params, x_adv))
  return beta * kl, {'kl': kl, 'x_adv': x_adv, 'logits': clean_logits}
