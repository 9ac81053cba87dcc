"""Accuracy-Robustness Area (ARA) of Woods et al. (sec. II-A, III-A1/2, eq. 2-4).

Per example, the smallest L2 perturbation that reaches an attack goal is found by a
minimal-norm attack and measured on the RMSE scale ``||δ||_2 / sqrt(d)`` (0: no change,
1: black to white, whatever the input size). The accuracy at radius ``r`` is the
fraction of distances ``> r``; the ARA is the area between that curve and a naive
classifier's accuracy ``N``: ``∫₀^∞ max(acc(r) − N, 0) dr``, about ``½ S (A − N)`` for a
triangular curve.

- attack ARA: goal ``g_adv`` (eq. 2), the top-1 label changes; an example misclassified
  at ``x`` has distance 0.
- BTR ARA: goal ``g_btr`` (eq. 4), the true-class probability falls below ``1/K``
  ("better than random"). Every image gets its BTR distance, misclassified ones
  included: an image whose top-1 is wrong but whose ``p_y >= 1/K`` still needs a
  perturbation to fall below random (0 only where ``p_y < 1/K`` already at ``x``).

The naive baseline ``N`` defaults to ``1/K``, the accuracy of a naive classifier on
balanced classes (Woods et al. use 0.1 on CIFAR-10); pass ``naive=`` for unbalanced
data (e.g. :func:`naive_accuracy`, the majority-class rate of a label set), as the paper
does for its unbalanced COCO subsets.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import _checks
from robustjax import attacks
from robustjax.metrics import robustness
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey

GOALS = ('adv', 'btr')
METHODS = ('bisection', 'ticktock')


def rmse(delta: Array) -> Array:
  """Root-mean-squared perturbation ``||δ||_2 / sqrt(d)`` per example, ``[B]``."""
  flat = jnp.reshape(delta, (jnp.shape(delta)[0], -1))
  return jnp.sqrt(jnp.mean(flat * flat, axis=1))


def accuracy_at(distances: Any, radii: Any) -> np.ndarray:
  """Accuracy at each radius ``[R]``: the fraction of ``distances`` ``[N]`` above it."""
  d = np.asarray(distances, np.float64)[None, :]
  return np.mean(d > np.asarray(radii, np.float64)[:, None], axis=1)


def naive_accuracy(labels: Any, num_classes: int | None = None) -> float:
  """Accuracy of always predicting the most frequent label of ``labels`` ``[N]``."""
  labels = np.asarray(labels).reshape(-1)
  if not labels.size:
    raise ValueError('labels must be non-empty to compute a naive accuracy')
  counts = np.bincount(labels, minlength=num_classes or 0)
  return float(counts.max() / labels.size)


def ara_from_distances(distances: Any, *, naive_accuracy: float) -> float:
  """Exact ``∫₀^∞ max(acc(r) − N, 0) dr`` of the step curve of ``distances`` ``[N]``.

  With ``d_(1) >= ... >= d_(n)`` and ``d_(n+1) = 0`` the accuracy is ``k/n`` on
  ``[d_(k+1), d_(k))``, so the area is ``Σ_k max(k/n − N, 0) (d_(k) − d_(k+1))``.
  """
  d = np.sort(np.asarray(distances, np.float64).reshape(-1))[::-1]
  if not d.size:
    raise ValueError('distances must be non-empty')
  if not np.all(d >= 0) or not np.all(np.isfinite(d)):
    raise ValueError('distances must be finite and >= 0 (clip unreached examples to the '
                     'largest radius searched)')
  if not 0.0 <= naive_accuracy <= 1.0:
    raise ValueError(f'naive_accuracy must be in [0, 1], got {naive_accuracy}')
  n = d.size
  widths = d - np.append(d[1:], 0.0)
  heights = np.maximum(np.arange(1, n + 1) / n - naive_accuracy, 0.0)
  return float(np.sum(heights * widths))


def min_norm_distances(logits_fn: LogitsFn, params: Params, batch: Batch, *,
                       goal: str = 'adv', max_rmse: float = 0.25, search_steps: int = 10,
                       steps: int = 20, rng: PRNGKey | None = None,
                       bounds: Bounds | None = DEFAULT_BOUNDS,
                       method: str = 'bisection', inner: str = 'auto') -> Array:
  """Per-example RMSE distance ``[B]`` to the goal.

  ``goal='adv'``: 0 where misclassified at ``x``. ``goal='btr'``: the distance to
  ``p_y < 1/K`` for every example (0 only where ``p_y < 1/K`` at ``x``), whether or not
  its top-1 label is right (Woods eq. 4).

  ``method='bisection'`` uses :func:`robustjax.attacks.min_norm` (L2, bisection on the
  radius with ``steps`` PGD steps per radius); ``'ticktock'`` uses Woods et al.'s own
  Algorithm 1, :func:`robustjax.attacks.min_norm_ticktock`, for ``steps`` iterations (the
  paper: 450; ``search_steps`` and ``rng`` are then unused). Examples
  that do not reach the goal within ``max_rmse`` get ``max_rmse``, so areas computed from
  them are lower bounds. Otherwise distances are upper bounds on the true minima (every
  reported distance is that of a goal-reaching point). For ``2 < K <= 10`` classes the
  bisection tests each radius with a multi-targeted inner attack (``min_norm``'s
  ``inner='auto'``), which finds the nearest of the K - 1 boundaries: on 3- to 10-class
  linear models (goal 'adv', no box) every distance measured was exact to the bisection
  resolution, where untargeted PGD overshot up to 1.9x. It costs K times that PGD. For
  K > 10 untargeted PGD is used and distances can overshoot.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    goal: ``'adv'`` (eq. 2) or ``'btr'`` (eq. 4).
    max_rmse: largest RMSE searched (> 0).
    search_steps: bisection steps; resolution ``max_rmse / 2**search_steps``.
    steps: PGD steps per tested radius.
    rng: optional key (PGD starts at x by default).
    bounds: input box or None.
    method: ``'bisection'`` or ``'ticktock'``.
    inner: the bisection's attack per radius, as :func:`robustjax.attacks.min_norm`:
      ``'auto'``, ``'multi_targeted'`` (exact nearest boundary, K times the cost) or
      ``'pgd'`` (fast, may overshoot for K > 2).
  """
  _checks.check_choice(goal, 'goal', GOALS)
  _checks.check_choice(method, 'method', METHODS)
  _checks.check_positive(max_rmse, 'max_rmse')
  inputs, labels = batch[0], batch[1]
  _checks.check_float_inputs(inputs)
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  dim = math.prod(inputs.shape[1:])
  if method == 'ticktock':
    _, norms = attacks.min_norm_ticktock(logits_fn, params, (inputs, labels), goal=goal,
                                         steps=steps, bounds=bounds)
  else:
    _, norms = attacks.min_norm(logits_fn, params, (inputs, labels), p=2.0,
                                max_eps=max_rmse * math.sqrt(dim), goal=goal,
                                search_steps=search_steps, steps=steps, rng=rng,
                                bounds=bounds, inner=inner)
  distances = jnp.minimum(norms / math.sqrt(dim), max_rmse)
  if goal == 'btr':  # the goal itself is 0 at x where p_y < 1/K (min_norm's norm 0)
    return distances
  hit = robustness.correct(logits_fn, params, inputs, labels)
  return jnp.where(hit, distances, 0.0)


def ara(logits_fn: LogitsFn, params: Params, batches, *, goal: str = 'adv',
        max_rmse: float = 0.25, search_steps: int = 10, steps: int = 20,
        rng: PRNGKey | None = None, bounds: Bounds | None = DEFAULT_BOUNDS,
        method: str = 'bisection', inner: str = 'auto',
        naive: float | None = None) -> dict[str, Any]:
  """Attack ARA (``goal='adv'``) or BTR ARA (``goal='btr'``) over batches.

  Args:
    logits_fn, params: the model.
    batches: one batch or an iterable of ``(inputs, labels[, mask])``.
    goal, max_rmse, search_steps, steps, bounds, method, inner: as
      :func:`min_norm_distances`.
    rng: key; batch ``i`` uses ``fold_in(rng, i)``.
    naive: the naive classifier's accuracy in ``[0, 1]``; default ``1/K`` (balanced
      classes, K the number of logits). For unbalanced data pass e.g.
      ``naive_accuracy(labels)``, the majority-class rate.

  Returns:
    ``{'ara', 'distances' [N], 'clean_accuracy', 'naive_accuracy'}``.
  """
  _checks.check_choice(goal, 'goal', GOALS)
  _checks.check_choice(method, 'method', METHODS)
  bounds = _checks.check_bounds(bounds)
  if naive is not None and not 0.0 <= float(naive) <= 1.0:
    raise ValueError(f'naive must be an accuracy in [0, 1], got {naive}')
  batches = robustness.iter_batches(batches)
  rng = jax.random.PRNGKey(0) if rng is None else rng

  @jax.jit
  def run(prm, x, y, key):
    distances = min_norm_distances(logits_fn, prm, (x, y), goal=goal, max_rmse=max_rmse,
                                   search_steps=search_steps, steps=steps, rng=key,
                                   bounds=bounds, method=method, inner=inner)
    return distances, robustness.correct(logits_fn, prm, x, y)

  dists, labels, hits = [], [], []
  num_classes = None
  for i, (inputs, y, mask) in enumerate(batches):
    _checks.check_in_bounds(inputs, bounds)
    if num_classes is None:
      num_classes = int(jax.eval_shape(logits_fn, params, inputs).shape[-1])
    keep = np.asarray(mask)
    d, ok = run(params, inputs, y, jax.random.fold_in(rng, i))
    dists.append(np.asarray(d)[keep])
    hits.append(np.asarray(ok)[keep])
    labels.append(np.asarray(y)[keep])
  distances, labels = np.concatenate(dists), np.concatenate(labels)
  clean = float(np.mean(np.concatenate(hits)))
  base = 1.0 / num_classes if naive is None else float(naive)
  return {
      'ara': ara_from_distances(distances, naive_accuracy=base),
      'distances': distances,
      'clean_accuracy': clean,
      'naive_accuracy': base,
  }


def attack_ara(logits_fn: LogitsFn, params: Params, batches, **kwargs) -> dict[str, Any]:
  """Attack ARA (Woods eq. 2 goal): :func:`ara` with ``goal='adv'``."""
  return ara(logits_fn, params, batches, goal='adv', **kwargs)


def btr_ara(logits_fn: LogitsFn, params: Params, batches, **kwargs) -> dict[str, Any]:
  """BTR ARA (Woods eq. 4 goal, ``p_y < 1/K``): :func:`ara` with ``goal='btr'``."""
  return ara(logits_fn, params, batches, goal='btr', **kwargs)
