"""CIFAR-10/100, SVHN, MNIST and Fashion-MNIST through ``tfds.data_source``: random access, no TensorFlow.

``tfds.data_source`` reads ``array_record`` files written by ``tfds build`` and decodes
images with NumPy/Pillow, so training needs TensorFlow Datasets but not TensorFlow. The
data must be prepared beforehand on a machine with internet access; see
:class:`DatasetNotFoundError` for the exact commands. Tests use
``tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE)``, which also patches
``tfds.data_source``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from robustjax import _checks

# robustjax name -> TFDS name.
TFDS_NAMES = {'cifar10': 'cifar10', 'cifar100': 'cifar100', 'svhn': 'svhn_cropped',
              'mnist': 'mnist', 'fashion_mnist': 'fashion_mnist'}
SPLITS = ('train', 'test')


class DatasetNotFoundError(FileNotFoundError, ValueError):
  """A TFDS dataset is not prepared (in array_record format) under ``data_dir``."""


def not_found_message(name: str, data_dir: str | None, cause: BaseException | None) -> str:
  """The instructions shown when a TFDS dataset is missing."""
  tfds_name = TFDS_NAMES.get(name, name)
  where = data_dir or '$TFDS_DATA_DIR (default ~/tensorflow_datasets)'
  lines = [
      f'dataset {name!r} (TFDS {tfds_name!r}) is not available as array_record under '
      f'{where}.',
      'Prepare it on a machine with internet access, either with',
      f'  tfds build {tfds_name} --file_format=array_record --data_dir=DIR',
      'or in Python with',
      f"  tfds.builder('{tfds_name}', data_dir=DIR, file_format='array_record')"
      '.download_and_prepare()',
      f'then copy DIR/{tfds_name}/ to this machine and pass data_dir=DIR (or set '
      'TFDS_DATA_DIR=DIR).',
      "No download possible? Use the embedded dataset instead: dataset='digits'.",
  ]
  if cause is not None:
    lines.append(f'(TFDS said: {type(cause).__name__}: {cause})')
  return '\n'.join(lines)


def _check_name(name: str) -> str:
  _checks.check_choice(name, 'TFDS dataset name', TFDS_NAMES)
  return TFDS_NAMES[name]


class TfdsSource:
  """Random access to one split of a TFDS image dataset.

  Attributes:
    name: robustjax dataset name (a key of :data:`TFDS_NAMES`).
    split: 'train' or 'test'.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    """Opens ``split`` of ``name`` with ``tfds.data_source`` (never downloads).

    Raises:
      ValueError: for an unknown name or split.
      DatasetNotFoundError: when the prepared data is not found.
    """
    tfds_name = _check_name(name)
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; valid choices: 'train', 'test'")
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    self.name, self.split = name, split
    try:
      self._source = tfds.data_source(tfds_name, split=split, data_dir=data_dir,
                                      download=False)
      size = len(self._source)
    except Exception as e:  # TFDS raises several types for missing data.
      raise DatasetNotFoundError(not_found_message(name, data_dir, e)) from e
    self._size = int(size)

  def __len__(self) -> int:
    return self._size

  def get(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reads examples ``indices``.

    Args:
      indices: ``[n]`` integer indices in ``[0, len(self))``.

    Returns:
      ``(images [n, H, W, C] uint8, labels [n] int32)``.
    """
    examples = [self._source[int(i)] for i in np.asarray(indices).reshape(-1)]
    if not examples:
      raise ValueError('indices must not be empty')
    images = np.stack([np.asarray(ex['image'], np.uint8) for ex in examples])
    labels = np.asarray([ex['label'] for ex in examples], np.int32)
    return images, labels
