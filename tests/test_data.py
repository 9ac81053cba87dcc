"""Tests for robustjax.data: digits, synthetic sets, TFDS sources and the batch pipeline."""

import importlib
import itertools

import numpy as np
import pytest
import tensorflow_datasets as tfds

from robustjax import data

# The package attribute `digits` is the loader function; reach the module itself.
digits_module = importlib.import_module('robustjax.data.digits')


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


@pytest.fixture
def mock_cifar():
  with tfds.testing.mock_data(num_examples=20,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    yield


# ---------------------------------------------------------------- digits / synthetic


def test_digits_shapes_range_and_split():
  x_train, y_train = data.digits('train')
  x_test, y_test = data.digits('test')
  assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
  assert x_train.dtype == np.float32 and y_train.dtype == np.int32
  assert x_train.min() == 0.0 and x_train.max() == 1.0
  assert set(np.unique(y_train)) == set(range(10)) == set(np.unique(y_test))
  _, _, perm = digits_module._all_digits()
  train_idx, test_idx = set(perm[:1437]), set(perm[1437:])
  assert not train_idx & test_idx and len(train_idx | test_idx) == 1797
  again = data.digits('train')
  np.testing.assert_array_equal(again[0], x_train)
  np.testing.assert_array_equal(again[1], y_train)


def test_digits_rejects_unknown_split():
  with pytest.raises(ValueError, match="'train', 'test'"):
    data.digits('validation')


@pytest.mark.parametrize('make,k', [(lambda s: data.moons(200, noise=0.2, seed=s), 2),
                                    (lambda s: data.spirals(300, num_classes=3, noise=0.1,
                                                            seed=s), 3)])
def test_synthetic_sets_in_unit_square_and_seeded(make, k):
  x, y = make(0)
  assert x.shape == (len(y), 2) and x.dtype == np.float32 and y.dtype == np.int32
  assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05
  assert set(np.unique(y)) == set(range(k))
  np.testing.assert_array_equal(make(0)[0], x)
  assert not np.array_equal(make(1)[0], x)


def test_synthetic_argument_errors():
  with pytest.raises(ValueError, match='num_classes'):
    data.spirals(10, num_classes=1)
  with pytest.raises(ValueError, match='noise'):
    data.moons(10, noise=-1.0)


def test_dataset_info_and_unknown_name():
  info = data.get_dataset_info('cifar10')
  assert info.input_shape == (32, 32, 3) and info.num_classes == 10
  assert info.num_train == 50000 and len(info.mean) == 3 and info.augment == 'crop_flip'
  assert data.get_dataset_info('svhn').augment == 'none'
  assert data.get_dataset_info('digits').input_shape == (8, 8, 1)
  with pytest.raises(ValueError, match="unknown dataset name 'imagenet'.*'digits'"):
    data.get_dataset_info('imagenet')
  with pytest.raises(ValueError, match='valid choices'):
    data.train_batches('imagenet', batch_size=4)


# ---------------------------------------------------------------- TFDS


def test_tfds_cifar10_through_mock_data_source(mock_cifar):
  del mock_cifar
  batches = _take(data.train_batches('cifar10', batch_size=4, seed=0,
                                     data_dir='/nonexistent'), 6)
  for inputs, labels in batches:
    assert inputs.shape == (4, 32, 32, 3) and inputs.dtype == np.float32
    assert labels.shape == (4,) and labels.dtype == np.int32
    assert inputs.min() >= 0 and inputs.max() <= 1
    assert labels.min() >= 0 and labels.max() < 10
  evals = list(data.eval_batches('cifar10', batch_size=8, data_dir='/nonexistent'))
  assert len(evals) == 3
  assert sum(int(m.sum()) for _, _, m in evals) == 20
  assert evals[-1][0].shape == (8, 32, 32, 3) and not evals[-1][0][4:].any()


def test_tfds_svhn_and_mnist_shapes(mock_cifar):
  del mock_cifar
  (x, y), = _take(data.train_batches('mnist', batch_size=2), 1)
  assert x.shape == (2, 28, 28, 1) and x.max() <= 1
  (x, y), = _take(data.train_batches('svhn', batch_size=2), 1)
  assert x.shape == (2, 32, 32, 3) and y.dtype == np.int32


def test_absent_tfds_data_raises_helpful_error(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.train_batches('cifar10', batch_size=4, data_dir=str(tmp_path))
  err = info.value
  assert isinstance(err, ValueError) and isinstance(err, FileNotFoundError)
  message = str(err)
  assert 'tfds build cifar10 --file_format=array_record' in message
  assert "download_and_prepare" in message and str(tmp_path) in message
  assert 'TFDS_DATA_DIR' in message and "dataset='digits'" in message
  assert not list(tmp_path.iterdir())  # nothing was downloaded or created


# ---------------------------------------------------------------- pipeline


def test_resumed_iterator_yields_the_same_batches():
  kwargs = dict(batch_size=64, seed=3, augment='crop_flip')  # 22 steps per epoch
  fresh = _take(data.train_batches('digits', **kwargs), 30)
  resumed = _take(data.train_batches('digits', start_step=20, **kwargs), 10)
  for (xa, ya), (xb, yb) in zip(fresh[20:], resumed):
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
  other_seed = _take(data.train_batches('digits', **{**kwargs, 'seed': 4}), 1)
  assert not np.array_equal(other_seed[0][1], fresh[0][1])


def test_epochs_sample_without_replacement():
  steps = 1437 // 64
  seen = np.concatenate([data.train_indices(1437, 64, 0, s) for s in range(steps)])
  assert len(np.unique(seen)) == steps * 64
  assert not np.array_equal(data.train_indices(1437, 64, 0, 0),
                            data.train_indices(1437, 64, 0, steps))


def test_host_shards_are_disjoint_and_make_the_global_batch():
  kwargs = dict(batch_size=8, seed=1, augment='crop_flip', num_steps=3)
  whole = list(data.train_batches('digits', **kwargs))
  shards = [list(data.train_batches('digits', process_index=i, process_count=2,
                                    **kwargs)) for i in range(2)]
  for step, (x, y) in enumerate(whole):
    (x0, y0), (x1, y1) = shards[0][step], shards[1][step]
    assert x0.shape == (4, 8, 8, 1)
    np.testing.assert_array_equal(np.concatenate([x0, x1]), x)
    np.testing.assert_array_equal(np.concatenate([y0, y1]), y)
    idx = data.train_indices(1437, 8, 1, step)
    assert not set(idx[:4]) & set(idx[4:])


def test_eval_batches_count_every_example_once():
  x_test, y_test = data.digits('test')
  for count in (1, 2):
    shards = [list(data.eval_batches('digits', batch_size=100, process_index=i,
                                     process_count=count)) for i in range(count)]
    xs, ys = [], []
    for step in range(len(shards[0])):
      for shard in shards:
        x, y, mask = shard[step]
        xs.append(x[mask])
        ys.append(y[mask])
    np.testing.assert_array_equal(np.concatenate(xs), x_test)
    np.testing.assert_array_equal(np.concatenate(ys), y_test)
  assert data.num_eval_batches(360, 100) == 4


def test_augmentation_keeps_shape_and_range():
  rng = np.random.default_rng(0)
  images = rng.random((5, 8, 8, 3)).astype(np.float32)
  centred = data.crop_flip(images, np.full((5, 2), 4), np.zeros(5, bool))
  np.testing.assert_array_equal(centred, images)
  flipped = data.crop_flip(images, np.full((5, 2), 4), np.ones(5, bool))
  np.testing.assert_array_equal(flipped, images[:, :, ::-1])
  shifted = data.crop_flip(images, np.array([[0, 8]] * 5), np.zeros(5, bool))
  np.testing.assert_array_equal(shifted[:, 4:, :4], images[:, :4, 4:])
  (x_aug, y_aug), = _take(data.train_batches('digits', batch_size=16,
                                             augment='crop_flip'), 1)
  (x_raw, y_raw), = _take(data.train_batches('digits', batch_size=16, augment=False), 1)
  assert x_aug.shape == x_raw.shape and x_aug.dtype == np.float32
  assert x_aug.min() >= 0 and x_aug.max() <= 1 and not np.array_equal(x_aug, x_raw)
  np.testing.assert_array_equal(y_aug, y_raw)


def test_pipeline_argument_errors():
  with pytest.raises(ValueError, match='divisible by process_count'):
    data.train_batches('digits', batch_size=5, process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    data.train_batches('digits', batch_size=4, process_index=2, process_count=2)
  with pytest.raises(ValueError, match='unknown augment'):
    data.train_batches('digits', batch_size=4, augment='mixup')
  with pytest.raises(ValueError, match='needs images'):
    data.train_batches('moons', batch_size=4, augment='crop')
  with pytest.raises(ValueError, match='batch_size'):
    data.train_batches('digits', batch_size=5000)
  with pytest.raises(ValueError, match="'train', 'test'"):
    data.load('digits', 'valid')


def test_moons_pipeline_and_load():
  (x, y), = _take(data.train_batches('moons', batch_size=32), 1)
  assert x.shape == (32, 2) and y.dtype == np.int32
  x_all, _ = data.load('spirals', 'test', num_examples=50)
  assert x_all.shape == (50, 2)
