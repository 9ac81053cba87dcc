"""A workdir belongs to one run: its saved config, the identity check, and segments.

Files (all standard JSON: infinities are written as the strings ``"inf"`` / ``"-inf"``
and read back as floats, so ``JSON.parse`` and ``jq`` accept them):

  config.json               the config of the run's first segment; written once, never
                            overwritten
  config.segment-<n>.json   one per extension of ``num_train_steps`` (n = 1, 2, ...):
                            ``{segment, start_step, previous_num_train_steps,
                            num_train_steps}``

Re-running in a workdir compares the new config with the saved one (``config.json``
with the latest segment's ``num_train_steps``), field by field:

- identical: the run resumes from its latest checkpoint;
- only ``num_train_steps`` raised, and the caller passed ``extend=True`` (the
  ``--extend`` flag of ``robustjax.main``): the run continues to the new total and the
  extension is recorded as a segment. The learning-rate schedule is rebuilt for the new
  total (a cosine schedule does not end at the old total any more), and the log says what
  the learning rate becomes at the restored step;
- anything else: :class:`WorkdirConflictError`, one line listing the differing fields,
  before anything is compiled or written.

Fields that say where things are rather than what is trained (:data:`RUN_LOCAL_FIELDS`:
the data directory, the ``jax.distributed`` settings of the cluster) may differ between
runs of the same workdir, and so may where the data was found (``dataset.resolved``).
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from typing import Any, NamedTuple

CONFIG_FILE = 'config.json'
SEGMENT_FILE = 'config.segment-{}.json'
RUN_LOCAL_FIELDS = ('dataset.data_dir', 'dataset.resolved', 'distributed')
EXTENDABLE_FIELD = 'num_train_steps'
# Fields added to the schema after runs were saved without them: a saved config that
# lacks one ran with this value, so a new config holding it is the same run.
ADDED_FIELDS = {'dataset.source': 'auto'}
MAX_LISTED = 8  # differing fields named in a conflict message (then "and N more")

_INF_STRINGS = {'inf': math.inf, '-inf': -math.inf}
ABSENT = object()  # a field or group missing on one side of a comparison


class WorkdirConflictError(ValueError):
  """The workdir holds another run (its config differs); the message names the fields."""


class Claim(NamedTuple):
  """What a run does with its workdir (from :func:`check`)."""
  kind: str  # 'new' (no config.json yet), 'resume' (identical) or 'extend'
  previous_num_train_steps: int  # the saved total (0 for 'new')


def to_json(obj: Any) -> Any:
  """``obj`` with non-finite floats as ``"inf"`` / ``"-inf"`` / ``"nan"`` strings."""
  if isinstance(obj, dict):
    return {str(k): to_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [to_json(v) for v in obj]
  if isinstance(obj, float) and not math.isfinite(obj):
    return 'nan' if math.isnan(obj) else ('inf' if obj > 0 else '-inf')
  return obj


def from_json(obj: Any) -> Any:
  """Inverse of :func:`to_json` for infinities: ``"inf"`` / ``"-inf"`` become floats."""
  if isinstance(obj, dict):
    return {k: from_json(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [from_json(v) for v in obj]
  if isinstance(obj, str) and obj in _INF_STRINGS:
    return _INF_STRINGS[obj]
  return obj


def atomic_write(path: str, data: bytes | str) -> None:
  """Writes ``data`` to ``path`` atomically: a process-unique temporary file, flushed
  to disk, then renamed over ``path`` (a reader sees the old file or the new one)."""
  if isinstance(data, str):
    data = data.encode('utf-8')
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as standard JSON (no ``Infinity``/``NaN`` tokens), atomically."""
  atomic_write(path, json.dumps(to_json(obj), indent=2, sort_keys=True,
                                allow_nan=False) + '\n')


def read_json(path: str) -> Any:
  """Reads a file written by :func:`write_json` (older files with ``Infinity`` too)."""
  with open(path, encoding='utf-8') as f:
    return from_json(json.load(f))


def segments(workdir: str) -> list[dict]:
  """The recorded extensions of the run in ``workdir``, in order."""
  found = []
  for path in glob.glob(os.path.join(workdir, SEGMENT_FILE.format('*'))):
    match = re.fullmatch(SEGMENT_FILE.format(r'(\d+)').replace('.', r'\.'),
                         os.path.basename(path))
    if match:
      found.append((int(match.group(1)), read_json(path)))
  return [s for _, s in sorted(found, key=lambda item: item[0])]


