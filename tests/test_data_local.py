"""Local-file datasets (robustjax.data.local): IDX, CIFAR python batches, NPZ.

Every test writes its own small files in the distributed formats (the IDX header is
written here byte by byte from the format's definition, CIFAR batches as the pickled
dicts of the original distribution), so nothing needs the real datasets.
"""

import gzip
import logging as std_logging
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds

from robustjax import data
from robustjax.data import local

N_TRAIN, N_TEST = 12, 6


@pytest.fixture(autouse=True)
def no_well_known_places(monkeypatch):
  """Tests see only their own files, never a machine's installed datasets."""
  monkeypatch.setattr(local, 'WELL_KNOWN', {})


def _images(n, shape, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _labels(n, k, seed):
  return np.random.default_rng(seed + 100).integers(0, k, n).astype(np.uint8)


def write_idx(path, array, *, magic=None, gz=False, cut=0):
  """IDX: 2 zero bytes, type 0x08 (ubyte), rank, big-endian uint32 dims, the bytes."""
  rank = array.ndim
  magic = (0x0800 | rank) if magic is None else magic
  header = magic.to_bytes(4, 'big') + b''.join(int(d).to_bytes(4, 'big')
                                              for d in array.shape)
  raw = header + np.ascontiguousarray(array, np.uint8).tobytes()
  raw = raw[:len(raw) - cut] if cut else raw
  if gz:
    raw = gzip.compress(raw)
  with open(path, 'wb') as f:
    f.write(raw)
  return str(path)


def write_idx_dataset(directory, *, gz=True, shape=(28, 28), k=10, seed=0,
                      train_labels=None):
  os.makedirs(directory, exist_ok=True)
  out = {}
  for split, n, (img, lab) in (('train', N_TRAIN, local.IDX_FILES['train']),
                               ('test', N_TEST, local.IDX_FILES['test'])):
    x, y = _images(n, shape, seed + len(split)), _labels(n, k, seed + len(split))
    if split == 'train' and train_labels is not None:
      y = train_labels
    suffix = '.gz' if gz else ''
    write_idx(os.path.join(directory, img + suffix), x, gz=gz)
    write_idx(os.path.join(directory, lab + suffix), y, gz=gz)
    out[split] = (x, y)
  return out


def write_cifar(root, name, *, protocol=2, seed=0, n_per_file=4):
  """CIFAR python batches: dicts with bytes keys, ``data`` rows of R, G, B planes."""
  directory = os.path.join(root, local.CIFAR_DIRS[name])
  os.makedirs(directory, exist_ok=True)
  k = 100 if name == 'cifar100' else 10
  out = {}
  for split, files in local.CIFAR_FILES[name].items():
    xs, ys = [], []
    for i, f in enumerate(files):
      rows = _images(n_per_file, (3072,), seed + 7 * i + len(split))
      labels = [int(v) for v in _labels(n_per_file, k, seed + i + len(split))]
      entry = {b'data': rows, b'batch_label': b'batch'}
      if name == 'cifar100':
        entry[b'fine_labels'] = labels
        entry[b'coarse_labels'] = [v // 5 for v in labels]  # not what is trained on
      else:
        entry[b'labels'] = labels
      with open(os.path.join(directory, f), 'wb') as fh:
        pickle.dump(entry, fh, protocol=protocol)
      xs.append(rows)
      ys.append(labels)
    out[split] = (np.concatenate(xs), np.concatenate(ys))
  return directory, out


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize('gz, sub', [(True, ''), (False, 'FashionMNIST/raw'),
                                     (True, 'fashion-mnist')])
def test_idx_round_trip_in_each_directory_layout(tmp_path, gz, sub):
  written = write_idx_dataset(tmp_path / sub if sub else tmp_path, gz=gz)
  resolved = data.resolve('fashion_mnist', 'idx', str(tmp_path))
  assert resolved == ('idx', os.path.abspath(os.path.join(tmp_path, sub)))
  assert data.resolve('fashion_mnist', 'auto', str(tmp_path)) == resolved
  for split, (x, y) in written.items():
    inputs, labels = data.load('fashion_mnist', split, data_dir=str(tmp_path),
                               source='idx')
    assert inputs.shape == (len(y), 28, 28, 1) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs[..., 0], x.astype(np.float32) / 255)
    np.testing.assert_array_equal(labels, y)
    assert labels.dtype == np.int32


@pytest.mark.parametrize('name, protocol', [('cifar10', 2), ('cifar100', 5)])
def test_cifar_batches_round_trip(tmp_path, name, protocol):
  directory, written = write_cifar(str(tmp_path), name, protocol=protocol)
  assert data.resolve(name, 'auto', str(tmp_path)) == ('cifar_batches', directory)
  for split, (rows, labels) in written.items():
    inputs, got = data.load(name, split, data_dir=str(tmp_path), source='cifar_batches')
    assert inputs.shape == (len(labels), 32, 32, 3)
    # Pixel (r, c) of channel ch is byte ch * 1024 + r * 32 + c of its row.
    i, r, c, ch = 1, 5, 17, 2
    assert inputs[i, r, c, ch] == rows[i, ch * 1024 + r * 32 + c] / np.float32(255)
    np.testing.assert_array_equal(inputs.reshape(len(labels), -1, 3).transpose(0, 2, 1)
                                  .reshape(len(labels), -1), rows / np.float32(255))
    np.testing.assert_array_equal(got, labels)  # CIFAR-100: the fine labels


def test_cifar_unpickler_refuses_other_objects(tmp_path):
  directory, _ = write_cifar(str(tmp_path), 'cifar100')
  with open(os.path.join(directory, 'test'), 'wb') as f:
    pickle.dump({b'data': np.zeros((1, 3072), np.uint8), b'fine_labels': [0],
                 b'x': os.system}, f)
  with pytest.raises(data.BadDataFileError, match='refusing to load'):
    data.load('cifar100', 'test', data_dir=str(tmp_path))


@pytest.mark.parametrize('layout, expect', [
    ('nhw_uint8', 'NHW'), ('nhwc_float01', 'NHWC float32 in [0, 1]'),
    ('nchw_float255', 'NCHW'), ('nhwc_int64', 'NHWC int64')])
def test_npz_layouts_are_detected_and_logged(tmp_path, caplog, layout, expect):
  x = _images(N_TRAIN, (28, 28), 1)
  xt = _images(N_TEST, (28, 28), 2)
  y, yt = _labels(N_TRAIN, 10, 1), _labels(N_TEST, 10, 2)
  convert = {
      'nhw_uint8': lambda a: a,
      'nhwc_float01': lambda a: a[..., None].astype(np.float32) / 255,
      'nchw_float255': lambda a: a[:, None].astype(np.float64),
      'nhwc_int64': lambda a: a[..., None].astype(np.int64),
  }[layout]
  path = tmp_path / 'fashion_mnist.npz'
  np.savez(path, x_train=convert(x), y_train=y[:, None], x_test=convert(xt),
           y_test=yt)
  assert data.resolve('fashion_mnist', 'auto', str(tmp_path)) == ('npz', str(path))
  with caplog.at_level(std_logging.INFO):
    inputs, labels = data.load('fashion_mnist', 'train', data_dir=str(path),
                               source='npz')
  assert expect in caplog.text and str(path) in caplog.text
  np.testing.assert_allclose(inputs[..., 0], x / 255, atol=1e-6)
  np.testing.assert_array_equal(labels, y)


def test_pipeline_batches_from_local_files_are_deterministic_and_sharded(tmp_path):
  written = write_idx_dataset(tmp_path)
  x, y = written['train']
  kw = dict(batch_size=4, seed=5, data_dir=str(tmp_path), source='idx', num_steps=5)
  batches = list(data.train_batches('fashion_mnist', **kw))
  for step, (inputs, labels) in enumerate(batches):
    idx = data.train_indices(N_TRAIN, 4, 5, step)
    np.testing.assert_array_equal(labels, y[idx])
    np.testing.assert_array_equal(inputs[..., 0], x[idx] / np.float32(255))
  hosts = [list(data.train_batches('fashion_mnist', process_index=i, process_count=2,
                                   **kw)) for i in range(2)]
  for step, (inputs, labels) in enumerate(batches):
    np.testing.assert_array_equal(
        np.concatenate([hosts[0][step][1], hosts[1][step][1]]), labels)
  evals = list(data.eval_batches('fashion_mnist', batch_size=4, data_dir=str(tmp_path),
                                 source='idx'))
  assert sum(int(m.sum()) for _, _, m in evals) == N_TEST


# ----------------------------------------------------------------- auto and not found


def test_auto_prefers_prepared_tfds_over_local_files(tmp_path):
  write_idx_dataset(tmp_path)
  with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
    assert data.resolve('fashion_mnist', 'auto', str(tmp_path)).source == 'tfds'
    inputs, _ = data.load('fashion_mnist', 'train', data_dir=str(tmp_path))
    assert len(inputs) == 8  # the mock's examples, not the 12 files' ones
    assert data.resolve('fashion_mnist', 'idx', str(tmp_path)).source == 'idx'
  assert data.resolve('fashion_mnist', 'auto', str(tmp_path)).source == 'idx'


def test_auto_probes_tfds_without_warnings(tmp_path, caplog):
  """A missing TFDS dataset is an answer for 'auto', not a warning per probe."""
  write_idx_dataset(tmp_path)
  with caplog.at_level(std_logging.INFO):
    for _ in range(3):
      assert data.resolve('fashion_mnist', 'auto', str(tmp_path)).source == 'idx'
  assert not [r for r in caplog.records if r.levelno >= std_logging.WARNING], caplog.text


def test_nothing_found_says_where_it_looked_and_how_to_get_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.resolve('fashion_mnist', 'auto', str(tmp_path))
  message = str(info.value)
  assert 'train-images-idx3-ubyte' in message and str(tmp_path) in message
  assert 'apt-get install dataset-fashion-mnist' in message
  assert 'tfds build fashion_mnist' in message
  assert not list(tmp_path.iterdir())


def test_source_names_are_checked():
  with pytest.raises(ValueError, match="source.*'hdf5'"):
    data.resolve('fashion_mnist', 'hdf5')
  with pytest.raises(ValueError, match="'cifar_batches' cannot hold dataset 'mnist'"):
    data.resolve('mnist', 'cifar_batches')
  assert data.resolve('digits', 'idx') == ('embedded', '')


# ------------------------------------------------------------------------- bad files


def _bad_idx(tmp_path, case):
  """Writes a Fashion-MNIST IDX set with one defect; returns (bad file, expected text)."""
  written = write_idx_dataset(tmp_path, gz=case != 'truncated_raw')
  img, lab = local.IDX_FILES['train']
  gz = '' if case == 'truncated_raw' else '.gz'
  images, labels = (os.path.join(tmp_path, f + gz) for f in (img, lab))
  x, y = written['train']
  if case == 'magic':
    write_idx(images, x, magic=0x00000801, gz=True)
    return images, 'IDX magic number 0x00000801, expected 0x00000803'
  if case == 'truncated_raw':
    write_idx(images, x, cut=100)
    return images, 'truncated: the header declares 12x28x28'
  if case == 'truncated_gzip':
    with open(images, 'rb') as f:
      raw = f.read()
    with open(images, 'wb') as f:
      f.write(raw[:len(raw) // 2])
    return images, 'truncated or corrupt gzip stream'
  if case == 'count':
    write_idx(labels, y[:-1], gz=True)
    return labels, f'11 labels for the 12 images of {images}'
  if case == 'label':
    y = y.copy()
    y[3] = 10
    write_idx(labels, y, gz=True)
    return labels, "label 10 at index 3 is outside [0, 10) of 'fashion_mnist'"
  if case == 'shape':
    write_idx(images, _images(N_TRAIN, (32, 32), 0), gz=True)
    return images, "images are 32x32x1, 'fashion_mnist' images are 28x28x1"
  raise AssertionError(case)


def _bad_other(tmp_path, case):
  if case == 'cifar_pickle':
    directory, _ = write_cifar(str(tmp_path), 'cifar10')
    path = os.path.join(directory, 'data_batch_3')
    with open(path, 'rb') as f:
      raw = f.read()
    with open(path, 'wb') as f:
      f.write(raw[:200])
    return 'cifar10', path, 'not a CIFAR python batch'
  if case == 'cifar_label':
    directory, _ = write_cifar(str(tmp_path), 'cifar10')
    path = os.path.join(directory, 'data_batch_2')
    with open(path, 'wb') as f:
      pickle.dump({b'data': _images(4, (3072,), 0), b'labels': [0, 1, 10, 2]}, f)
    return 'cifar10', path, "label 10 at index 2 is outside [0, 10) of CIFAR-10"
  os.makedirs(tmp_path, exist_ok=True)
  path = str(tmp_path / 'fashion_mnist.npz')
  x, y = _images(N_TRAIN, (28, 28), 0), _labels(N_TRAIN, 10, 0)
  if case == 'npz_shape':
    np.savez(path, x_train=x[:, :27], y_train=y, x_test=x, y_test=y)
    return 'fashion_mnist', path, 'x_train has shape [12, 27, 28]'
  if case == 'npz_count':
    np.savez(path, x_train=x, y_train=y[:5], x_test=x, y_test=y)
    return 'fashion_mnist', path, '5 labels in y_train for 12 images in x_train'
  raise AssertionError(case)


IDX_CASES = ('magic', 'truncated_raw', 'truncated_gzip', 'count', 'label', 'shape')
OTHER_CASES = ('cifar_pickle', 'cifar_label', 'npz_shape', 'npz_count')


def _files(root):
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize('case', IDX_CASES + OTHER_CASES)
def test_bad_file_is_one_line_naming_it_and_nothing_is_written(tmp_path, case):
  root = tmp_path / 'data'
  if case in IDX_CASES:
    name, (path, expected) = 'fashion_mnist', _bad_idx(root, case)
  else:
    name, path, expected = _bad_other(root, case)
  before = _files(tmp_path)
  with pytest.raises(data.BadDataFileError) as info:
    data.load(name, 'train', data_dir=str(root))
  message = str(info.value)
  assert '\n' not in message and message.startswith(path), message
  assert expected in message, message
  assert _files(tmp_path) == before


def test_a_repaired_file_is_read_again(tmp_path):
  """Nothing is cached from a bad file: once it is fixed, the new bytes are read."""
  path, _ = _bad_idx(tmp_path, 'label')
  with pytest.raises(data.BadDataFileError):
    data.load('fashion_mnist', 'train', data_dir=str(tmp_path))
  for seed in (5, 6):  # and a file rewritten after a good read is read again
    y = _labels(N_TRAIN, 10, seed)
    write_idx(path, y, gz=True)
    os.utime(path, ns=(seed * 10**9, seed * 10**9))  # a new mtime even on coarse clocks
    _, labels = data.load('fashion_mnist', 'train', data_dir=str(tmp_path))
    np.testing.assert_array_equal(labels, y)


# ------------------------------------------------------------ training from local files


def _tiny_config(name, source, data_dir):
  from robustjax.training import schema  # pylint: disable=g-import-not-at-top
  c = schema.base_config()
  c.dataset.name, c.dataset.source, c.dataset.data_dir = name, source, str(data_dir)
  c.model.kwargs.widths = (8,)
  c.batch_size = 4
  c.num_train_steps = 2
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  c.eval.num_examples = 4
  c.eval.batch_size = 4
  c.eval.steps = 1
  return c


def _write_layout(root, layout):
  if layout == 'idx':
    write_idx_dataset(root / 'FashionMNIST' / 'raw')
    return 'fashion_mnist', str(root / 'FashionMNIST' / 'raw')
  if layout == 'cifar_batches':
    return 'cifar10', write_cifar(str(root), 'cifar10')[0]
  os.makedirs(root)
  x = _images(N_TRAIN, (1, 28, 28), 3)
  np.savez(root / 'fashion_mnist.npz', x_train=x, y_train=_labels(N_TRAIN, 10, 3),
           x_test=x[:N_TEST], y_test=_labels(N_TEST, 10, 4))
  return 'fashion_mnist', str(root / 'fashion_mnist.npz')


@pytest.mark.usefixtures('persistent_compilation_cache')  # idx and npz share programs
@pytest.mark.parametrize('layout', local.LOCAL_SOURCES)
def test_training_runs_from_each_layout_and_records_its_source(tmp_path, layout):
  import json  # pylint: disable=g-import-not-at-top
  from robustjax.training import train  # pylint: disable=g-import-not-at-top
  name, path = _write_layout(tmp_path / 'data', layout)
  workdir = tmp_path / 'run'
  final = train.train_and_evaluate(_tiny_config(name, 'auto', tmp_path / 'data'),
                                   str(workdir))
  assert final['step'] == 2
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['dataset']['resolved'] == {'source': layout, 'path': path}
  assert saved['dataset']['source'] == 'auto'
  if layout != 'idx':
    return
  # evaluate restores the run and reads the same files: its clean accuracy on the 4
  # examples is training's end-of-run one.
  from robustjax import evaluate  # pylint: disable=g-import-not-at-top
  report = evaluate.run(str(workdir), eps=[0.0], norm='inf', attacks=['pgd'],
                        num_examples=4, batch_size=4, progress=False)
  assert report['clean_accuracy'] == pytest.approx(final['clean_accuracy'])
  # A resumed run with the files moved elsewhere is the same run (where is run-local).
  moved = tmp_path / 'moved'
  os.rename(tmp_path / 'data', moved)
  again = train.train_and_evaluate(_tiny_config(name, 'auto', moved), str(workdir))
  assert again['step'] == 2


def test_bad_files_stop_the_run_before_its_workdir_exists(tmp_path):
  from robustjax.training import train  # pylint: disable=g-import-not-at-top
  path, _ = _bad_idx(tmp_path / 'data', 'count')
  workdir = tmp_path / 'run'
  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(_tiny_config('fashion_mnist', 'idx', tmp_path / 'data'),
                             str(workdir))
  message = str(info.value)
  assert message.startswith(f'config.dataset: {path}: 11 labels') and '\n' not in message
  assert not workdir.exists()


def test_runs_saved_before_dataset_source_existed_still_resume():
  from robustjax.training import schema  # pylint: disable=g-import-not-at-top
  from robustjax.training import workdir  # pylint: disable=g-import-not-at-top
  new = schema.base_config().to_dict()
  old = {**new, 'dataset': {k: v for k, v in new['dataset'].items()
                            if k not in ('source', 'resolved')}}
  assert workdir.differences(old, new) == []
  idx = {**new, 'dataset': {**new['dataset'], 'source': 'idx'}}
  assert [d[0] for d in workdir.differences(old, idx)] == ['dataset.source']
