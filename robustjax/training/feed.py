"""What a run reads from :mod:`robustjax.data`: dataset facts, training batches, eval arrays.

Batches are pure functions of ``(seed, step)`` (see :mod:`robustjax.data.pipeline`), so a
run resumed at step ``s`` asks the pipeline for ``start_step=s`` and sees exactly the
batches an uninterrupted run would; each host reads its own slice of every global batch.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from robustjax import data


def info(dataset) -> data.DatasetInfo:
  """The :class:`robustjax.data.DatasetInfo` of ``config.dataset``."""
  return data.get_dataset_info(dataset.name)


def check_available(dataset) -> None:
  """Raises ``ValueError`` naming ``config.dataset`` (with how to prepare it) if absent."""
  try:
    data.open_split(dataset.name, 'train', dataset.data_dir or None)
    data.open_split(dataset.name, 'test', dataset.data_dir or None)
  except data.DatasetNotFoundError as e:
    raise ValueError(f'config.dataset.name: {dataset.name!r} is not available here.\n{e}'
                     ) from None


def train_batches(dataset, *, batch_size: int, seed: int, start_step: int,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """This host's slices ``(inputs [B/P, ...], labels [B/P])`` of steps ``start_step, ...``."""
  return data.train_batches(dataset.name, batch_size=batch_size, seed=seed,
                            start_step=start_step, process_index=process_index,
                            process_count=process_count, augment=dataset.augment,
                            data_dir=dataset.data_dir or None)


def eval_arrays(dataset, *, split: str = 'test', num_examples: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
  """The first ``num_examples`` (0 = all) of a split: float32 inputs and int32 labels."""
  return data.load(dataset.name, split, data_dir=dataset.data_dir or None,
                   num_examples=num_examples or None)


def eval_batches(dataset, *, split: str = 'test', batch_size: int, num_examples: int = 0
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """The first ``num_examples`` (0 = all) of a split in batches of ``batch_size``, the
  last padded: ``(inputs [B, ...], labels [B], mask [B])``, padded rows masked out
  (:func:`robustjax.data.eval_batches`)."""
  return data.eval_batches(dataset.name, batch_size=batch_size, split=split,
                           data_dir=dataset.data_dir or None,
                           num_examples=num_examples or None)


def num_eval_examples(dataset, *, split: str = 'test', num_examples: int = 0) -> int:
  """How many examples :func:`eval_batches` yields (``num_examples``, 0 = all, at most
  the split's size)."""
  size = len(data.open_split(dataset.name, split, dataset.data_dir or None))
  return min(int(num_examples), size) if num_examples else size
