"""The adaptive-ψ controller of Woods et al. (eq. 15), optax style: pure init/update.

The regularization strength ψ of the stochastic Lipschitz penalty is set by an
integrating controller that steers the training (classification) loss towards a target:

    S_b = max(0, S_{b-1} + clip(−ln(L_train,b / L_target), −ε_worse, ε_better))
    ψ_b = k_ψ,0 · exp(k_ψ · S_b)

A loss below the target (the network is doing "better" than asked) grows ψ; a loss
above it shrinks ψ, never below ``k_ψ,0`` because the running sum is clamped at zero
(Sec. III-F: "The inner summation of Eq. (15) was always prevented from falling below
zero, making k_ψ,0 the minimum strength").
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from robustjax import _checks
from robustjax.types import Array


class AdaptivePsiState(NamedTuple):
  """State of the adaptive-ψ controller."""
  integral: Array  # [] float32, the clamped running sum S of clipped log-ratios
  psi: Array  # [] float32, the current strength ψ = k_ψ,0 exp(k_ψ S)
  count: Array  # [] int32, number of updates (batches) seen


class AdaptivePsi(NamedTuple):
  """A pure ``init``/``update`` pair (like ``optax.GradientTransformation``).

  ``init() -> state``; ``update(train_loss, state) -> (psi, new_state)`` where ``psi``
  is the strength to use for the next batch.
  """
  init: Callable[[], AdaptivePsiState]
  update: Callable[[Array, AdaptivePsiState], tuple[Array, AdaptivePsiState]]


def _check(target_loss, initial_psi, gain, eps_better, eps_worse):
  _checks.check_positive(target_loss, 'target_loss')
  _checks.check_positive(initial_psi, 'initial_psi')
  _checks.check_nonnegative(gain, 'gain')
  _checks.check_nonnegative(eps_better, 'eps_better')
  _checks.check_nonnegative(eps_worse, 'eps_worse')


def adaptive_psi_init(*, initial_psi: float = 220.0) -> AdaptivePsiState:
  """The controller's initial state: ``S = 0`` so ``ψ = k_ψ,0``."""
  _checks.check_positive(initial_psi, 'initial_psi')
  return AdaptivePsiState(integral=jnp.zeros([], jnp.float32),
                          psi=jnp.asarray(initial_psi, jnp.float32),
                          count=jnp.zeros([], jnp.int32))


def adaptive_psi_update(train_loss: Array, state: AdaptivePsiState, *,
                        target_loss: float, initial_psi: float = 220.0,
                        gain: float = 0.02, eps_better: float = 1.0,
                        eps_worse: float = 0.01) -> tuple[Array, AdaptivePsiState]:
  """One step of eq. 15 after a batch with classification loss ``train_loss``.

  Args:
    train_loss: ``[]`` the batch's training (classification) loss ``L_train,b``: the
      loss of the batch being trained, e.g. the CE on the half-adversarial batch under
      half-half L2,min training, not the clean CE (> 0;
      a zero loss counts as "better" by the full ``eps_better``; a non-finite loss
      leaves the state unchanged).
    state: the controller state.
    target_loss: ``L_target`` (> 0), the training loss the controller steers towards.
    initial_psi: ``k_ψ,0`` (> 0), the minimum and initial strength.
    gain: ``k_ψ`` (>= 0), the integrator gain.
    eps_better: clip of the log-ratio when the loss is below the target.
    eps_worse: clip of the log-ratio when the loss is above the target.

  Returns:
    ``(psi, new_state)``: the strength ``[]`` for the next batch and the new state.
  """
  _check(target_loss, initial_psi, gain, eps_better, eps_worse)
  loss = jnp.asarray(train_loss, jnp.float32)
  log_ratio = -(jnp.log(jnp.maximum(loss, 0.0)) - jnp.log(jnp.float32(target_loss)))
  step = jnp.clip(log_ratio, -eps_worse, eps_better)
  integral = jnp.maximum(state.integral + step, 0.0)
  integral = jnp.where(jnp.isnan(loss) | jnp.isinf(loss), state.integral, integral)
  psi = jnp.float32(initial_psi) * jnp.exp(jnp.float32(gain) * integral)
  return psi, AdaptivePsiState(integral=integral, psi=psi, count=state.count + 1)


def adaptive_psi(*, target_loss: float, initial_psi: float = 220.0, gain: float = 0.02,
                 eps_better: float = 1.0, eps_worse: float = 0.01) -> AdaptivePsi:
  """The adaptive-ψ controller of Woods et al. eq. 15 with the paper's typical values.

  Defaults are those of Sec. III-F: ``k_ψ,0 = 220, k_ψ = 0.02, ε_better = 1,
  ε_worse = 0.01`` (early experiments used ``k_ψ,0 = 0.01, ε_worse = 1``).

  Example::

    ctrl = adaptive_psi(target_loss=1.007)
    state = ctrl.init()
    psi = state.psi                      # strength for the first batch
    psi, state = ctrl.update(ce, state)  # after each batch, with its CE loss

  Args:
    target_loss: ``L_target`` (> 0).
    initial_psi: ``k_ψ,0`` (> 0).
    gain: ``k_ψ`` (>= 0).
    eps_better: clip for losses below the target (>= 0).
    eps_worse: clip for losses above the target (>= 0).

  Returns:
    An :class:`AdaptivePsi` ``(init, update)`` pair of pure, jit-able functions.
  """
  _check(target_loss, initial_psi, gain, eps_better, eps_worse)

  def init() -> AdaptivePsiState:
    return adaptive_psi_init(initial_psi=initial_psi)

  def update(train_loss: Array, state: AdaptivePsiState):
    return adaptive_psi_update(train_loss, state, target_loss=target_loss,
                               initial_psi=initial_psi, gain=gain,
                               eps_better=eps_better, eps_worse=eps_worse)

  return AdaptivePsi(init=init, update=update)
