"""scikit-learn's bundled 8x8 digits: the embedded dataset that needs no download.

1,797 grey-scale 8x8 images of the digits 0-9 (pixel values 0..16, scaled here to
[0, 1]). The split is fixed: a permutation of all examples drawn with
``numpy.random.default_rng(0)``; its first 1,437 indices are 'train', the last 360 'test'
(an 80/20 split, the same on every machine and numpy version with the PCG64 generator).
"""

from __future__ import annotations

import functools

import numpy as np

NUM_TRAIN = 1437
NUM_TEST = 360
SPLIT_SEED = 0
SPLITS = ('train', 'test')


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  raw = datasets.load_digits()
  images = (raw.images.astype(np.float32) / 16.0)[..., None]
  labels = raw.target.astype(np.int32)
  perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
  for array in (images, labels, perm):
    array.setflags(write=False)
  return images, labels, perm


def digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Returns one split of the digits dataset.

  Args:
    split: 'train' (1,437 examples) or 'test' (360 examples), disjoint.

  Returns:
    ``(images [N, 8, 8, 1] float32 in [0, 1], labels [N] int32 in [0, 10))``, fresh
    writable copies.

  Raises:
    ValueError: for any other split.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; valid choices: 'train', 'test'")
  images, labels, perm = _all_digits()
  idx = perm[:NUM_TRAIN] if split == 'train' else perm[NUM_TRAIN:]
  return images[idx], labels[idx]
