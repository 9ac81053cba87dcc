"""A small stateless NumPy input pipeline: every batch is a pure function of (seed, step).

Training batches are drawn without replacement within epochs: epoch ``e`` visits the
training set in the order ``default_rng([seed, 0, e]).permutation(N)``, ``N // B`` global
batches of ``B = batch_size`` examples per epoch (the last ``N mod B`` examples of each
permutation are skipped), and global batch ``step`` is batch ``step mod (N // B)`` of
epoch ``step // (N // B)``. Augmentation draws come from ``default_rng([seed, 1, step])``
for the whole global batch. Nothing is carried between batches, so

* a run resumed at ``start_step=k`` sees exactly the batches ``k, k+1, ...`` of an
  uninterrupted run, and
* host ``process_index`` of ``process_count`` reads only its contiguous slice of
  ``b = B // process_count`` examples of each global batch; the slices of all hosts,
  concatenated in process order, are the global batch.

Evaluation batches walk a split in its stored order; the last global batch is padded
(inputs 0, label 0) and a boolean ``mask`` marks the real examples, so every example is
counted exactly once: average metrics as ``sum(values * mask) / sum(mask)``.
"""

from __future__ import annotations

import functools
import logging
from typing import Iterator, NamedTuple

import numpy as np

from robustjax import _checks

from robustjax.data.digits import NUM_TEST as DIGITS_NUM_TEST
from robustjax.data.digits import NUM_TRAIN as DIGITS_NUM_TRAIN
from robustjax.data.digits import digits as load_digits
from robustjax.data import local
from robustjax.data import synthetic
from robustjax.data import tfds_source


class DatasetInfo(NamedTuple):
  """Static facts about a dataset, known without reading it."""
  name: str
  input_shape: tuple[int, ...]  # one example, e.g. (32, 32, 3)
  num_classes: int
  num_train: int  # examples in the full 'train' split
  num_test: int  # examples in the full 'test' split
  mean: tuple[float, ...] | None  # per-channel pixel mean of the train split ([0, 1])
  std: tuple[float, ...] | None  # per-channel pixel std; None for the 2-D sets
  augment: str  # default training augmentation: 'crop_flip', 'crop', 'flip' or 'none'


