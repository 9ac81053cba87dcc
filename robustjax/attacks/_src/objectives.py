"""Attack objectives from logits: the UL / TL / UM / TM attacks of SCORPIO (eq. 12).

Every objective maps ``(logits [B, K], labels [B], targets [B] | None)`` to per-example
values ``[B]`` that an attack *maximises*. With the classification margin of SCORPIO
eq. 12, ``M(x, y) = log p_y(x) − max_{j≠y} log p_j(x)`` (equal to the logit margin
``z_y − max_{j≠y} z_j``, since the log-partition cancels):

| name | alias | value maximised | attack |
| --- | --- | --- | --- |
| ``'ce'`` | ``'ul'`` | ``CE(z, y)`` | untargeted loss (UL) |
| ``'margin'`` | ``'um'`` | ``−M(x, y)`` | untargeted margin (UM): ``min M(x+δ, y)`` |
| ``'targeted_ce'`` | ``'tl'`` | ``−CE(z, t)`` | random-targeted loss (TL) |
| ``'targeted_margin'`` | ``'tm'`` | ``M(x, t)`` | random-targeted margin (TM) |
| ``'pairwise_margin'`` | | ``z_t − z_y`` | Gowal et al.'s multi-targeted surrogate |

SCORPIO writes TL as ``max l(x+δ, r)``; a targeted attack *lowers* the loss toward the
target ``r``, so TL here maximises ``−CE(z, t)``. Random targets are drawn uniformly
from the classes other than the true one (:func:`random_targets`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import losses
from robustjax.types import Array, Labels, PRNGKey

ObjectiveFn = Callable[[Array, Labels, 'Labels | None'], Array]


def ce(logits: Array, labels: Labels, targets: Labels | None = None) -> Array:
  """Untargeted loss (UL): cross-entropy of the true class, ``[B]``."""
  del targets
  return losses.cross_entropy(logits, labels)


def margin(logits: Array, labels: Labels, targets: Labels | None = None) -> Array:
  """Untargeted margin (UM): ``max_{j≠y} z_j − z_y`` ``[B]``; positive = misclassified."""
  del targets
  return -losses.margin(logits, labels)


def targeted_ce(logits: Array, labels: Labels, targets: Labels | None) -> Array:
  """Targeted loss (TL): ``−CE(z, t)`` ``[B]``, maximal when ``t`` is certain."""
  del labels
  return -losses.cross_entropy(logits, targets)


def targeted_margin(logits: Array, labels: Labels, targets: Labels | None) -> Array:
  """Targeted margin (TM): ``z_t − max_{j≠t} z_j`` ``[B]``; positive = predicted as t."""
  del labels
  return losses.margin(logits, targets)


def pairwise_margin(logits: Array, labels: Labels, targets: Labels | None) -> Array:
  """``z_t − z_y`` ``[B]`` (Gowal et al. 2019): linear in the logits, so PGD on a linear
  model finds its exact maximum; the surrogate of multi-targeted attacks."""
  take = lambda idx: jnp.take_along_axis(logits, idx[:, None], axis=-1)[:, 0]
  return take(targets) - take(labels)


OBJECTIVES: dict[str, ObjectiveFn] = {
    'ce': ce,
    'margin': margin,
    'targeted_ce': targeted_ce,
    'targeted_margin': targeted_margin,
    'pairwise_margin': pairwise_margin,
}
ALIASES = {'ul': 'ce', 'um': 'margin', 'tl': 'targeted_ce', 'tm': 'targeted_margin'}
TARGETED = ('targeted_ce', 'targeted_margin', 'pairwise_margin')


def canonical_name(name: str) -> str:
  """The canonical objective name of ``name`` (aliases resolved); unknown -> ValueError."""
  _checks.check_choice(name, 'objective', tuple(OBJECTIVES) + tuple(ALIASES))
  return ALIASES.get(name, name)


def get_objective(name: str) -> ObjectiveFn:
  """The objective ``(logits, labels, targets) -> [B]`` registered under ``name``.

  Raises:
    ValueError: for an unknown name; the message lists the valid names and aliases.
  """
  return OBJECTIVES[canonical_name(name)]


def is_targeted(name: str) -> bool:
  """Whether objective ``name`` needs target classes."""
  return canonical_name(name) in TARGETED


def random_targets(rng: PRNGKey, labels: Labels, num_classes: int) -> Labels:
  """Targets ``[B]`` drawn uniformly from ``{0..K-1} \\ {y}`` per example (int32)."""
  _checks.check_int(num_classes, 'num_classes', minimum=2)
  offset = jax.random.randint(rng, jnp.shape(labels), 0, num_classes - 1)
  labels = jnp.asarray(labels, jnp.int32)
  return jnp.where(offset >= labels, offset + 1, offset).astype(jnp.int32)
