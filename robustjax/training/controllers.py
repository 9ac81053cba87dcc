"""Adaptive weight controllers as the train step sees them: ``init``, ``value``, ``update``.

The adaptive ψ of Woods et al. (eq. 15) lives in
:mod:`robustjax.regularizers.controllers` as an optax-style ``init``/``update`` pair;
this module adapts it to the train step (ψ read from the state before the step, the
state updated with the loss of the batch the step trained on, see
:func:`robustjax.training.step.controller_loss`) and builds it from
``config.controller``. ``config.controller.loss`` says which loss feeds eq. 15:
``'auto'`` (default, the authors' choice: the classification loss of the trained batch,
i.e. the CE on the half-adversarial batch under half-half L2,min training, the clean CE
without adversarial training), ``'nominal'`` (the clean CE) or a term label. The state is part of the :class:`TrainState`, so ψ is
checkpointed and a resumed run continues with the same ψ.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax.regularizers import controllers as reg_controllers

ControllerState = reg_controllers.AdaptivePsiState


def empty_state() -> ControllerState:
  """The state carried when no controller is configured (ψ = 1, never updated)."""
  return reg_controllers.adaptive_psi_init(initial_psi=1.0)


class Controller(NamedTuple):
  """``init() -> state``, ``value(state) -> ψ []``, ``update(state, loss []) -> state``.

  ``reads`` names the loss the step feeds ``update``: ``'auto'``, ``'nominal'`` or a term
  label (:func:`robustjax.training.step.controller_loss`).
  """
  init: Callable[[], Any]
  value: Callable[[Any], jax.Array]
  update: Callable[[Any, jax.Array], Any]
  reads: str = 'auto'


def adaptive_psi(*, target_loss: float, k0: float = 220.0, k: float = 0.02,
                 eps_better: float = 1.0, eps_worse: float = 0.01,
                 reads: str = 'auto') -> Controller:
  """Woods et al. eq. 15 (``k0 = k_ψ,0``, ``k = k_ψ``), defaults of Sec. III-F."""
  inner = reg_controllers.adaptive_psi(target_loss=target_loss, initial_psi=k0, gain=k,
                                       eps_better=eps_better, eps_worse=eps_worse)

  def value(state):
    return jnp.asarray(state.psi, jnp.float32)

  def update(state, loss):
    return inner.update(loss, state)[1]

  return Controller(inner.init, value, update, reads)


def from_config(ctl) -> Controller | None:
  """The controller named by ``config.controller`` (None for ``'none'``)."""
  if ctl.name == 'none':
    return None
  if ctl.name == 'adaptive_psi':
    return adaptive_psi(target_loss=float(ctl.target_loss), k0=float(ctl.k0),
                        k=float(ctl.k), eps_better=float(ctl.eps_better),
                        eps_worse=float(ctl.eps_worse), reads=str(ctl.get('loss', 'auto')))
  raise ValueError(f'config.controller.name: unknown {ctl.name!r}; valid: none, adaptive_psi')
