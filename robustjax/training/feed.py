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


def _source(dataset) -> str:
  return dataset.get('source', 'auto') or 'auto'


def check_available(dataset) -> tuple[str, str]:
  """Reads both splits of ``config.dataset`` and returns its ``(source, path)``.

  Raises:
    ValueError: naming ``config.dataset`` (with how to prepare it) if absent, or
      :class:`robustjax.data.BadDataFileError` (``config.dataset: <file>: <what is
      wrong>``) for a bad file.
  """
  try:
    resolved = data.resolve_source(dataset)
    data.open_split(dataset.name, 'train', dataset.data_dir or None,
                    source=_source(dataset))
    data.open_split(dataset.name, 'test', dataset.data_dir or None,
                    source=_source(dataset))
  except data.DatasetNotFoundError as e:
    raise ValueError(f'config.dataset.name: {dataset.name!r} is not available here.\n{e}'
                     ) from None
  except data.BadDataFileError as e:  # one line: the file and what is wrong with it
    raise data.BadDataFileError(f'config.dataset: {e}') from None
  return resolved


def train_batches(dataset, *, batch_size: int, seed: int, start_step: int,
                  process_index: int = 0, process_count: int = 1
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """This host's slices ``(inputs [B/P, ...], labels [B/P])`` of steps ``start_step, ...``."""
  return data.train_batches(dataset.name, batch_size=batch_size, seed=seed,
                            start_step=start_step, process_index=process_index,
                            process_count=process_count, augment=dataset.augment,
                            data_dir=dataset.data_dir or None,
                            source=_source(dataset))


def eval_arrays(dataset, *, split: str = 'test', num_examples: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
  """The first ``num_examples`` (0 = all) of a split: float32 inputs and int32 labels."""
  return data.load(dataset.name, split, data_dir=dataset.data_dir or None,
                   num_examples=num_examples or None, source=_source(dataset))
