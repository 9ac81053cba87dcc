"""Per-example losses and margins from logits, and the bridge logits_fn -> loss_fn."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from robustjax.types import Array, Labels, LogitsFn, LossFn


def cross_entropy(logits: Array, labels: Labels) -> Array:
  """Softmax cross-entropy per example: ``logits [B, K]``, ``labels [B]`` -> ``[B]``."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]


def best_other(logits: Array, labels: Labels) -> Array:
  """``max_{j != y} logits_j`` per example, ``[B]``."""
  masked = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.max(masked, axis=-1)


def runner_up(logits: Array, labels: Labels) -> Labels:
  """``argmax_{j != y} logits_j`` per example, ``[B]`` int32."""
  masked = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.argmax(masked, axis=-1).astype(jnp.int32)


def margin(logits: Array, labels: Labels) -> Array:
  """``z_y − max_{j≠y} z_j`` per example ``[B]``; negative means misclassified."""
  true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  return true - best_other(logits, labels)


def cross_entropy_loss_fn(logits_fn: LogitsFn) -> LossFn:
  """The per-example cross-entropy ``loss_fn(params, inputs, labels) -> [B]`` of a model."""

  def loss_fn(params, inputs, labels):
    return cross_entropy(logits_fn(params, inputs), labels)

  return loss_fn
