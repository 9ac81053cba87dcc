"""Work units of an evaluation, their atomic store under ``eval/<tag>/partial/``, and resume.

An evaluation is split into units ``(kind, name, eps, batch)``: an attack at one radius on
one batch, or a certificate on one batch. Each finished unit is written atomically, so a
killed evaluation re-run with the same flags loads the finished units and computes only
the rest. The store refuses to resume an evaluation made with other flags
(``settings.json``) or for another model, other data or another robustjax version
(``identity.json``: a fingerprint of the restored parameters, the evaluated data and the
library version), naming what changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zlib
from typing import NamedTuple

import jax
import numpy as np

import robustjax
from robustjax.evaluation import settings as settings_lib
from robustjax.training import workdir as workdir_lib

EVAL_DIR = 'eval'
PARTIAL_DIR = 'partial'
SETTINGS_FILE = 'settings.json'
IDENTITY_FILE = 'identity.json'


class Unit(NamedTuple):
  """One piece of work: ``kind`` is ``'attack'``, ``'smoothed'`` or ``'certify'``."""
  kind: str
  name: str
  eps: float | None
  batch: int

  @property
  def file_name(self) -> str:
    where = '' if self.eps is None else f'.eps{self.eps!r}'
    return f'{self.kind}.{self.name}{where}.b{self.batch:05d}.npz'


def npz_bytes(arrays: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def json_bytes(obj) -> bytes:
  return (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode('utf-8')


def load_npz(path: str) -> dict | None:
  """The arrays of a unit file, or None when it is missing or unreadable (redo it)."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zlib.error):
    return None


def params_fingerprint(params) -> str:
  """SHA-256 of a parameter pytree: every leaf's path, dtype, shape and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.asarray(leaf)
    digest.update(f'{jax.tree_util.keystr(path)}|{leaf.dtype.str}|{leaf.shape}|'.encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _data_identity(config, split: str, indices) -> dict:
  """What identifies the evaluated examples: dataset, source, split and indices."""
  indices = np.asarray(indices, np.int64)
  return {'dataset': str(config.dataset.name),
          'source': str(config.dataset.get('source', 'tfds')), 'split': split,
          'num_examples': int(indices.size),
          'indices_sha256': hashlib.sha256(indices.tobytes()).hexdigest()}


def identity(params, config, split: str, indices) -> dict:
  """The fingerprint resumed units must share: parameters, data, library version."""
  return {'parameters': params_fingerprint(params),
          'data': _data_identity(config, split, indices),
          'robustjax': robustjax.__version__}


def identity_mismatch(old: dict, new: dict, where: str) -> str | None:
  """One line naming what differs between two :func:`identity` dicts, or None."""
  fix = f'use a new --tag or delete {where}'
  if old.get('parameters') != new['parameters']:
    return (f'evaluation in {where} was made for other parameters (checkpoint '
            f'retrained?); {fix}')
  if old.get('data') != new['data']:
    changed = [k for k in new['data'] if old.get('data', {}).get(k) != new['data'][k]]
    return (f'evaluation in {where} was made for other data ({", ".join(changed)} '
            f'changed); {fix}')
  if old.get('robustjax') != new['robustjax']:
    return (f'evaluation in {where} was made with robustjax {old.get("robustjax")}, '
            f'this is {new["robustjax"]}; {fix}')
  return None


class UnitStore:
  """The finished units of one evaluation directory ``out_dir`` (``eval/<tag>``)."""

  def __init__(self, out_dir: str):
    self.out_dir = out_dir
    self.partial_dir = os.path.join(out_dir, PARTIAL_DIR)

  def _read(self, name: str):
    path = os.path.join(self.partial_dir, name)
    if not os.path.exists(path):
      return None
    with open(path, encoding='utf-8') as f:
      return json.load(f)

  def check(self, settings_json: dict, ident: dict | None) -> None:
    """Refuses (``--tag: ...``) to resume with other flags or, given ``ident`` (an
    :func:`identity`), another model, other data or another version."""
    old = self._read(SETTINGS_FILE)
    if old is not None:
      changed = settings_lib.diff(old, settings_json)
      if changed:
        settings_lib.fail('tag', f'{self.out_dir} holds an evaluation with other flags '
                          f'({"; ".join(changed)}); pass a new --tag, or delete that '
                          'directory to start over')
    old_ident = self._read(IDENTITY_FILE)
    if ident is not None and (old_ident is not None or old is not None):
      line = identity_mismatch(old_ident or {}, ident, self.out_dir)
      if line:
        settings_lib.fail('tag', line)

  def begin(self, settings_json: dict, ident: dict) -> None:
    """Creates the directory and records the settings and identity (first run only)."""
    os.makedirs(self.partial_dir, exist_ok=True)
    for name, obj in ((SETTINGS_FILE, settings_json), (IDENTITY_FILE, ident)):
      path = os.path.join(self.partial_dir, name)
      if not os.path.exists(path):
        workdir_lib.atomic_write(path, json_bytes(obj))

  def path(self, unit: Unit) -> str:
    return os.path.join(self.partial_dir, unit.file_name)

  def load(self, unit: Unit) -> dict | None:
    return load_npz(self.path(unit))

  def save(self, unit: Unit, arrays: dict) -> str:
    path = self.path(unit)
    workdir_lib.atomic_write(path, npz_bytes(arrays))
    return path
