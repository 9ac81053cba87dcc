"""Datasets: the embedded digits, 2-D toy sets, TFDS image sets, local files (IDX, CIFAR
batches, NPZ) and a stateless pipeline.

``train_batches``/``eval_batches`` are the entry points of training and evaluation;
``digits``, ``moons`` and ``spirals`` return whole arrays for notebooks and tests;
``resolve``/``resolve_source`` say where a dataset is read from (:mod:`.local`).
"""

from robustjax.data.digits import digits
from robustjax.data.local import BadDataFileError
from robustjax.data.local import LocalSource
from robustjax.data.local import Resolved
from robustjax.data.local import SOURCES
from robustjax.data.pipeline import AUGMENTATIONS
from robustjax.data.pipeline import crop_flip
from robustjax.data.pipeline import dataset_names
from robustjax.data.pipeline import DatasetInfo
from robustjax.data.pipeline import eval_batches
from robustjax.data.pipeline import get_dataset_info
from robustjax.data.pipeline import load
from robustjax.data.pipeline import num_eval_batches
from robustjax.data.pipeline import open_split
from robustjax.data.pipeline import resolve
from robustjax.data.pipeline import resolve_source
from robustjax.data.pipeline import train_batches
from robustjax.data.pipeline import train_indices
from robustjax.data.synthetic import moons
from robustjax.data.synthetic import spirals
from robustjax.data.tfds_source import DatasetNotFoundError
from robustjax.data.tfds_source import TfdsSource

__all__ = [
    'AUGMENTATIONS', 'BadDataFileError', 'DatasetInfo', 'DatasetNotFoundError',
    'LocalSource', 'Resolved', 'SOURCES', 'TfdsSource', 'crop_flip', 'dataset_names',
    'digits', 'eval_batches', 'get_dataset_info', 'load', 'moons', 'num_eval_batches',
    'open_split', 'resolve', 'resolve_source', 'spirals', 'train_batches',
    'train_indices',
]
