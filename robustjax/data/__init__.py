"""Datasets: the embedded digits, 2-D toy sets, TFDS image sets and a stateless pipeline.

``train_batches``/``eval_batches`` are the entry points of training and evaluation;
``digits``, ``moons`` and ``spirals`` return whole arrays for notebooks and tests.
"""

from robustjax.data.digits import digits
from robustjax.data.pipeline import AUGMENTATIONS
from robustjax.data.pipeline import crop_flip
from robustjax.data.pipeline import dataset_names
from robustjax.data.pipeline import DatasetInfo
from robustjax.data.pipeline import eval_batches
from robustjax.data.pipeline import get_dataset_info
from robustjax.data.pipeline import load
from robustjax.data.pipeline import num_eval_batches
from robustjax.data.pipeline import open_split
from robustjax.data.pipeline import train_batches
from robustjax.data.pipeline import train_indices
from robustjax.data.synthetic import moons
from robustjax.data.synthetic import spirals
from robustjax.data.tfds_source import DatasetNotFoundError
from robustjax.data.tfds_source import TfdsSource

__all__ = [
    'AUGMENTATIONS', 'DatasetInfo', 'DatasetNotFoundError', 'TfdsSource', 'crop_flip',
    'dataset_names', 'digits', 'eval_batches', 'get_dataset_info', 'load', 'moons',
    'num_eval_batches', 'open_split', 'spirals', 'train_batches', 'train_indices',
]
