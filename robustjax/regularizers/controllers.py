"""Adaptive regularization strengths as optax-style controllers: pure ``init``/``update``.

One convention for every controller (like ``optax.GradientTransformation``):

    state = controller.init()
    output, state = controller.update(value, state)   # after each batch

``value`` ``[]`` is what the controller watches (a training loss, a penalty's error);
``output`` ``[]`` is the strength to use for the next batch, and ``state.output`` is
always the current one (the initial strength before the first update), so a train step
reads ``state.output`` before the batch and calls ``update`` after it. States are
NamedTuples (pytrees: checkpointed with the train state); :class:`EmptyState` is carried
when no controller is configured (output 1, no leaves). Non-finite values leave the
state unchanged.

Controllers:

* :func:`adaptive_psi`: Woods et al. (2019) "Adversarial explanations for understanding
  image classification decisions and improved neural network robustness", eq. 15, an
  integrating controller that steers the training loss towards a target:
  ``S_b = max(0, S_{b-1} + clip(−ln(L_b / L_target), −ε_worse, ε_better))``,
  ``ψ_b = k_ψ,0 exp(k_ψ S_b)``. A loss below the target grows ψ; the clamp at zero keeps
  ψ >= k_ψ,0 (Sec. III-F).
* :func:`elle_a`: ELLE-A of Abad Rocamora et al. (2024) "Efficient Local Linearity
  Regularization Overcomes Catastrophic Overfitting": λ starts at ``lam_min`` (0); after
  each batch with linearity error ``E_b``, if at least ``min_history`` earlier errors were
  seen and ``E_b > μ + s·σ`` (mean and population std of all earlier errors), λ jumps to
  ``lam_max``, otherwise it decays, ``λ ← lam_min + γ (λ − lam_min)``; then ``E_b`` joins
  the history. Defaults are the authors' CIFAR-10 setting: ``lam_max = 4000``, ``γ =
  0.99``, ``s = 2``, ``lam_min = 0``, history of at least 3 errors (their code keeps every
  error of the run; the mean and variance are kept here as running moments).

:func:`create` builds a controller from its config name and settings.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from robustjax import _checks
from robustjax.types import Array


class EmptyState(NamedTuple):
  """The state carried when no controller is configured: strength 1, never updated."""

  @property
  def output(self) -> Array:
    return jnp.ones([], jnp.float32)


class AdaptivePsiState(NamedTuple):
  """State of the adaptive-ψ controller (Woods et al. eq. 15)."""
  integral: Array  # [] float32, the clamped running sum S of clipped log-ratios
  psi: Array  # [] float32, the current strength ψ = k_ψ,0 exp(k_ψ S)
  count: Array  # [] int32, number of updates (batches) seen

  @property
  def output(self) -> Array:
    return self.psi


class ElleAState(NamedTuple):
  """State of the ELLE-A controller: λ and the running moments of the errors seen."""
  lam: Array  # [] float32, the current strength λ
  count: Array  # [] int32, errors in the history
  mean: Array  # [] float32, their mean μ
  m2: Array  # [] float32, the sum of squared deviations (Welford), σ² = m2 / count

  @property
  def output(self) -> Array:
    return self.lam


class Controller(NamedTuple):
  """A pure ``init``/``update`` pair (like ``optax.GradientTransformation``).

  ``init() -> state``; ``update(value [], state) -> (output [], new_state)`` with
  ``output == new_state.output``, the strength for the next batch.
  """
  init: Callable[[], Any]
  update: Callable[[Array, Any], tuple[Array, Any]]


# Kept for existing callers: the adaptive-ψ pair is a Controller.
AdaptivePsi = Controller


def _check_psi(target_loss, initial_psi, gain, eps_better, eps_worse):
  _checks.check_positive(target_loss, 'target_loss')
  _checks.check_positive(initial_psi, 'initial_psi')
  _checks.check_nonnegative(gain, 'gain')
  _checks.check_nonnegative(eps_better, 'eps_better')
  _checks.check_nonnegative(eps_worse, 'eps_worse')


def _finite(value: Array) -> Array:
  return ~(jnp.isnan(value) | jnp.isinf(value))


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
      half-half L2,min training, not the clean CE (> 0; a zero loss counts as "better"
      by the full ``eps_better``; a non-finite loss leaves the state unchanged).
    state: the controller state.
    target_loss: ``L_target`` (> 0), the training loss the controller steers towards.
    initial_psi: ``k_ψ,0`` (> 0), the minimum and initial strength.
    gain: ``k_ψ`` (>= 0), the integrator gain.
    eps_better: clip of the log-ratio when the loss is below the target.
    eps_worse: clip of the log-ratio when the loss is above the target.

  Returns:
    ``(psi, new_state)``: the strength ``[]`` for the next batch and the new state.
  """
  _check_psi(target_loss, initial_psi, gain, eps_better, eps_worse)
  loss = jnp.asarray(train_loss, jnp.float32)
  log_ratio = -(jnp.log(jnp.maximum(loss, 0.0)) - jnp.log(jnp.float32(target_loss)))
  step = jnp.clip(log_ratio, -eps_worse, eps_better)
  integral = jnp.maximum(state.integral + step, 0.0)
  integral = jnp.where(_finite(loss), integral, state.integral)
  psi = jnp.float32(initial_psi) * jnp.exp(jnp.float32(gain) * integral)
  return psi, AdaptivePsiState(integral=integral, psi=psi, count=state.count + 1)


