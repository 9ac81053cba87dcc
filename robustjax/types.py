"""The functional contract of robustjax: aliases and Protocols every module agrees on.

A *model* is any JAX-traceable ``logits_fn(params, inputs) -> logits [B, K]``: plain
``jnp`` code, a Flax ``apply`` closure or an Equinox module call all qualify.
A *loss* is ``loss_fn(params, inputs, labels) -> per-example losses [B]``.
``inputs`` are floats ``[B, ...]`` in a box (default ``[0, 1]``); normalisation lives
inside the model, so attacks and certificates act in pixel space.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, TypeAlias

import jax

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params: TypeAlias = Any  # any pytree of arrays
Inputs: TypeAlias = jax.Array  # [B, ...] floats in the input box
Labels: TypeAlias = jax.Array  # [B] int32 in [0, K)
Batch: TypeAlias = tuple[jax.Array, jax.Array]  # (inputs [B, ...], labels [B])
Bounds: TypeAlias = tuple[float, float]  # (low, high) of the input box
Aux: TypeAlias = Mapping[str, Any]  # diagnostics returned next to penalty values

DEFAULT_BOUNDS: Bounds = (0.0, 1.0)


class LogitsFn(Protocol):
  """Maps params and inputs ``[B, ...]`` to logits ``[B, K]``."""

  def __call__(self, params: Params, inputs: Inputs) -> Array:
    ...


class LossFn(Protocol):
  """Maps params, inputs ``[B, ...]`` and labels ``[B]`` to per-example losses ``[B]``."""

  def __call__(self, params: Params, inputs: Inputs, labels: Labels) -> Array:
    ...


class Objective(Protocol):
  """An attack objective: per-example values ``[B]`` that an attack maximises."""

  def __call__(self, logits: Array, labels: Labels, targets: Labels | None) -> Array:
    ...


class Penalty(Protocol):
  """A regularizer: ``(values [B], aux)`` from a loss (or logits) function and a batch.

  Hyperparameters are keyword-only. ``fn`` is a :class:`LossFn` for most methods and a
  :class:`LogitsFn` for those that need network outputs (the registry records which).
  """

  def __call__(self, fn: LossFn | LogitsFn, params: Params, batch: Batch, *,
               rng: PRNGKey, **hparams: Any) -> tuple[Array, Aux]:
    ...