def saved_config(workdir: str) -> dict | None:
  """The run's current config as a dict: config.json with the latest segment applied."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  from robustjax.training import schema  # pylint: disable=g-import-not-at-top
  config = schema.fold_legacy(read_json(path))  # an older run's eps_ramp_steps
  for segment in segments(workdir):
    config[EXTENDABLE_FIELD] = segment[EXTENDABLE_FIELD]
  return config


def _local(field: str) -> bool:
  return any(field == f or field.startswith(f + '.') for f in RUN_LOCAL_FIELDS)


def _diff(a: Any, b: Any, prefix: str, out: list) -> None:
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b), key=str):
      field = f'{prefix}{key}'
      if _local(field):
        continue
      if key not in a and field in ADDED_FIELDS and b[key] == ADDED_FIELDS[field]:
        continue
      if key not in a or key not in b:
        out.append((field, a.get(key, ABSENT), b.get(key, ABSENT)))
      else:
        _diff(a[key], b[key], f'{field}.', out)
  elif a != b:
    out.append((prefix[:-1], a, b))


def differences(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
  """``[(field, saved value, new value)]``, :data:`ABSENT` for a missing field or group
  (a group present on one side only is one entry, not one per leaf)."""
  out = []
  _diff(from_json(to_json(saved)), from_json(to_json(new)), '', out)
  return out


def _show(value: Any) -> str:
  if value is ABSENT:
    return '(absent)'
  if isinstance(value, dict):
    return f'{{name={value["name"]!r}, ...}}' if 'name' in value else '{...}'
  return repr(value)


def _describe(diffs) -> str:
  shown = [f'{field}: {_show(old)} -> {_show(new)}' for field, old, new in diffs[:MAX_LISTED]]
  if len(diffs) > MAX_LISTED:
    shown.append(f'and {len(diffs) - MAX_LISTED} more')
  return '; '.join(shown)


def check(workdir: str, config: dict, *, extend: bool = False) -> Claim:
  """Decides whether ``config`` may run in ``workdir`` (reads files only).

  Args:
    workdir: the run's directory (may not exist yet).
    config: the new config as a plain dict (``ConfigDict.to_dict()``).
    extend: accept a higher ``num_train_steps`` than the saved one (the only field that
      may change); the caller then records a segment with :func:`record`.

  Returns:
    A :class:`Claim`.

  Raises:
    WorkdirConflictError: the saved config differs (message lists the fields).
  """
  saved = saved_config(workdir)
  if saved is None:
    return Claim('new', 0)
  diffs = differences(saved, config)
  previous = int(saved.get(EXTENDABLE_FIELD, 0))
  if not diffs:
    return Claim('resume', previous)
  where = f'workdir: {workdir!r} holds another run'
  fields = f'config differs from its {CONFIG_FILE} in {_describe(diffs)}'
  only_steps = [d[0] for d in diffs] == [EXTENDABLE_FIELD]
  new_steps = config.get(EXTENDABLE_FIELD)
  if only_steps and extend and new_steps > previous:
    return Claim('extend', previous)
  if only_steps and new_steps > previous:
    raise WorkdirConflictError(
        f'{where} of {previous} steps ({fields}); to train this run on to {new_steps} '
        f'steps add --extend (extend=True from Python), or use a new --workdir')
  if only_steps and extend:
    raise WorkdirConflictError(
        f'{where} of {previous} steps; --extend can only raise num_train_steps, got '
        f'{new_steps}')
  raise WorkdirConflictError(
      f'{where} ({fields}); re-run with its own config to resume it, or use a new '
      f'--workdir')


def record(workdir: str, config: dict, claim: Claim, *, start_step: int) -> str | None:
  """Writes config.json for a new run, or the next segment file for an extension.

  Returns:
    The path written, or None when the claim is a plain resume.
  """
  if claim.kind == 'new':
    path = os.path.join(workdir, CONFIG_FILE)
    write_json(path, config)
    return path
  if claim.kind == 'extend':
    number = len(segments(workdir)) + 1
    path = os.path.join(workdir, SEGMENT_FILE.format(number))
    write_json(path, {'segment': number, 'start_step': int(start_step),
                      'previous_num_train_steps': claim.previous_num_train_steps,
                      EXTENDABLE_FIELD: int(config[EXTENDABLE_FIELD])})
    return path
  return None
