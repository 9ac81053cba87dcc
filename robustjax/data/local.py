"""Datasets from the files they were distributed in: IDX, CIFAR python batches, NPZ.

No TensorFlow, no torch: every format is parsed with NumPy (and ``zlib``/``pickle``
from the standard library). A split is read once into memory (uint8 images stay uint8;
60,000 Fashion-MNIST images are 47 MB) and served by random access like the TFDS
sources, so the pipeline's determinism and multi-host slicing do not change
(:mod:`robustjax.data.pipeline`). Examples keep the order of the files.

Layouts (``config.dataset.source``):

* ``'idx'`` (MNIST, Fashion-MNIST): ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
  each raw or ``.gz``, in ``data_dir`` itself, in torchvision's ``data_dir/<Name>/raw/``
  (``MNIST``, ``FashionMNIST``) or in ``data_dir/<name>/`` (``mnist``, ``fashion-mnist``,
  ``fashion_mnist``).
* ``'cifar_batches'`` (CIFAR-10, CIFAR-100): the python pickles of
  ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``) and
  ``cifar-100-python/`` (``train``, ``test``; the 100 fine labels), under ``data_dir`` or
  ``data_dir`` itself. Unpickled with an unpickler that only builds NumPy arrays.
* ``'npz'`` (any image dataset): a NumPy archive with ``x_train, y_train, x_test,
  y_test`` (keras' ``mnist.npz``): ``data_dir`` itself, or ``data_dir/<name>.npz``.
  Images ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``; uint8, or floats in
  ``[0, 1]`` or ``[0, 255]``. What was detected is logged.
* ``'auto'``: TFDS if the dataset is prepared there, else the first of these layouts
  found under ``data_dir``, else under :data:`WELL_KNOWN` places (the Debian package
  ``dataset-fashion-mnist`` puts the four IDX files in ``/usr/share/datasets/fashion-mnist/``;
  keras downloads to ``~/.keras/datasets/``).

:func:`resolve` says which source and path a dataset is read from (logged once per
dataset); :func:`resolve_source` does it for a ``config.dataset``. A file that is not what
its layout says raises :class:`BadDataFileError`, one line naming the file and what is
wrong, while the files are read (before a run builds a model or writes to its workdir).
"""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import warnings
import zlib
from typing import NamedTuple

import numpy as np
from absl import logging

SOURCES = ('auto', 'tfds', 'idx', 'cifar_batches', 'npz')
LOCAL_SOURCES = ('idx', 'cifar_batches', 'npz')
# Datasets each local layout can hold.
LAYOUT_DATASETS = {
    'idx': ('mnist', 'fashion_mnist'),
    'cifar_batches': ('cifar10', 'cifar100'),
    'npz': ('mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'svhn'),
}
IDX_FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
             'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions [N, rows, cols]
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension [N]
# Sub-directories holding IDX files: torchvision's <Name>/raw/, and plain names.
IDX_DIRS = {'mnist': ('MNIST/raw', 'mnist'),
            'fashion_mnist': ('FashionMNIST/raw', 'fashion-mnist', 'fashion_mnist')}
CIFAR_DIRS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}
CIFAR_FILES = {
    'cifar10': {'train': tuple(f'data_batch_{i}' for i in range(1, 6)),
                'test': ('test_batch',)},
    'cifar100': {'train': ('train',), 'test': ('test',)},
}
CIFAR_LABEL_KEYS = {'cifar10': 'labels', 'cifar100': 'fine_labels'}
NPZ_FILES = {'mnist': ('mnist.npz',), 'fashion_mnist': ('fashion_mnist.npz',
                                                        'fashion-mnist.npz'),
             'cifar10': ('cifar10.npz',), 'cifar100': ('cifar100.npz',),
             'svhn': ('svhn.npz',)}
NPZ_KEYS = {'train': ('x_train', 'y_train'), 'test': ('x_test', 'y_test')}
# Searched by 'auto' (and by a local source without data_dir) after data_dir.
WELL_KNOWN = {
    'fashion_mnist': ('/usr/share/datasets/fashion-mnist', '~/.keras/datasets'),
    'mnist': ('~/.keras/datasets',),
    'cifar10': ('~/.keras/datasets',),
    'cifar100': ('~/.keras/datasets',),
    'svhn': (),
}