def adaptive_psi(*, target_loss: float, initial_psi: float = 220.0, gain: float = 0.02,
                 eps_better: float = 1.0, eps_worse: float = 0.01) -> Controller:
  """The adaptive-ψ controller of Woods et al. eq. 15 with the paper's typical values.

  Defaults are those of Sec. III-F: ``k_ψ,0 = 220, k_ψ = 0.02, ε_better = 1,
  ε_worse = 0.01`` (early experiments used ``k_ψ,0 = 0.01, ε_worse = 1``).

  Example::

    ctrl = adaptive_psi(target_loss=1.007)
    state = ctrl.init()
    psi = state.output                   # strength for the first batch
    psi, state = ctrl.update(ce, state)  # after each batch, with its CE loss

  Args:
    target_loss: ``L_target`` (> 0).
    initial_psi: ``k_ψ,0`` (> 0).
    gain: ``k_ψ`` (>= 0).
    eps_better: clip for losses below the target (>= 0).
    eps_worse: clip for losses above the target (>= 0).

  Returns:
    A :class:`Controller` ``(init, update)`` pair of pure, jit-able functions.
  """
  _check_psi(target_loss, initial_psi, gain, eps_better, eps_worse)

  def init() -> AdaptivePsiState:
    return adaptive_psi_init(initial_psi=initial_psi)

  def update(train_loss: Array, state: AdaptivePsiState):
    return adaptive_psi_update(train_loss, state, target_loss=target_loss,
                               initial_psi=initial_psi, gain=gain,
                               eps_better=eps_better, eps_worse=eps_worse)

  return Controller(init=init, update=update)


def _check_elle_a(lam_max, lam_min, decay, sensitivity, min_history):
  _checks.check_nonnegative(lam_min, 'lam_min')
  _checks.check_nonnegative(lam_max, 'lam_max')
  if not lam_max >= lam_min:
    raise ValueError(f'lam_max must be >= lam_min, got lam_max={lam_max}, '
                     f'lam_min={lam_min}')
  if not 0.0 <= decay <= 1.0:
    raise ValueError(f'decay must be in [0, 1], got {decay}')
  _checks.check_nonnegative(sensitivity, 'sensitivity')
  return _checks.check_int(min_history, 'min_history', minimum=1)


def elle_a_init(*, lam_min: float = 0.0) -> ElleAState:
  """ELLE-A's initial state: ``λ = lam_min``, an empty history."""
  _checks.check_nonnegative(lam_min, 'lam_min')
  zero = jnp.zeros([], jnp.float32)
  return ElleAState(lam=jnp.asarray(lam_min, jnp.float32), count=jnp.zeros([], jnp.int32),
                    mean=zero, m2=zero)


