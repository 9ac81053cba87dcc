"""Run observability: TensorBoard events (tensorboardX, no TensorFlow), metrics.jsonl,
and a progress bar on a terminal or periodic log lines elsewhere.

Each step is recorded once. A resumed run drops what an earlier attempt wrote after the
step it restored (a run killed at step 350 with its last checkpoint at 250 logged steps
300 and 350, which the resumed run logs again): the rows of ``metrics.jsonl`` and the
events of the TensorBoard files past that step are removed before anything new is
written (the event files are rewritten without them, so every TensorBoard reader sees
each step once, with no reliance on TensorBoard's purge rules). An ``eval`` row names the
attack and radius it measured (``attack``, ``eps``, ``p``), and evaluating again at the
same step replaces the earlier row instead of adding one.
"""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import sys
import time
from typing import Any, Callable, Mapping

from absl import logging

from robustjax.training import workdir as workdir_lib

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _rewrite_jsonl(path: str, keep: Callable[[dict], bool]) -> int:
  """Removes the rows of a JSON-lines file for which ``keep`` is False; returns how many.

  A last line cut short by a kill is dropped too.
  """
  if not os.path.exists(path):
    return 0
  rows, dropped = [], 0
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        dropped += 1
        continue
      if keep(row):
        rows.append(line if line.endswith('\n') else line + '\n')
      else:
        dropped += 1
  if dropped:
    workdir_lib.atomic_write(path, ''.join(rows))
  return dropped


def read_event_records(path: str) -> list[bytes]:
  """The serialized ``Event`` protos of a TensorBoard events file (TFRecord framing:
  little-endian uint64 length, its masked CRC, the payload, the payload's masked CRC).
  A record cut short by a kill ends the list."""
  with open(path, 'rb') as f:
    data = f.read()
  records, pos = [], 0
  while pos + 12 <= len(data):
    (length,) = struct.unpack('<Q', data[pos:pos + 8])
    end = pos + 12 + length + 4
    if end > len(data):
      break
    records.append(data[pos:end])
    pos = end
  return records


def event_files(directory: str) -> list[str]:
  """The TensorBoard events files in ``directory``, oldest name first."""
  return sorted(glob.glob(os.path.join(directory, 'events.out.tfevents.*')))


def _rewrite_events(paths: list[str], keep: Callable[[Any], bool]) -> int:
  """Removes the events for which ``keep(event)`` is False from the files ``paths``."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  dropped = 0
  for path in paths:
    records = read_event_records(path)
    kept = []
    for record in records:
      event = event_pb2.Event()
      event.ParseFromString(record[12:-4])
      if keep(event):
        kept.append(record)
    if len(kept) != len(records) or os.path.getsize(path) != sum(map(len, records)):
      dropped += len(records) - len(kept)
      workdir_lib.atomic_write(path, b''.join(kept))
  return dropped


class MetricWriter:
  """Writes scalar metrics to ``workdir/metrics.jsonl`` and TensorBoard event files.

  Only process 0 writes; other hosts get a no-op writer.

  Args:
    workdir: the run's directory.
    enabled: False on processes other than the lead.
    resume_step: the step the run (re)starts from: rows and events an earlier attempt
      logged after it are removed first (0 for a fresh start).
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int = 0):
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._path = os.path.join(workdir, METRICS_FILE)
      self._tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
      dropped = _rewrite_jsonl(self._path, lambda row: row.get('step', 0) <= resume_step)
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      except ImportError:  # pragma: no cover - tensorboardX is a dependency
        SummaryWriter = None  # pylint: disable=invalid-name
        logging.warning('tensorboardX missing: no TensorBoard event files')
      if SummaryWriter is not None:
        self._earlier_files = event_files(self._tb_dir)
        dropped += _rewrite_events(self._earlier_files, lambda e: e.step <= resume_step)
        # A unique suffix: tensorboardX names files by the second, and a second writer
        # within the same second would truncate the first one's file.
        self._tb = SummaryWriter(self._tb_dir,
                                 filename_suffix=f'.{os.getpid()}.{time.time_ns()}')
      if dropped:
        logging.info('dropped %d metric records past the restored step %d', dropped,
                     resume_step)
      self._jsonl = open(self._path, 'a', encoding='utf-8')

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

  def write_eval(self, step: int, metrics: Mapping[str, float], *, attack: str,
                 eps: float, p: float) -> None:
    """Records an evaluation at ``step``, labelled with the ``attack`` and radius that
    produced it; an earlier evaluation with the same label at the same step is replaced.

    The jsonl row is ``{'step', 'split': 'eval', 'attack', 'eps', 'p', **metrics}``; the
    TensorBoard scalars are ``eval/<metric>`` with the label as an ``eval/attack`` text.
    """
    if not self._enabled:
      return
    self._jsonl.close()
    _rewrite_jsonl(self._path, lambda r: not (r.get('split') == 'eval' and
                                              r.get('step') == int(step) and
                                              r.get('attack') == attack))
    self._jsonl = open(self._path, 'a', encoding='utf-8')
    row = {'step': int(step), 'split': 'eval', 'attack': attack, 'eps': float(eps),
           'p': float(p), **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(workdir_lib.to_json(row), allow_nan=False) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      _rewrite_events(self._earlier_files, lambda e: not (
          e.step == int(step) and any(v.tag.startswith('eval/') for v in e.summary.value)))
      for key, value in metrics.items():
        self._tb.add_scalar(f'eval/{key}', float(value), int(step))
      self._tb.add_text('eval/attack', attack, int(step))

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
