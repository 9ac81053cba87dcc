"""Run observability: TensorBoard events (tensorboardX, no TensorFlow), metrics.jsonl,
and a progress bar on a terminal or periodic log lines elsewhere."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping

from absl import logging


class MetricWriter:
  """Writes scalar metrics to ``workdir/metrics.jsonl`` and TensorBoard event files.

  Only process 0 writes; other hosts get a no-op writer.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a', encoding='utf-8')
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # pragma: no cover - tensorboardX is a dependency
        logging.warning('tensorboardX missing: no TensorBoard event files')

  def write(self, step: int, metrics: Mapping[str, float], prefix: str = 'train') -> None:
    """Appends one record ``{'step', 'split', **metrics}``."""
    if not self._enabled:
      return
    clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v)))
             for k, v in metrics.items()}
    self._jsonl.write(json.dumps({'step': int(step), 'split': prefix, **clean}) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in metrics.items():
        self._tb.add_scalar(f'{prefix}/{key}', float(value), int(step))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


class Progress:
  """A tqdm bar with steps/s and ETA when stderr is a terminal, else absl log lines."""

  def __init__(self, *, start: int, total: int, enabled: bool = True):
    self._start, self._total, self._last = start, total, start
    self._t0 = time.perf_counter()
    self._bar = None
    if enabled and sys.stderr.isatty():
      try:
        import tqdm  # pylint: disable=g-import-not-at-top
        self._bar = tqdm.tqdm(total=total, initial=start, unit='step', dynamic_ncols=True)
      except ImportError:  # pragma: no cover
        self._bar = None
    self._enabled = enabled

  def update(self, step: int, metrics: Mapping[str, float]) -> None:
    """Advances to ``step`` and shows the latest loss/accuracy."""
    if not self._enabled:
      return
    if self._bar is not None:
      self._bar.update(step - self._last)
      self._bar.set_postfix({k: f'{float(metrics[k]):.4g}'
                             for k in ('loss', 'accuracy') if k in metrics})
    else:
      elapsed = time.perf_counter() - self._t0
      rate = (step - self._start) / max(elapsed, 1e-9)
      eta = (self._total - step) / max(rate, 1e-9)
      shown = ' '.join(f'{k}={float(v):.4g}' for k, v in sorted(metrics.items()))
      logging.info('step %d/%d (%.2f steps/s, ETA %.0fs) %s', step, self._total, rate,
                   eta, shown)
    self._last = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