_INFOS = {
    'digits': DatasetInfo('digits', (8, 8, 1), 10, DIGITS_NUM_TRAIN,
                          DIGITS_NUM_TEST, (0.3054,), (0.3760,), 'none'),
    'mnist': DatasetInfo('mnist', (28, 28, 1), 10, 60000, 10000, (0.1307,), (0.3081,),
                         'none'),
    # Fashion-MNIST: mean/std of all pixels of the 60,000 training images of the
    # distributed IDX files (train-images-idx3-ubyte.gz, Xiao et al. 2017), computed
    # here with numpy in float64: 0.286041, 0.353024.
    'fashion_mnist': DatasetInfo('fashion_mnist', (28, 28, 1), 10, 60000, 10000,
                                 (0.2860,), (0.3530,), 'none'),
    'cifar10': DatasetInfo('cifar10', (32, 32, 3), 10, 50000, 10000,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           'crop_flip'),
    # CIFAR-100 (fine labels): per-channel mean/std of the 50,000 training images, the
    # values CIFAR-100 training code commonly standardises with.
    'cifar100': DatasetInfo('cifar100', (32, 32, 3), 100, 50000, 10000,
                            (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                            'crop_flip'),
    'svhn': DatasetInfo('svhn', (32, 32, 3), 10, 73257, 26032, (0.4377, 0.4438, 0.4728),
                        (0.1980, 0.2010, 0.1970), 'none'),
    'moons': DatasetInfo('moons', (2,), 2, 1024, 512, None, None, 'none'),
    'spirals': DatasetInfo('spirals', (2,), 3, 1536, 768, None, None, 'none'),
}
AUGMENTATIONS = ('none', 'crop', 'flip', 'crop_flip')
CROP_PAD = 4


def dataset_names() -> tuple[str, ...]:
  """Names accepted by the pipeline functions."""
  return tuple(_INFOS)


def get_dataset_info(name: str) -> DatasetInfo:
  """Returns the :class:`DatasetInfo` of ``name`` (raises ValueError listing names)."""
  _checks.check_choice(name, 'dataset name', _INFOS)
  return _INFOS[name]


# ----------------------------------------------------------------------------- sources


class _ArraySource:
  """Random access to in-memory arrays (digits, synthetic sets)."""

  def __init__(self, inputs: np.ndarray, labels: np.ndarray):
    self._inputs, self._labels = inputs, labels

  def __len__(self) -> int:
    return len(self._labels)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return self._inputs[indices], self._labels[indices]


class _ImageSource:
  """A TFDS source whose uint8 images are returned as float32 in [0, 1]."""

  def __init__(self, source: tfds_source.TfdsSource):
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, labels = self._source.get(indices)
    return images.astype(np.float32) / 255.0, labels


@functools.lru_cache(maxsize=8)
def _synthetic(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  info = _INFOS[name]
  n = info.num_train if split == 'train' else info.num_test
  seed = 0 if split == 'train' else 1
  if name == 'moons':
    return synthetic.moons(n, noise=0.1, seed=seed)
  return synthetic.spirals(n, num_classes=info.num_classes, noise=0.05, seed=seed)


def _tfds_dir(data_dir: str | None) -> str:
  import os  # pylint: disable=g-import-not-at-top
  return os.path.abspath(os.path.expanduser(
      data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'))


def _tfds_prepared(name: str, data_dir: str | None) -> bool:
  """Whether TFDS holds ``name``; 'auto' asks before it looks for local files, so TFDS's
  warnings about the missing dataset (one per probe) are held back: absence is an answer."""
  if name not in tfds_source.TFDS_NAMES:
    return False
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  try:
    for split in tfds_source.SPLITS:
      tfds_source.TfdsSource(name, split, data_dir)
  except tfds_source.DatasetNotFoundError:
    return False
  finally:
    absl_logger.setLevel(level)
  return True


def resolve(name: str, source: str = 'auto', data_dir: str | None = None
            ) -> local.Resolved:
  """Where ``name`` is read from: ``Resolved(source, path)`` (see :mod:`.local`).

  ``'auto'`` takes TFDS if the dataset is prepared under ``data_dir`` (or the TFDS
  default), else the first local layout under ``data_dir``, else under the well-known
  places (:data:`robustjax.data.local.WELL_KNOWN`). The digits are ``('embedded', '')``
  and the 2-D sets ``('synthetic', '')`` whatever ``source`` says.

  Raises:
    ValueError: for an unknown name or source, or a source that cannot hold ``name``.
    tfds_source.DatasetNotFoundError: nothing found (the message says where it looked
      and how to prepare the data).
  """
  get_dataset_info(name)
  _checks.check_choice(source, 'source', local.SOURCES)
  if name == 'digits':
    return local.Resolved('embedded', '')
  if name in ('moons', 'spirals'):
    return local.Resolved('synthetic', '')
  if source in local.LOCAL_SOURCES and name not in local.LAYOUT_DATASETS[source]:
    raise ValueError(f'source {source!r} cannot hold dataset {name!r}; it holds '
                     f'{", ".join(map(repr, local.LAYOUT_DATASETS[source]))}')
  if source == 'tfds' or (source == 'auto' and _tfds_prepared(name, data_dir)):
    if name not in tfds_source.TFDS_NAMES:
      raise ValueError(f"source 'tfds' has no dataset {name!r}; it has "
                       f'{", ".join(map(repr, tfds_source.TFDS_NAMES))}')
    return local.Resolved('tfds', _tfds_dir(data_dir))
  found = local.find(name, source, data_dir)
  if found is None:
    message = f'dataset {name!r}: no local files found ({local.searched(name, source, data_dir)}).'
    if name == 'fashion_mnist':
      message += ('\nOn Debian/Ubuntu: apt-get install dataset-fashion-mnist (IDX files in '
                  '/usr/share/datasets/fashion-mnist/).')
    if source == 'auto' and name in tfds_source.TFDS_NAMES:
      message = tfds_source.not_found_message(name, data_dir, None) + '\n' + message
    raise tfds_source.DatasetNotFoundError(message)
  return found


def resolve_source(dataset_config) -> tuple[str, str]:
  """``(source, path)`` that ``config.dataset`` reads (its name, source, data_dir).

  What a run records in its ``config.json`` as ``dataset.resolved`` and what an
  evaluation report can name; logged once per dataset and process.
  """
  name = dataset_config.name
  resolved = resolve(name, dataset_config.get('source', 'auto') or 'auto',
                     dataset_config.get('data_dir', '') or None)
  local.log_once(name, resolved)
  return tuple(resolved)


def open_split(name: str, split: str, data_dir: str | None = None, *,
               source: str = 'auto'):
  """Opens a split for random access: ``len(src)``, ``src.get(idx) -> (inputs, labels)``.

  ``inputs`` are float32 ``[n, *input_shape]`` in ``[0, 1]``, labels int32 ``[n]``.
  ``source`` and ``data_dir`` say where the files are (:func:`resolve`).

  Raises:
    ValueError: for an unknown name, split or source.
    tfds_source.DatasetNotFoundError: the dataset is not found.
    local.BadDataFileError: (a ValueError) a local file is not what its layout says.
  """
  get_dataset_info(name)
  if split not in ('train', 'test'):
    raise ValueError(f"unknown split {split!r}; valid choices: 'train', 'test'")
  if name == 'digits':
    return _ArraySource(*load_digits(split))
  if name in ('moons', 'spirals'):
    return _ArraySource(*_synthetic(name, split))
  resolved = resolve(name, source, data_dir)
  local.log_once(name, resolved)
  if resolved.source == 'tfds':
    return _ImageSource(tfds_source.TfdsSource(name, split, data_dir))
  return local.LocalSource(name, split, resolved.source, resolved.path)


def load(name: str, split: str = 'test', *, data_dir: str | None = None,
         num_examples: int | None = None, source: str = 'auto'
         ) -> tuple[np.ndarray, np.ndarray]:
  """Reads the first ``num_examples`` (default all) of a split into memory.

  Returns:
    ``(inputs [n, *input_shape] float32 in [0, 1], labels [n] int32)``.
  """
  opened = open_split(name, split, data_dir, source=source)
  n = len(opened) if num_examples is None else min(int(num_examples), len(opened))
  return opened.get(np.arange(n))


# ------------------------------------------------------------------------ augmentation


def crop_flip(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray,
              pad: int = CROP_PAD) -> np.ndarray:
  """Reflect-pads by ``pad`` pixels, crops back to size at ``offsets``, flips where asked.

  Args:
    images: ``[b, H, W, C]``.
    offsets: ``[b, 2]`` integer crop corners in ``[0, 2 * pad]`` (``pad`` = no shift).
    flips: ``[b]`` booleans, True flips horizontally.
    pad: reflect padding on each side.

  Returns:
    ``[b, H, W, C]`` augmented images, same dtype and value range.
  """
  _, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  out = np.empty_like(images)
  for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
    crop = padded[i, dy:dy + h, dx:dx + w]
    out[i] = crop[:, ::-1] if flip else crop
  return out


def _augmentation(augment: bool | str, info: DatasetInfo) -> str:
  if augment is True:
    return info.augment
  if augment is False or augment is None:
    return 'none'
  if augment not in AUGMENTATIONS:
    valid = ', '.join(repr(a) for a in (True, False) + AUGMENTATIONS)
    raise ValueError(f'unknown augment {augment!r}; valid choices: {valid}')
  if augment != 'none' and len(info.input_shape) != 3:
    raise ValueError(f'augment {augment!r} needs images [H, W, C]; dataset '
                     f'{info.name!r} has input_shape {info.input_shape}')
  return augment


def _augment_draws(seed: int, step: int, batch_size: int, mode: str):
  """Global-batch crop offsets ``[B, 2]`` and flips ``[B]`` for ``step``."""
  rng = np.random.default_rng([seed, 1, step])
  offsets = rng.integers(0, 2 * CROP_PAD + 1, size=(batch_size, 2))
  flips = rng.random(batch_size) < 0.5
  if 'crop' not in mode:
    offsets[:] = CROP_PAD
  if 'flip' not in mode:
    flips[:] = False
  return offsets, flips


# ---------------------------------------------------------------------------- batching


def _check_sharding(batch_size: int, process_index: int, process_count: int) -> int:
  for value, arg in ((batch_size, 'batch_size'), (process_count, 'process_count')):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f'{arg} must be an integer >= 1, got {value!r}')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index must be in [0, {process_count}), '
                     f'got {process_index!r}')
  if batch_size % process_count:
    raise ValueError(f'batch_size ({batch_size}) must be divisible by process_count '
                     f'({process_count})')
  return batch_size // process_count


def train_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Indices ``[batch_size]`` of global training batch ``step`` (see module docstring)."""
  steps_per_epoch = num_examples // batch_size
  epoch, position = divmod(step, steps_per_epoch)
  perm = np.random.default_rng([seed, 0, epoch]).permutation(num_examples)
  return perm[position * batch_size:(position + 1) * batch_size]


def train_batches(name: str, *, batch_size: int, seed: int = 0, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1,
                  augment: bool | str = True, data_dir: str | None = None,
                  num_steps: int | None = None, source: str = 'auto'
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields this host's share of the training batches ``start_step, start_step + 1, ...``.

  Args:
    name: dataset name (see :func:`dataset_names`).
    batch_size: global batch size B, divisible by ``process_count``.
    seed: data seed (>= 0); with the step it fixes order and augmentation.
    start_step: first global step to yield (a resumed run passes its checkpoint step).
    process_index: this host's index, ``jax.process_index()``.
    process_count: number of hosts, ``jax.process_count()``.
    augment: True for the dataset's default (:attr:`DatasetInfo.augment`: 4-px
      reflect-pad crop + horizontal flip for CIFAR-10, none for SVHN/MNIST/digits),
      False for none, or one of 'none', 'crop', 'flip', 'crop_flip'.
    data_dir: TFDS data directory (None: $TFDS_DATA_DIR or ~/tensorflow_datasets) and
      root of local files (:func:`resolve`).
    num_steps: stop after this many batches (None: never stop).
    source: 'auto', 'tfds', 'idx', 'cifar_batches' or 'npz' (:func:`resolve`).

  Yields:
    ``(inputs [b, *input_shape] float32 in [0, 1], labels [b] int32)`` with
    ``b = batch_size // process_count``.

  Raises:
    ValueError: for bad arguments or a batch larger than the training split.
    tfds_source.DatasetNotFoundError: when a TFDS dataset is not prepared.
  """
  info = get_dataset_info(name)
  local = _check_sharding(batch_size, process_index, process_count)
  mode = _augmentation(augment, info)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f'seed must be an integer >= 0, got {seed!r}')
  if isinstance(start_step, bool) or not isinstance(start_step, (int, np.integer)) \
      or start_step < 0:
    raise ValueError(f'start_step must be an integer >= 0, got {start_step!r}')
  opened = open_split(name, 'train', data_dir, source=source)
  if batch_size > len(opened):
    raise ValueError(f'batch_size ({batch_size}) must be <= the number of training '
                     f'examples ({len(opened)}) of {name!r}')
  return _train_iterator(opened, batch_size, local, seed, start_step, process_index, mode,
                         num_steps)


def _train_iterator(source, batch_size, local, seed, start_step, process_index, mode,
                    num_steps):
  lo, hi = process_index * local, (process_index + 1) * local
  step = start_step
  while num_steps is None or step < start_step + num_steps:
    indices = train_indices(len(source), batch_size, seed, step)[lo:hi]
    inputs, labels = source.get(indices)
    if mode != 'none':
      offsets, flips = _augment_draws(seed, step, batch_size, mode)
      inputs = crop_flip(inputs, offsets[lo:hi], flips[lo:hi])
    yield inputs, labels
    step += 1


def num_eval_batches(num_examples: int, batch_size: int) -> int:
  """Number of (padded) global batches that cover ``num_examples``."""
  return -(-num_examples // batch_size)


def eval_batches(name: str, *, batch_size: int, split: str = 'test',
                 process_index: int = 0, process_count: int = 1,
                 data_dir: str | None = None, num_examples: int | None = None,
                 source: str = 'auto'
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Yields this host's share of a split in stored order, padded, with a validity mask.

  Args:
    name: dataset name.
    batch_size: global batch size B, divisible by ``process_count``.
    split: 'test' (default) or 'train'.
    process_index: this host's index.
    process_count: number of hosts.
    data_dir: TFDS data directory and root of local files.
    num_examples: evaluate only the first ``num_examples`` of the split (None: all).
    source: where the data is read from (:func:`resolve`).

  Yields:
    ``(inputs [b, ...] float32, labels [b] int32, mask [b] bool)`` with
    ``b = batch_size // process_count``; padded rows have inputs 0, label 0, mask False.
  """
  info = get_dataset_info(name)
  local = _check_sharding(batch_size, process_index, process_count)
  opened = open_split(name, split, data_dir, source=source)
  n = len(opened) if num_examples is None else min(int(num_examples), len(opened))
  return _eval_iterator(opened, n, batch_size, local, process_index, info.input_shape)


def _eval_iterator(source, n, batch_size, local, process_index, input_shape):
  for batch in range(num_eval_batches(n, batch_size)):
    start = batch * batch_size + process_index * local
    indices = np.arange(start, start + local)
    mask = indices < n
    real = indices[mask]
    if real.size == local:
      inputs, labels = source.get(real)
    else:
      inputs = np.zeros((local, *input_shape), np.float32)
      labels = np.zeros((local,), np.int32)
      if real.size:
        inputs[:real.size], labels[:real.size] = source.get(real)
    yield inputs, labels, mask

