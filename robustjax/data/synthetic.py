"""Two-dimensional toy sets (moons, spirals) in the unit square, for visualisation.

Both map their points into ``[0, 1]^2`` with a fixed affine map (independent of the
sample, so train and test sets share coordinates) and clip the rare noisy points that
fall outside, so attacks and certificates can use the default box ``[0, 1]``.
"""

from __future__ import annotations

import numpy as np


def _check_common(n: int, noise: float) -> None:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f'n must be an integer >= 1, got {n!r}')
  if not noise >= 0:
    raise ValueError(f'noise must be >= 0, got {noise!r}')


def moons(n: int, *, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Two interleaving half circles, scaled into the unit square.

  Args:
    n: number of points (classes alternate sizes ceil/floor of n/2).
    noise: std of Gaussian noise added before scaling (in the moons' own units, where
      the moons span about 3 x 1.5).
    seed: seed of the sample.

  Returns:
    ``(inputs [n, 2] float32 in [0, 1], labels [n] int32 in {0, 1})``.
  """
  _check_common(n, noise)
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  angles = rng.uniform(0.0, np.pi, size=n)
  upper = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  lower = np.stack([1.0 - np.cos(angles), 0.5 - np.sin(angles)], axis=1)
  points = np.where(labels[:, None] == 0, upper, lower)
  points = points + noise * rng.standard_normal(points.shape)
  # The noiseless moons span [-1, 2] x [-0.5, 1]; centre them and leave a margin.
  points = (points - np.array([0.5, 0.25])) / 4.0 + 0.5
  order = rng.permutation(n)
  return (np.clip(points[order], 0.0, 1.0).astype(np.float32),
          labels[order].astype(np.int32))


def spirals(n: int, *, num_classes: int = 3, noise: float = 0.05, seed: int = 0,
            turns: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
  """``num_classes`` interleaved spiral arms, scaled into the unit square.

  Arm ``k`` is ``r (cos t, sin t)`` with radius ``r ~ U(0, 1)`` and angle
  ``t = 2 pi (k / num_classes + turns r)``.

  Args:
    n: number of points (assigned round-robin to the arms).
    num_classes: number of arms (>= 2).
    noise: std of Gaussian noise added to the points (unit-radius units).
    seed: seed of the sample.
    turns: how many turns each arm makes.

  Returns:
    ``(inputs [n, 2] float32 in [0, 1], labels [n] int32 in [0, num_classes))``.
  """
  _check_common(n, noise)
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 2:
    raise ValueError(f'num_classes must be an integer >= 2, got {num_classes!r}')
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  radius = rng.uniform(0.0, 1.0, size=n)
  theta = 2 * np.pi * (labels / num_classes + turns * radius)
  points = radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], axis=1)
  points = points + noise * rng.standard_normal(points.shape)
  points = points / 2.4 + 0.5  # radius 1 plus a noise margin fits in [0, 1]
  order = rng.permutation(n)
  return (np.clip(points[order], 0.0, 1.0).astype(np.float32),
          labels[order].astype(np.int32))