class BadDataFileError(ValueError):
  """A data file is not what its layout says; the message names the file."""


class Resolved(NamedTuple):
  """Where a dataset is read from."""
  source: str  # 'tfds' | 'idx' | 'cifar_batches' | 'npz' | 'embedded' | 'synthetic'
  path: str  # TFDS data dir, IDX directory, CIFAR batches directory or .npz file


def _bad(path: str, what: str) -> BadDataFileError:
  return BadDataFileError(f'{path}: {what}')


# --------------------------------------------------------------------------------- IDX


def _read_bytes(path: str) -> bytes:
  """The file's bytes, gunzipped when it is gzip (by its magic bytes, not its name)."""
  with open(path, 'rb') as f:
    raw = f.read()
  if raw[:2] != b'\x1f\x8b':
    return raw
  try:
    return zlib.decompress(raw, 16 + zlib.MAX_WBITS)  # one gzip member, as distributed
  except zlib.error as e:  # truncated or corrupt stream
    raise _bad(path, f'truncated or corrupt gzip stream ({e})') from None


def read_idx(path: str, magic: int) -> np.ndarray:
  """Reads an IDX file of unsigned bytes (raw or gzip) whose magic number is ``magic``.

  Returns:
    A read-only uint8 array of the header's shape, e.g. ``[N, 28, 28]``.

  Raises:
    BadDataFileError: wrong magic number, or a file shorter or longer than its header
      says.
  """
  data = _read_bytes(path)
  if len(data) < 4:
    raise _bad(path, f'truncated: {len(data)} bytes, shorter than an IDX magic number')
  found = int.from_bytes(data[:4], 'big')
  if found != magic:
    raise _bad(path, f'IDX magic number 0x{found:08x}, expected 0x{magic:08x} '
               f'(unsigned bytes of rank {magic & 0xff})')
  rank = magic & 0xff
  header = 4 + 4 * rank
  if len(data) < header:
    raise _bad(path, f'truncated: {len(data)} bytes, an IDX header of rank {rank} '
               f'has {header}')
  shape = tuple(int(d) for d in np.frombuffer(data, '>u4', rank, 4))
  expected = int(np.prod(shape))
  body = len(data) - header
  if body < expected:
    raise _bad(path, f'truncated: the header declares {"x".join(map(str, shape))} '
               f'= {expected} bytes of data, the file holds {body}')
  if body > expected:
    raise _bad(path, f'{body - expected} bytes after the {"x".join(map(str, shape))} '
               'declared by the header')
  return np.frombuffer(data, np.uint8, expected, header).reshape(shape)


def _idx_file(directory: str, stem: str) -> str | None:
  for name in (stem + '.gz', stem):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def _idx_split(directory: str, split: str) -> tuple[str, str] | None:
  images, labels = (_idx_file(directory, s) for s in IDX_FILES[split])
  return (images, labels) if images and labels else None


def _read_idx_split(name: str, directory: str, split: str):
  images_path, labels_path = _idx_split(directory, split)
  images = read_idx(images_path, IDX_IMAGES_MAGIC)
  labels = read_idx(labels_path, IDX_LABELS_MAGIC)
  _check_count(images_path, labels_path, len(images), len(labels))
  return images[..., None], labels, images_path


# ------------------------------------------------------------------------------- CIFAR

_NUMPY_GLOBALS = {
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
    ('_codecs', 'encode'),  # bytes in protocol-2 pickles written by Python 3
}


class _NumpyUnpickler(pickle.Unpickler):
  """Builds dicts, lists, strings, numbers and NumPy arrays; refuses any other global
  (a pickle can call any importable function: these are the only ones a batch needs)."""

  def find_class(self, module, name):
    if (module, name) not in _NUMPY_GLOBALS:
      raise pickle.UnpicklingError(f'refusing to load {module}.{name}')
    with warnings.catch_warnings():  # numpy.core is numpy._core's deprecated alias
      warnings.simplefilter('ignore')
      return getattr(importlib.import_module(module), name)


