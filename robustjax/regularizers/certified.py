"""Certified training: cross-entropy of verified margin bounds (IBP and CROWN-IBP).

IBP training is Gowal et al., "On the Effectiveness of Interval Bound Propagation for
Training Verifiably Robust Models" (2018); CROWN-IBP is Zhang et al., "Towards Stable and
Efficient Training of Verifiably Robust Neural Networks" (ICLR 2020).

For lower bounds ``m_t <= z_y − z_t`` over the ε-ball ∩ box (``m_y = 0``), the worst-case
logits are ``−m`` and the objective per example is

    κ · CE(z(x), y) + (1 − κ) · CE(−m, y),

with ``m`` from IBP (``ibp``) or the mixture ``β · m_CROWN-IBP + (1 − β) · m_IBP``
(``crown_ibp``). The papers ramp ε from 0 and move κ (IBP: 1 → 0.5; CROWN-IBP: 1 → 0)
and β (1 → 0) over the ramp: in a config these are ``schedules`` of the term's
hyperparameters ``eps``, ``kappa`` and ``beta`` (:mod:`robustjax.training.schema`),
whose configured values are the final ones.

The network structure comes from the params (as CRT's ``layers_fn``): ``model`` names
robustjax's ``'mlp'`` or ``'small_cnn'`` and ``activation``, ``mean``, ``std`` must be the
model's (:func:`robustjax.certify.bound_propagation.network_from_flax`); ``aux
['network_gap']`` is ``max |z_layers − z_model|`` on the clean batch, 0 when they agree.
Use nominal weight 0 (the term holds the clean CE); ``aux['logits']`` are the clean logits.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import losses
from robustjax.certify import bound_propagation as bp
from robustjax.regularizers.registry import register
from robustjax.types import Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey


def bound_cross_entropy(margins, labels):
  """``CE(−m, y)`` per example for margin lower bounds ``m [B, K]`` (any value at y)."""
  own = jax.nn.one_hot(labels, margins.shape[-1], dtype=bool)
  return losses.cross_entropy(-jnp.where(own, 0.0, margins), labels)


def _check_unit(value, name):
  if not isinstance(value, jax.core.Tracer) and not 0.0 <= float(value) <= 1.0:
    raise ValueError(f'{name} must be in [0, 1], got {value}')


def _check(name, inputs, labels, logits, eps, p, kappa, model, activation, bounds):
  _checks.check_float_inputs(inputs)
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  _checks.check_nonnegative(eps, 'eps')
  p = _checks.check_supported_p(p, bp.NORMS, name)
  _check_unit(kappa, 'kappa')
  _checks.check_choice(model, 'model', ('mlp', 'small_cnn'))
  _checks.check_choice(activation, 'activation', bp.ACTIVATIONS)
  _checks.check_labels(labels, inputs.shape[0], logits.shape[-1])
  return p, bounds


def _objective(logits_fn, params, batch, margins_fn, *, eps, p, kappa, model, activation,
               mean, std, bounds, name):
  inputs, labels = batch
  logits = logits_fn(params, inputs)
  p, bounds = _check(name, inputs, labels, logits, eps, p, kappa, model, activation,
                     bounds)
  network = bp.network_from_flax(params, model=model, activation=activation, mean=mean,
                                 std=std, input_channels=inputs.shape[-1])
  out = jax.eval_shape(lambda n, x: bp.apply(n, x), network, inputs)
  if out.shape != logits.shape:
    raise ValueError(f'{name}: the layers read from params give logits {out.shape}, the '
                     f'model {logits.shape}; model/activation/mean/std must be the model\'s')
  eps = jnp.asarray(eps, inputs.dtype)
  margins, parts = margins_fn(network, inputs, labels, eps, p, bounds)
  clean_ce = losses.cross_entropy(logits, labels)
  robust_ce = bound_cross_entropy(margins, labels)
  values = kappa * clean_ce + (1.0 - kappa) * robust_ce
  own = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  verified = jnp.all(jnp.where(own, jnp.inf, margins) > 0, axis=-1)
  gap = jnp.max(jnp.abs(jax.lax.stop_gradient(bp.apply(network, inputs) - logits)))
  aux = {'logits': logits, 'clean_ce': clean_ce, 'robust_ce': robust_ce,
         'margins': margins, 'verified': verified.astype(jnp.float32),
         'network_gap': gap, **parts}
  return values, aux


def _ibp_margins(network, inputs, labels, eps, p, bounds):
  del p  # the interval contains the L2 ball as well
  return bp._margin_bounds(network, inputs, labels, eps, p=math.inf, method='ibp',  # pylint: disable=protected-access
                           bounds=bounds, chunk_size=1).margins, {}


@register('ibp', takes='logits_fn')
def ibp(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps=0.1,
        p: float = math.inf, kappa=0.5, model: str = 'mlp', activation: str = 'relu',
        mean=None, std=None, bounds: Bounds | None = DEFAULT_BOUNDS):
  """IBP training objective per example (Gowal et al. 2018).

  Args:
    logits_fn: the model ``(params, inputs [B, ...]) -> [B, K]``.
    params: its Flax params (``Dense_i``/``Conv_i``).
    batch: ``(inputs [B, ...], labels [B])``.
    rng: unused (deterministic); for the contract.
    eps: training radius (>= 0); ramped from 0 by a schedule in the configs.
    p: ``inf`` or ``2``.
    kappa: weight of the clean CE in [0, 1] (Gowal et al.: 1 -> 0.5 over the ramp).
    model: ``'mlp'`` or ``'small_cnn'``; activation, mean, std: the model's.
    bounds: input box or None.

  Returns:
    ``(values [B], aux)``: ``aux`` has ``logits``, ``clean_ce``, ``robust_ce``,
    ``margins`` [B, K], ``verified`` [B] (0/1) and ``network_gap``.
  """
  del rng
  return _objective(logits_fn, params, batch, _ibp_margins, eps=eps, p=p, kappa=kappa,
                    model=model, activation=activation, mean=mean, std=std,
                    bounds=bounds, name='ibp')


@register('crown_ibp', takes='logits_fn')
def crown_ibp(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
              eps=0.1, p: float = math.inf, kappa=0.0, beta=0.0, model: str = 'mlp',
              activation: str = 'relu', mean=None, std=None,
              bounds: Bounds | None = DEFAULT_BOUNDS):
  """CROWN-IBP training objective per example (Zhang et al. 2020).

  The margin bound is ``β · m_CROWN-IBP + (1 − β) · m_IBP`` (both valid lower bounds,
  so the mixture is one too); Zhang et al. move β from 1 to 0 and κ from 1 to 0 while ε
  ramps up (the configured values are the final ones). At β = 0 the CROWN-IBP bound is
  not computed (a traced β selects it with ``lax.cond``): after the ramp the term costs
  what IBP's does.

  Args:
    logits_fn, params, batch, rng, eps, p, model, activation, mean, std, bounds: as
      :func:`ibp`.
    kappa: weight of the clean CE in [0, 1].
    beta: weight of the CROWN-IBP bound in [0, 1].

  Returns:
    ``(values [B], aux)`` as :func:`ibp`, plus ``margins_ibp`` and ``margins_crown_ibp``
    (a copy of ``margins_ibp`` where β = 0, since CROWN-IBP is then not run).
  """
  del rng
  _check_unit(beta, 'beta')

  def margins_fn(network, inputs, labels, eps, p, bounds):
    m_ibp, _ = _ibp_margins(network, inputs, labels, eps, p, bounds)
    own = jax.nn.one_hot(labels, m_ibp.shape[-1], dtype=bool)
    m_ibp = jnp.where(own, 0.0, m_ibp)

    def crown(_):
      m = bp._margin_bounds(network, inputs, labels, eps, p=p, method='crown_ibp',  # pylint: disable=protected-access
                            bounds=bounds, chunk_size=inputs.shape[0]).margins
      return jnp.where(own, 0.0, m)

    # CROWN's backward pass is most of the cost and is weighted by beta, which the
    # papers' schedule holds at 0 after the ramp: run it only where beta > 0.
    if isinstance(beta, jax.core.Tracer):
      m_crown = jax.lax.cond(beta > 0, crown, lambda _: m_ibp, None)
    else:
      m_crown = crown(None) if float(beta) > 0 else m_ibp
    mixed = beta * m_crown + (1.0 - beta) * m_ibp
    return mixed, {'margins_ibp': m_ibp, 'margins_crown_ibp': m_crown}

  return _objective(logits_fn, params, batch, margins_fn, eps=eps, p=p, kappa=kappa,
                    model=model, activation=activation, mean=mean, std=std,
                    bounds=bounds, name='crown_ibp')