def elle_a_update(error: Array, state: ElleAState, *, lam_max: float = 4000.0,
                  lam_min: float = 0.0, decay: float = 0.99, sensitivity: float = 2.0,
                  min_history: int = 3) -> tuple[Array, ElleAState]:
  """One ELLE-A step after a batch whose mean linearity error was ``error``.

  Args:
    error: ``[]`` the batch's ``E_lin`` (mean over the batch of the squared error of
      :func:`robustjax.regularizers.elle`, before λ); a non-finite value leaves the
      state unchanged.
    state: the controller state.
    lam_max: λ after a jump (>= lam_min).
    lam_min: the floor λ decays to (>= 0), and the initial λ.
    decay: γ in [0, 1].
    sensitivity: s >= 0, the jump threshold ``μ + s σ``.
    min_history: earlier errors needed before a jump can happen (>= 1).

  Returns:
    ``(lam, new_state)``: λ ``[]`` for the next batch and the new state.
  """
  min_history = _check_elle_a(lam_max, lam_min, decay, sensitivity, min_history)
  e = jnp.asarray(error, jnp.float32)
  n = state.count.astype(jnp.float32)
  std = jnp.sqrt(jnp.maximum(state.m2, 0.0) / jnp.maximum(n, 1.0))
  jump = (state.count >= min_history) & (e > state.mean + sensitivity * std)
  decayed = lam_min + decay * (state.lam - lam_min)
  lam = jnp.where(jump, jnp.float32(lam_max), decayed)
  count = state.count + 1
  delta = e - state.mean
  mean = state.mean + delta / count.astype(jnp.float32)
  m2 = state.m2 + delta * (e - mean)
  new = ElleAState(lam=lam.astype(jnp.float32), count=count, mean=mean, m2=m2)
  ok = _finite(e)
  new = ElleAState(*(jnp.where(ok, a, b) for a, b in zip(new, state)))
  return new.lam, new


def elle_a(*, lam_max: float = 4000.0, lam_min: float = 0.0, decay: float = 0.99,
           sensitivity: float = 2.0, min_history: int = 3) -> Controller:
  """ELLE-A's adaptive λ (Abad Rocamora et al. 2024), the authors' defaults.

  Fed the ELLE term's mean linearity error after each batch, it returns the λ that
  scales the term on the next one (see the module docstring for the rule). The authors
  use ``lam_max = 4000`` on CIFAR-10 for every ε in 2/255..26/255, γ = 0.99, s = 2.

  Args:
    lam_max: λ after a jump (>= lam_min).
    lam_min: floor and initial λ (>= 0; the authors: 0).
    decay: γ in [0, 1].
    sensitivity: s >= 0.
    min_history: earlier errors needed before a jump (>= 1; the authors: 3).

  Returns:
    A :class:`Controller`.
  """
  _check_elle_a(lam_max, lam_min, decay, sensitivity, min_history)

  def init() -> ElleAState:
    return elle_a_init(lam_min=lam_min)

  def update(error: Array, state: ElleAState):
    return elle_a_update(error, state, lam_max=lam_max, lam_min=lam_min, decay=decay,
                         sensitivity=sensitivity, min_history=min_history)

  return Controller(init=init, update=update)


def empty() -> Controller:
  """The controller of a run without one: :class:`EmptyState`, output 1 forever."""
  return Controller(init=EmptyState, update=lambda value, state: (state.output, state))


_BUILDERS = {'adaptive_psi': adaptive_psi, 'elle_a': elle_a}
NAMES = ('none',) + tuple(_BUILDERS)


def create(name: str, **settings) -> Controller | None:
  """The controller registered as ``name`` with keyword ``settings`` (None for 'none')."""
  _checks.check_choice(name, 'controller name', NAMES)
  if name == 'none':
    return None
  return _BUILDERS[name](**settings)
