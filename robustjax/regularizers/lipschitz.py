"""Stochastic Lipschitz input-gradient regularizer of Woods et al. (eq. 9, Sec. III-B..E).

For each example, K output indices ``v_k`` are drawn without replacement and the input
gradients of those logits are penalised:

    L_adv,z,q = ψ/(K N) Σ_k (Σ_l a_{k,l})^q Σ_j a_{k,j}^z,   a_{k,j} = max(|∂y_{v_k}/∂x_j| − σ, 0)

with N the number of input elements, power ``z`` (default 2), the q-variant factor
(default q = 0, i.e. the plain eq. 9) and the dead zone σ (default 0). Note the
literal formula gives ``L_{z=0,q=1} = N · L_{z=1}`` (the paper calls them equal up to this
normalisation).

With probability ζ the first slot ``v_1`` is the true label t (the other slots, and the
whole draw otherwise, are uniform without replacement, the true label included); with
``tandem=True`` that forced slot penalises ``∂(y_t − y_r)/∂x`` instead, r the runner-up
(largest non-true logit) at x (``L_adv,tandem``).

Draws are per example: each example gets its own indices. This costs the same as one
draw per batch (the paper's description), since one vector-Jacobian product handles a
different output per example, and it lowers the variance.

ψ multiplies eq. 9 only. With the adaptive controller of eq. 15 the train step sets this
penalty's ``psi`` (the configured ``psi`` times the controller's ψ), so output zeroing
keeps its fixed ``k_out`` instead of becoming ``k_out·ψ`` (robustjax.training.step).

Where eq. 9 is evaluated when adversarial training is on: the paper does not say; the
authors' code takes the input gradients on the batch being trained, i.e. the
half-adversarial batch of half-half L2,min training. That is the default of
``configs/base.py``'s ``woods_lipschitz`` (the term's ``inputs_from`` names the L2,min
term, whose attack points this penalty is then called on); ``lipschitz_at='clean'``
evaluates it on the clean batch instead.

Output zeroing (eq. 12), ``k_out Σ_i y_i²``, is added to ``values`` and reported on its
own in ``aux['output_zeroing']`` (``aux['lipschitz']`` holds the eq.-9 part alone), so
a training objective can weight the sum and log both terms. ``aux['logits']`` are the
clean logits ``[B, V]`` (the forward pass the gradients already needed): a trainer may
reuse them for the nominal cross-entropy instead of a second forward pass.

Cost: one forward and K vector-Jacobian products (vmapped over k); the training pass
differentiates through them (double backprop).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import losses
from robustjax.regularizers.registry import register
from robustjax.types import Array, Batch, LogitsFn, Params, PRNGKey


def _safe_pow(a: Array, power: float) -> Array:
  """``a ** power`` for ``a >= 0`` with a finite (zero) gradient at ``a = 0``."""
  if power == 0:
    return jnp.ones_like(a)
  if power == 1:
    return a
  if power == 2:
    return a * a
  positive = a > 0
  return jnp.where(positive, jnp.where(positive, a, 1.0) ** power, 0.0)


def draw_outputs(rng: PRNGKey, labels: Array, *, num_classes: int, num_outputs: int,
                 zeta: float) -> tuple[Array, Array]:
  """Draws ``num_outputs`` output indices per example without replacement.

  Args:
    rng: key.
    labels: ``[B]`` true labels.
    num_classes: V, the number of outputs.
    num_outputs: K <= V.
    zeta: probability that the first slot is forced to the true label.

  Returns:
    ``(indices [B, K] int32, forced [B] bool)``; where ``forced``, ``indices[:, 0]`` is
    the label because of ζ.
  """
  rng_perm, rng_zeta = jax.random.split(rng)
  batch = labels.shape[0]
  noise = jax.random.uniform(rng_perm, (batch, num_classes))
  order = jnp.argsort(noise, axis=1).astype(jnp.int32)  # a uniform permutation per row
  forced = jax.random.bernoulli(rng_zeta, zeta, (batch,))
  # Move the label to slot 0 where forced: swap it with whatever sits there.
  label_pos = jnp.argmax(order == labels[:, None], axis=1)
  first = order[:, 0]
  rows = jnp.arange(batch)
  swapped = order.at[rows, label_pos].set(first).at[rows, 0].set(labels.astype(jnp.int32))
  order = jnp.where(forced[:, None], swapped, order)
  return order[:, :num_outputs], forced


def lipschitz_terms(grads: Array, *, power: float, q: float, dead_zone: float) -> Array:
  """``(Σ_l a_l)^q Σ_j a_j^z / N`` per row, ``a = max(|g| − σ, 0)``.

  Args:
    grads: ``[K, B, ...]`` input gradients of the selected outputs.
    power: z.
    q: the q-variant exponent.
    dead_zone: σ.

  Returns:
    ``[K, B]`` the per-output terms (not yet scaled by ψ or averaged over K).
  """
  flat = jnp.reshape(grads, grads.shape[:2] + (-1,))
  n = flat.shape[-1]
  a = jnp.abs(flat)
  if dead_zone:
    a = jnp.maximum(a - dead_zone, 0.0)
  term = jnp.sum(_safe_pow(a, power), axis=-1)
  if q:
    term = _safe_pow(jnp.sum(a, axis=-1), q) * term
  return term / n


def _check_hparams(psi, num_outputs, power, q, dead_zone, zeta, output_zeroing):
  _checks.check_nonnegative(psi, 'psi')
  _checks.check_int(num_outputs, 'num_outputs', minimum=1)
  _checks.check_nonnegative(power, 'power')
  _checks.check_nonnegative(q, 'q')
  _checks.check_nonnegative(dead_zone, 'dead_zone')
  if not 0.0 <= float(zeta) <= 1.0:
    raise ValueError(f'zeta must be a probability in [0, 1], got {zeta}')
  _checks.check_nonnegative(output_zeroing, 'output_zeroing')


@register('lipschitz', takes='logits_fn')
def lipschitz(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
              psi=220.0, num_outputs: int = 1, power: float = 2.0, q: float = 0.0,
              dead_zone: float = 0.0, zeta: float = 0.0, tandem: bool = False,
              output_zeroing: float = 0.01):
  """Stochastic Lipschitz penalty (Woods et al. eq. 9) plus output zeroing (eq. 12).

  Defaults follow the paper's CIFAR-10 setting: ``L_adv,z=2`` (z = 2, q = 0), K = 1,
  σ = 0, ζ = 0, ψ = 220 (also the adaptive controller's ``k_ψ,0``), ``k_out = 0.01``.

  Args:
    logits_fn: ``logits_fn(params, inputs [B, ...]) -> [B, V]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key for the output draw.
    psi: ψ (>= 0), scalar or a traced value (e.g. from :func:`adaptive_psi`).
    num_outputs: K in ``[1, V]``; K = V makes the penalty deterministic.
    power: z (>= 0).
    q: the q-variant exponent (>= 0; 0 is plain eq. 9).
    dead_zone: σ (>= 0); gradients below σ in magnitude are not penalised.
    zeta: ζ in ``[0, 1]``, probability that slot 1 is the true label.
    tandem: penalise ``∂(y_t − max_{i≠t} y_i)/∂x`` in the ζ-forced slot.
    output_zeroing: ``k_out`` (>= 0) of eq. 12.

  Returns:
    ``(values [B], aux)`` with ``values = L_adv + L_out`` per example and ``aux`` keys
    ``'lipschitz'`` [B], ``'output_zeroing'`` [B], ``'indices'`` [B, K],
    ``'logits'`` [B, V].
  """
  _check_hparams(psi, num_outputs, power, q, dead_zone, zeta, output_zeroing)
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  power, q, dead_zone = float(power), float(q), float(dead_zone)
  logits, vjp_fn = jax.vjp(lambda x: logits_fn(params, x), inputs)
  if logits.ndim != 2 or logits.shape[0] != inputs.shape[0]:
    raise ValueError(f'logits_fn must return logits [B, V], got shape {logits.shape}')
  num_classes = logits.shape[1]
  _checks.check_labels(labels, inputs.shape[0], num_classes)
  if num_outputs > num_classes:
    raise ValueError(f'num_outputs must be in [1, {num_classes}] (the number of '
                     f'outputs V), got {num_outputs}')

  indices, forced = draw_outputs(rng, labels, num_classes=num_classes,
                                 num_outputs=int(num_outputs), zeta=float(zeta))
  cotangents = jax.nn.one_hot(indices, num_classes, dtype=logits.dtype)  # [B, K, V]
  if tandem:
    runner = losses.runner_up(jax.lax.stop_gradient(logits), labels)
    tandem_row = cotangents[:, 0] - jax.nn.one_hot(runner, num_classes, dtype=logits.dtype)
    first = jnp.where(forced[:, None], tandem_row, cotangents[:, 0])
    cotangents = cotangents.at[:, 0].set(first)
  if cotangents.shape[1] == 1:  # the paper's K = 1: a plain VJP, no vmap batching
    grads = vjp_fn(cotangents[:, 0])[0][None]  # [1, B, ...]
  else:
    grads = jax.vmap(lambda c: vjp_fn(c)[0])(jnp.swapaxes(cotangents, 0, 1))  # [K, B, ...]
  terms = lipschitz_terms(grads, power=power, q=q, dead_zone=dead_zone)
  lip = psi * jnp.mean(terms, axis=0)
  zeroing = output_zeroing * jnp.sum(logits * logits, axis=-1)
  values = lip + zeroing
  aux = {'lipschitz': lip, 'output_zeroing': zeroing, 'indices': indices,
         'logits': logits}
  return values, aux