def read_cifar_batch(path: str, label_key: str, num_classes: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Reads one CIFAR python batch: ``(images [N, 32, 32, 3] uint8, labels [N] int64)``.

  Raises:
    BadDataFileError: not a pickle (or truncated), a missing entry, rows that are not
      3x32x32 pixels, not as many labels as images, or labels outside
      ``[0, num_classes)``.
  """
  with open(path, 'rb') as f:
    try:
      batch = _NumpyUnpickler(f, encoding='bytes').load()
    except Exception as e:  # pylint: disable=broad-except  (any unpickling failure)
      raise _bad(path, f'not a CIFAR python batch: {type(e).__name__}: {e}') from None
  if not isinstance(batch, dict):
    raise _bad(path, f'not a CIFAR python batch: holds a {type(batch).__name__}, '
               'not a dict')
  entries = {k.decode('latin1') if isinstance(k, bytes) else str(k): v
             for k, v in batch.items()}
  for key in ('data', label_key):
    if key not in entries:
      raise _bad(path, f'no {key!r} entry (entries: {", ".join(sorted(entries))})')
  data = np.asarray(entries['data'])
  if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
    raise _bad(path, f'data has shape {list(data.shape)}, CIFAR batches hold rows of '
               '3x32x32 = 3072 pixels')
  if data.dtype != np.uint8:
    raise _bad(path, f'data has dtype {data.dtype}, CIFAR batches hold uint8 pixels')
  labels = np.asarray(entries[label_key])
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise _bad(path, f'{label_key!r} is not a list of integers '
               f'(shape {list(labels.shape)}, dtype {labels.dtype})')
  if len(labels) != len(data):
    raise _bad(path, f'{len(labels)} labels for {len(data)} images')
  _check_labels(path, labels, num_classes, f'CIFAR-{num_classes}')
  images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


def _cifar_split(name: str, directory: str, split: str) -> list[str] | None:
  paths = [os.path.join(directory, f) for f in CIFAR_FILES[name][split]]
  return paths if all(os.path.isfile(p) for p in paths) else None


def _read_cifar_split(name: str, directory: str, split: str, num_classes: int):
  parts = [read_cifar_batch(p, CIFAR_LABEL_KEYS[name], num_classes)
           for p in _cifar_split(name, directory, split)]
  images = np.concatenate([p[0] for p in parts])
  labels = np.concatenate([p[1] for p in parts])
  files = CIFAR_FILES[name][split]
  where = os.path.join(directory, files[0] if len(files) == 1 else
                       f'{{{",".join(files)}}}')
  return images, labels, where


# --------------------------------------------------------------------------------- NPZ


def _npz_images(path: str, key: str, x: np.ndarray, input_shape: tuple[int, ...]):
  """``x`` as NHWC uint8 or float32 in [0, 1], and a description of what was found."""
  h, w, c = input_shape
  shape = tuple(x.shape[1:])
  if x.ndim == 3 and c == 1 and shape == (h, w):
    layout, x = 'NHW (channel axis added)', x[..., None]
  elif x.ndim == 4 and shape == (h, w, c):
    layout = 'NHWC'
  elif x.ndim == 4 and shape == (c, h, w):
    layout, x = 'NCHW (transposed to NHWC)', x.transpose(0, 2, 3, 1)
  else:
    raise _bad(path, f'{key} has shape {list(x.shape)}; expected [N, {h}, {w}, {c}] or '
               f'[N, {c}, {h}, {w}]' + (f' or [N, {h}, {w}]' if c == 1 else ''))
  if x.dtype == np.uint8:
    return x, f'{layout} uint8'
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise _bad(path, f'{key} has dtype {x.dtype}; expected uint8 or floats')
  lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
  if np.isnan(lo) or np.isnan(hi) or lo < 0 or hi > 255:
    raise _bad(path, f'{key} has values in [{lo:g}, {hi:g}]; expected pixels in [0, 1] '
               'or [0, 255]')
  if np.issubdtype(x.dtype, np.integer):
    return x.astype(np.uint8), f'{layout} {x.dtype} in [0, 255]'
  if hi <= 1:
    return x.astype(np.float32), f'{layout} {x.dtype} in [0, 1]'
  return (x / 255.0).astype(np.float32), f'{layout} {x.dtype} in [0, 255] (divided by 255)'


def _read_npz_split(name: str, path: str, split: str, input_shape):
  x_key, y_key = NPZ_KEYS[split]
  try:
    with np.load(path, allow_pickle=False) as archive:
      keys = list(archive.keys())
      for key in (x_key, y_key):
        if key not in keys:
          raise _bad(path, f'no {key!r} array (arrays: {", ".join(sorted(keys))})')
      x, y = archive[x_key], archive[y_key]
  except BadDataFileError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (zip, pickle, format errors)
    raise _bad(path, f'not a NumPy .npz archive: {type(e).__name__}: {e}') from None
  images, what = _npz_images(path, x_key, x, input_shape)
  labels = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise _bad(path, f'{y_key} must be integer labels [N] (or [N, 1]), got shape '
               f'{list(y.shape)} dtype {y.dtype}')
  if len(labels) != len(images):
    raise _bad(path, f'{len(labels)} labels in {y_key} for {len(images)} images in '
               f'{x_key}')
  logging.info('npz %s: %s %s -> %s, %s %s', path, x_key, list(x.shape), what, y_key,
               list(y.shape))
  return images, labels, path


# ------------------------------------------------------------------------ read a split


def _check_count(images_path, labels_path, num_images, num_labels):
  if num_images != num_labels:
    raise _bad(labels_path, f'{num_labels} labels for the {num_images} images of '
               f'{images_path}')


def _check_split(name, info, images, labels, where, labels_path):
  """Shape, label range and emptiness checks against the dataset's facts."""
  if tuple(images.shape[1:]) != tuple(info.input_shape):
    shown = 'x'.join(map(str, images.shape[1:]))
    raise _bad(where, f'images are {shown}, {name!r} images are '
               f'{"x".join(map(str, info.input_shape))}')
  if not len(labels):
    raise _bad(where, 'holds no examples')
  _check_labels(labels_path, labels, info.num_classes, repr(name))


def _check_labels(path, labels, num_classes, what):
  if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
    bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
    raise _bad(path, f'label {int(labels[bad])} at index {bad} is outside '
               f'[0, {num_classes}) of {what}')


@functools.lru_cache(maxsize=8)
def _cached_split(name: str, source: str, path: str, split: str, stamp: tuple):
  """Reads and checks a split (cached per file state ``stamp``; errors are not cached)."""
  del stamp  # part of the cache key only: a rewritten file is read again
  from robustjax.data import pipeline  # pylint: disable=g-import-not-at-top
  info = pipeline.get_dataset_info(name)
  if source == 'idx':
    images, labels, where = _read_idx_split(name, path, split)
    labels_path = _idx_split(path, split)[1]
  elif source == 'cifar_batches':
    images, labels, where = _read_cifar_split(name, path, split, info.num_classes)
    labels_path = where
  else:
    images, labels, where = _read_npz_split(name, path, split, info.input_shape)
    labels_path = path
  _check_split(name, info, images, labels, where, labels_path)
  images = np.ascontiguousarray(images)
  labels = labels.astype(np.int32)
  for array in (images, labels):
    array.setflags(write=False)
  return images, labels


def _files_of(name: str, source: str, path: str, split: str) -> list[str]:
  if source == 'idx':
    return list(_idx_split(path, split) or ())
  if source == 'cifar_batches':
    return list(_cifar_split(name, path, split) or ())
  return [path]


def read_split(name: str, source: str, path: str, split: str
               ) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split of a local layout found by :func:`find`.

  Returns:
    ``(images [N, *input_shape] uint8 or float32 in [0, 1], labels [N] int32)``,
    read-only and cached until a file changes.

  Raises:
    BadDataFileError: one line naming the file and what is wrong.
  """
  files = _files_of(name, source, path, split)
  stamp = tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
  return _cached_split(name, source, path, split, stamp)


class LocalSource:
  """Random access to one split of a local dataset: float32 inputs in [0, 1].

  Attributes:
    name: dataset name.
    split: 'train' or 'test'.
    source: the layout ('idx', 'cifar_batches', 'npz').
    path: the directory or file read.
  """

  def __init__(self, name: str, split: str, source: str, path: str):
    self.name, self.split, self.source, self.path = name, split, source, path
    self._images, self._labels = read_split(name, source, path, split)

  def __len__(self) -> int:
    return len(self._labels)

  def get(self, indices) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs [n, *input_shape] float32 in [0, 1], labels [n] int32)`` at ``indices``."""
    indices = np.asarray(indices).reshape(-1)
    images = self._images[indices]
    if images.dtype == np.uint8:
      images = images.astype(np.float32) / 255.0
    return images, self._labels[indices]


# ----------------------------------------------------------------------------- resolve


def _roots(name: str, data_dir: str | None) -> list[str]:
  roots = [data_dir] if data_dir else []
  return [os.path.expanduser(p) for p in roots + list(WELL_KNOWN.get(name, ()))]


def _find_in(name: str, source: str, root: str) -> str | None:
  """The path of ``source``'s layout of ``name`` under ``root`` (both splits), or None."""
  if source == 'idx':
    for d in [root] + [os.path.join(root, s) for s in IDX_DIRS.get(name, ())]:
      if all(_idx_split(d, split) for split in IDX_FILES):
        return d
  elif source == 'cifar_batches':
    for d in (os.path.join(root, CIFAR_DIRS[name]), root):
      if all(_cifar_split(name, d, split) for split in ('train', 'test')):
        return d
  else:
    if os.path.isfile(root) and root.endswith('.npz'):
      return root
    for f in NPZ_FILES.get(name, ()):
      if os.path.isfile(os.path.join(root, f)):
        return os.path.join(root, f)
  return None


def find(name: str, source: str, data_dir: str | None = None) -> Resolved | None:
  """The first local layout of ``name`` (``source``, or every layout for 'auto').

  Searches ``data_dir`` when given, then the :data:`WELL_KNOWN` places of ``name``.
  """
  layouts = LOCAL_SOURCES if source == 'auto' else (source,)
  for root in _roots(name, data_dir):
    for layout in layouts:
      if name in LAYOUT_DATASETS[layout]:
        found = _find_in(name, layout, root)
        if found:
          return Resolved(layout, os.path.abspath(found))
  return None


def searched(name: str, source: str, data_dir: str | None) -> str:
  """A description of where :func:`find` looks, for not-found messages."""
  layouts = [l for l in (LOCAL_SOURCES if source == 'auto' else (source,))
             if name in LAYOUT_DATASETS[l]]
  what = {'idx': f'IDX files ({", ".join(IDX_FILES["train"] + IDX_FILES["test"])}, '
                 f'raw or .gz; also in {", ".join(IDX_DIRS.get(name, ()))})',
          'cifar_batches': f'CIFAR python batches ({CIFAR_DIRS.get(name, "")}/)',
          'npz': f'a .npz archive ({", ".join(NPZ_FILES.get(name, ()))})'}
  roots = ', '.join(_roots(name, data_dir)) or '(no well-known place)'
  if not layouts:
    return (f'local source {source!r} cannot hold {name!r}; it holds '
            f'{", ".join(LAYOUT_DATASETS[source])}')
  return f'looked for {"; ".join(what[l] for l in layouts)} in {roots}'


_LOGGED: set = set()


def log_once(name: str, resolved: Resolved) -> None:
  """Logs where ``name`` is read from, once per (name, source, path) and process."""
  if (name, resolved) not in _LOGGED:
    _LOGGED.add((name, resolved))
    logging.info('dataset %r: source %r, path %s', name, resolved.source,
                 resolved.path or '(none)')
