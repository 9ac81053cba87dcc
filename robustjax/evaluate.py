r"""Evaluate a trained run: AutoAttack / PGD robust accuracy and certified accuracy.

  python -m robustjax.evaluate --workdir=/tmp/llr_digits --eps=0.05,0.1 \
      --attacks=pgd,autoattack [--norm=inf --num_examples=0 --tag=...]
  python -m robustjax.evaluate --workdir=/tmp/crt_digits --certify=crc \
      --radii=0,0.25,0.5

The run's latest checkpoint is restored (:func:`robustjax.training.restore`, inference
mode: BatchNorm running averages), its dataset's split is read and every requested
attack is run at every radius. Results go to ``WORKDIR/eval/<tag>/``:

- ``report.json``: what was evaluated and how (checkpoint, data, norm, radii, attacks
  and their hyperparameters, seed), clean accuracy, robust accuracy per radius per
  attack and the per-example worst case over the attacks, which attack broke how many
  points, AutoAttack's gradient-masking flags, timing, library versions, the machine;
- ``report.md``: the same as tables; ``per_example.npz``: per-example results;
- ``accuracy_vs_eps.png`` (and ``certified_accuracy.png`` with ``--certify``).

Resuming: the work is split into units (radius, attack, batch); each finished unit is
saved atomically under ``eval/<tag>/partial/``, so re-running a killed evaluation with
the same flags skips the finished units and writes the report an uninterrupted run
would have written (every unit's key is a function of the seed, the attack and the
batch index). The report files are written only at the end, ``report.json`` last (its
presence means the evaluation finished). The same ``--tag`` with different flags is
refused, naming the flags that differ. Nothing outside ``eval/<tag>/`` is written.

Certification (``--certify``; L2 only): ``crc`` runs the curvature-based certificate
(Singla & Feizi 2020, "Second-Order Provable Defenses against Adversarial Attacks") on
smooth MLPs (:func:`robustjax.certify.crc_mlp`, every target class, exact curvature
bounds); ``smoothing`` runs randomized smoothing's CERTIFY (Cohen, Rosenfeld & Kolter
2019, "Certified Adversarial Robustness via Randomized Smoothing"). The
certified-accuracy curve at ``--radii`` is reported next to the empirical robust
accuracy of the same classifier under the requested attacks (default PGD-20 and
AutoAttack, L2) at the same radii. A certified example that an attack breaks within
its certified radius would be a bug: it is counted in the report's ``violations`` and
a warning is printed. For smoothing, the attacked classifier is the smoothed one: the
attacks run on the log of the base model's softmax averaged over fixed Gaussian draws
(a differentiable surrogate; the base model alone is a different classifier, whose
empirical curve may lie below a sound certified one), and a point counts as broken
when the smoothed classifier's PREDICT returns another class there (abstaining is not
a break).

One process: PGD and the certificates shard each batch over this host's devices;
AutoAttack is a host-level loop over its compiled attacks (it re-batches the points
still robust between attacks) and runs on the default device.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import logging as std_logging
import math
import os
import platform
import socket
import sys
import time
import zlib
from typing import Any, Callable, Sequence

import numpy as np

AUTOATTACK_NAMES = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'fab', 'fab-t', 'square')
ATTACKS = ('autoattack',) + AUTOATTACK_NAMES + ('pgd',)
DEFAULT_ATTACKS = ('pgd', 'autoattack')
NORMS = {'inf': math.inf, '2': 2.0, '1': 1.0}
# Norms each attack supports (the AutoAttack contract's guarantees; a norm the
# implementation turns down is also caught before anything compiles).
SUPPORTED_NORMS = {'pgd': ('inf', '2', '1'),
                   **{name: ('inf', '2', '1') for name in ('autoattack',) + AUTOATTACK_NAMES}}
VERSIONS = ('standard', 'plus', 'rand')
SPLITS = ('test', 'train')
CERTIFY_METHODS = ('', 'smoothing', 'crc')
DEFAULT_RADII = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
# PGD as training's end-of-run evaluation: 20 steps of 2.5 eps / 20, CE, one start.
PGD_HPARAMS = {'steps': 20, 'restarts': 1, 'objective': 'ce',
               'step_size': '2.5 * eps / steps', 'init': 'uniform'}
ROBUST = -1  # broken_by of a robust example
ABSTAIN = -1  # a smoothed prediction that abstains
CLEAN_MISCLASSIFIED = -2  # broken_by of an example misclassified without attack
BOUNDS = (0.0, 1.0)
SMOOTHING_ATTACK_SAMPLES = 32  # Gaussian draws averaged in the smoothed classifier's logits
SMOOTHING_PREDICT_SAMPLES = 1000  # PREDICT's samples at each attack point
EVAL_DIR = 'eval'
PARTIAL_DIR = 'partial'
SETTINGS_FILE = 'settings.json'
REPORT_FILES = ('per_example.npz', 'accuracy_vs_eps.png', 'certified_accuracy.png',
                'report.md', 'report.json')
FORMAT = 1


# ----------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that determines an evaluation's results (compared when resuming)."""
  workdir: str
  checkpoint_step: int
  split: str
  num_examples: int
  norm: str
  eps: tuple[float, ...]
  attacks: tuple[str, ...]
  version: str
  batch_size: int
  seed: int
  certify: str
  sigma: float
  num_samples: int
  num_selection: int
  alpha: float

  def as_json(self) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}


def _fail(flag: str, message: str):
  raise ValueError(f'--{flag}: {message}')


def _as_list(value, flag: str, convert: Callable[[Any], Any]) -> list:
  if isinstance(value, str):
    value = [v for v in value.split(',') if v.strip()]
  elif np.ndim(value) == 0:
    value = [value]
  try:
    return [convert(v.strip() if isinstance(v, str) else v) for v in value]
  except (TypeError, ValueError):
    _fail(flag, f'expected a comma-separated list, got {value!r}')


def _radii(value, flag: str) -> tuple[float, ...]:
  values = _as_list(value, flag, float)
  if not values:
    _fail(flag, 'give at least one radius')
  for v in values:
    if not math.isfinite(v) or v < 0:
      _fail(flag, f'every radius must be a finite number >= 0, got {v}')
  if len(set(values)) != len(values):
    _fail(flag, f'radii must be distinct, got {values}')
  return tuple(float(v) for v in values)


def _integer(value, flag: str, minimum: int) -> int:
  ok = (not isinstance(value, bool) and isinstance(value, (int, np.integer, float))
        and float(value).is_integer() and value >= minimum)
  if not ok:
    _fail(flag, f'must be an integer >= {minimum}, got {value!r}')
  return int(value)


def _norm_name(norm) -> str:
  if isinstance(norm, str):
    name = norm.strip().lower().lstrip('l')
    name = {'infinity': 'inf', '2.0': '2', '1.0': '1'}.get(name, name)
  else:
    try:
      value = float(norm)
    except (TypeError, ValueError):
      value = float('nan')
    name = 'inf' if math.isinf(value) else {2.0: '2', 1.0: '1'}.get(value, str(norm))
  if name not in NORMS:
    _fail('norm', f'unknown norm {norm!r}; valid: inf, 2, 1')
  return name


def _check_flags(*, eps, norm, attacks, version, num_examples, split, batch_size, seed,
                 certify, sigma, num_samples, num_selection, alpha, radii, tag):
  """Validates the flags that need no workdir; returns them normalised."""
  certify = certify or ''
  if certify not in CERTIFY_METHODS:
    _fail('certify', f'unknown method {certify!r}; valid: smoothing, crc (or empty)')
  if certify:
    if norm is not None and _norm_name(norm) != '2':
      _fail('norm', f'certificates here are L2: --certify={certify} needs --norm=2 '
            f'(or no --norm), got {norm!r}')
    if eps is not None:
      _fail('eps', 'with --certify the empirical curve is measured at --radii; drop --eps')
    norm = '2'
    eps = _radii(DEFAULT_RADII if radii is None else radii, 'radii')
  else:
    if radii is not None:
      _fail('radii', 'only used with --certify; use --eps for attack radii')
    if eps is not None:
      eps = _radii(eps, 'eps')
    if norm is not None:
      norm = _norm_name(norm)
  names = _as_list(attacks, 'attacks', str)
  if not names:
    _fail('attacks', f'give at least one attack; valid: {", ".join(ATTACKS)}')
  for name in names:
    if name not in ATTACKS:
      _fail('attacks', f'unknown attack {name!r}; valid: {", ".join(ATTACKS)}')
  if len(set(names)) != len(names):
    _fail('attacks', f'each attack once, got {names}')
  if version not in VERSIONS:
    _fail('version', f'unknown AutoAttack version {version!r}; valid: '
          f'{", ".join(VERSIONS)}')
  if split not in SPLITS:
    _fail('split', f'unknown split {split!r}; valid: {", ".join(SPLITS)}')
  num_examples = _integer(num_examples, 'num_examples', 0)
  batch_size = _integer(batch_size or 0, 'batch_size', 0)
  seed = _integer(seed, 'seed', 0)
  if certify == 'smoothing':
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
      _fail('sigma', f'must be > 0, got {sigma!r}')
    num_samples = _integer(num_samples, 'num_samples', 1)
    num_selection = _integer(num_selection, 'num_selection', 1)
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
      _fail('alpha', f'must lie in (0, 1), got {alpha!r}')
  else:  # not used: fixed values keep the settings comparable
    sigma, num_samples, num_selection, alpha = 0.0, 0, 0, 0.0
  if tag is not None and tag != '':
    if (not isinstance(tag, str) or '/' in tag or os.sep in tag or tag in ('.', '..')
        or tag.startswith('.')):
      _fail('tag', f'must be a plain directory name, got {tag!r}')
  return dict(eps=eps, norm=norm, attacks=tuple(names), version=version,
              num_examples=num_examples, split=split, batch_size=batch_size, seed=seed,
              certify=certify, sigma=float(sigma), num_samples=num_samples,
              num_selection=num_selection, alpha=float(alpha))


def _check_norms(norm: str, attacks: Sequence[str]) -> None:
  for name in attacks:
    if norm not in SUPPORTED_NORMS[name]:
      valid = ', '.join(SUPPORTED_NORMS[name])
      _fail('norm', f'attack {name!r} does not support L{norm}; it supports: {valid} '
            '(drop it from --attacks or change --norm)')


def _default_tag(norm: str, certify: str) -> str:
  return f'certify-{certify}' if certify else f'l{norm}'


def _diff_settings(old: dict, new: dict) -> list[str]:
  """``'--eps was [0.1], now [0.2]'`` for every setting that differs."""
  out = []
  for k in sorted(set(old) | set(new)):
    if k != 'workdir' and old.get(k) != new.get(k):  # a moved workdir may resume
      name = 'the checkpoint step' if k == 'checkpoint_step' else f'--{k}'
      out.append(f'{name} was {old.get(k)!r}, now {new.get(k)!r}')
  return out


# ------------------------------------------------------------------------ files


def _atomic_write_bytes(path: str, data: bytes) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _npz_bytes(arrays: dict) -> bytes:
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return buffer.getvalue()


def _json_bytes(obj) -> bytes:
  return (json.dumps(obj, indent=2, sort_keys=True) + '\n').encode('utf-8')


def _unit_file(kind: str, name: str, eps: float | None, batch: int) -> str:
  where = '' if eps is None else f'.eps{eps!r}'
  return f'{kind}.{name}{where}.b{batch:05d}.npz'


def _load_npz(path: str) -> dict | None:
  try:
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zlib.error):  # unreadable: redo the unit
    return None


# --------------------------------------------------------------------- attacks


def _key_name(attack: str) -> str:
  """AutoAttack's attacks share one key: it derives each attack's own key from it
  (``fold_in(rng, index of the attack)``), so an attack run alone draws what it draws
  inside the ensemble."""
  return 'pgd' if attack == 'pgd' else 'autoattack'


def attack_key(seed: int, name: str):
  """The key of attack ``name``: batch ``i`` is attacked with ``fold_in(key, i)``.

  The same key serves every radius (as :func:`robustjax.metrics.accuracy_vs_eps`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) % 2**31)


def _pgd_fn(logits_fn, *, p: float):
  """``(params, x, y, key, eps) -> (robust [B], broken_by [B], flags, x_adv [B, ...])``.

  ``eps`` is an argument, so one compilation serves every radius.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustjax import attacks  # pylint: disable=g-import-not-at-top

  def correct(params, x, y):
    return jnp.argmax(logits_fn(params, x), axis=-1) == y

  def pgd_fn(params, x, y, key, eps):
    x_adv = attacks.pgd(logits_fn, params, (x, y), rng=key, eps=eps, p=p,
                        steps=PGD_HPARAMS['steps'], restarts=PGD_HPARAMS['restarts'],
                        objective=PGD_HPARAMS['objective'])
    clean = correct(params, x, y)
    robust = clean & correct(params, x_adv, y)
    broken_by = jnp.where(clean, jnp.where(robust, ROBUST, 0), CLEAN_MISCLASSIFIED)
    return robust, broken_by.astype(jnp.int32), {}, x_adv

  return pgd_fn


def _autoattack_fn(logits_fn, name: str, *, eps: float, p: float, version: str):
  """AutoAttack (``name == 'autoattack'``) or one of its attacks alone, as ``_pgd_fn``.

  AutoAttack is a host-level loop over compiled attacks (it runs each attack on the
  points still robust), so this is called eagerly, not under ``jax.jit``.
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustjax import attacks  # pylint: disable=g-import-not-at-top
  subset = None if name == 'autoattack' else [name]

  def aa_fn(params, x, y, key):
    result = attacks.autoattack(logits_fn, params, (jnp.asarray(x), jnp.asarray(y)),
                               rng=key, eps=eps, p=p, version=version, attacks=subset,
                               bounds=BOUNDS)
    clean_code = attacks.CLEAN_MISCLASSIFIED
    broken_by = np.asarray(result.broken_by)
    broken_by = np.where(broken_by == clean_code, CLEAN_MISCLASSIFIED,
                         broken_by).astype(np.int32)
    flags = {k: int(v) for k, v in dict(result.flags).items()}
    return np.asarray(result.robust, bool), broken_by, flags, result.inputs

  return aa_fn


def _autoattack_names(name: str, version: str) -> list[str]:
  """The attacks ``name`` runs (the version's list for ``'autoattack'``)."""
  from robustjax import attacks  # pylint: disable=g-import-not-at-top
  return list(attacks.check_autoattack_attacks(None if name == 'autoattack' else [name],
                                               version))


def _check_autoattack(names: dict, *, num_classes: int, input_ndim: int) -> None:
  """What AutoAttack would refuse, checked before anything runs or is written."""
  need = {'apgd-dlr': 3, 'apgd-t': 4}
  for name, subs in names.items():
    for sub in subs:
      if num_classes < need.get(sub, 2):
        _fail('attacks', f'{name} runs {sub}, which needs at least {need[sub]} classes; '
              f'this model has {num_classes}')
      if sub == 'square' and input_ndim != 4:
        _fail('attacks', f'{name} runs square, which needs images [B, H, W, C]; this '
              f'dataset\'s inputs have {input_ndim - 1} axes per example')


def _attack_hparams(name: str, version: str, sub_names: Sequence[str], norm: str) -> dict:
  if name == 'pgd':
    return {'implementation': 'robustjax.attacks.pgd', **PGD_HPARAMS,
            'bounds': list(BOUNDS)}
  out = {'implementation': 'robustjax.attacks.autoattack', 'version': version,
         'attacks': list(sub_names), 'bounds': list(BOUNDS)}
  try:
    from robustjax import attacks  # pylint: disable=g-import-not-at-top
    per = attacks.ensemble_settings(version, NORMS[norm])
    out['settings'] = {s: json.loads(json.dumps(per[s], default=str)) for s in sub_names
                       if s in per}
  except (ImportError, AttributeError, ValueError):
    pass
  return out


# ----------------------------------------------------------------- certificates


def _crc_layers(config, model, params):
  """The pixel-space affine layers of a smooth MLP (standardisation folded in)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustjax.certify import bounds as bounds_lib  # pylint: disable=g-import-not-at-top
  layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in bounds_lib.mlp_layers(params)]
  mean, std = getattr(model, 'mean', None), getattr(model, 'std', None)
  if mean is None and std is None:
    return layers
  w, b = layers[0]
  d = w.shape[0]
  channels = np.size(std if std is not None else mean)
  tile = lambda v: jnp.tile(jnp.ravel(jnp.asarray(v, w.dtype)), d // channels)
  scale = tile(std) if std is not None else jnp.ones((d,), w.dtype)
  shift = tile(mean) if mean is not None else jnp.zeros((d,), w.dtype)
  w_new = w / scale[:, None]
  return [(w_new, b - shift @ w_new)] + layers[1:]


def _check_crc_model(config) -> str:
  from robustjax.certify import bounds as bounds_lib  # pylint: disable=g-import-not-at-top
  activation = dict(config.model.kwargs).get('activation', 'relu')
  if config.model.name != 'mlp' or activation not in bounds_lib.ACTIVATION_CONSTANTS:
    smooth = ', '.join(bounds_lib.ACTIVATION_CONSTANTS)
    _fail('certify', f'crc certifies smooth MLPs (model.name mlp with activation one of '
          f'{smooth}); this run has model {config.model.name!r} with activation '
          f'{activation!r}: use --certify=smoothing')
  return activation


# ----------------------------------------------------------------------- report


def _environment(mesh_size: int) -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    version = metadata.version('robustjax')
  except Exception:  # pylint: disable=broad-except
    version = 'unknown'
  devices = jax.local_devices()
  return {
      'python': platform.python_version(), 'jax': jax.__version__,
      'jaxlib': jaxlib.__version__, 'flax': flax.__version__, 'numpy': np.__version__,
      'robustjax': version,
      'machine': {'platform': platform.platform(), 'processor': platform.machine(),
                  'hostname': socket.gethostname(), 'cpu_count': os.cpu_count(),
                  'backend': jax.default_backend(),
                  'devices': [str(getattr(d, 'device_kind', d.platform)) for d in devices],
                  'devices_used': mesh_size},
  }


def _pct(x: float) -> str:
  return f'{100 * x:.2f}'


def format_table(report: dict) -> str:
  """The robust-accuracy table of a report (markdown; what the CLI prints)."""
  attacks = report['attacks']
  norm = 'L∞' if report['norm'] == 'inf' else f'L{report["norm"]}'
  head = ['eps (' + norm + ')'] + attacks + (['worst case'] if len(attacks) > 1 else [])
  lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  lines.append('| clean | ' + ' | '.join([_pct(report['clean_accuracy'])] * (len(head) - 1))
               + ' |')
  for row in report['results']:
    cells = [f'{row["eps"]:g}'] + [_pct(row['robust_accuracy'][a]) for a in attacks]
    if len(attacks) > 1:
      cells.append(_pct(row['worst_case']))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _format_certified(cert: dict) -> str:
  lines = ['| L2 radius | certified | empirical (' + cert['empirical_attack'] + ') | '
           'violations |', '| --- | --- | --- | --- |']
  for row in cert['curve']:
    lines.append(f'| {row["radius"]:g} | {_pct(row["certified_accuracy"])} | '
                 f'{_pct(row["empirical_accuracy"])} | {row["violations"]} |')
  return '\n'.join(lines)


def _markdown(report: dict) -> str:
  s = report['settings']
  cfg = report['config']
  out = [f'# Evaluation `{report["tag"]}` of `{report["workdir"]}`', '',
         f'Checkpoint step {report["checkpoint_step"]}; {cfg["dataset"]} '
         f'`{s["split"]}` split, {report["num_examples"]} examples; model '
         f'`{cfg["model"]}`; method {", ".join(cfg["method"])}. Robust accuracy in % '
         f'(correct on x and at the attack\'s point in the {report["norm"]}-norm ball of '
         f'radius eps, pixels in [0, 1]); the worst case is per example over the '
         f'attacks. Clean accuracy {_pct(report["clean_accuracy"])}%.', '',
         format_table(report), '']
  out += ['## Attacks', '']
  for name in report['attacks']:
    hp = report['attack_hyperparameters'][name]
    shown = ', '.join(f'{k}={v}' for k, v in sorted(hp.items()))
    out.append(f'- `{name}`: {shown}')
  out += ['', '## Points broken, by the first attack that broke them', '']
  for row in report['results']:
    counts = ', '.join(f'{k}: {v}' for k, v in row['broken_by'].items() if v)
    out.append(f'- eps {row["eps"]:g}: {counts or "none"}')
    for attack, within in row.get('broken_by_within', {}).items():
      if len(within) > 1:
        shown = ', '.join(f'{k}: {v}' for k, v in within.items())
        out.append(f'  - within `{attack}` (each attack on the points still robust): '
                   f'{shown}')
  aa = [a for a in report['attacks'] if a != 'pgd']
  if aa:
    out += ['', '## AutoAttack flags (examples flagged)', '']
    raised = [(row['eps'], a, {k: v for k, v in sorted(f.items()) if v})
              for row in report['results'] for a, f in row['autoattack_flags'].items()]
    raised = [r for r in raised if r[2]]
    for eps, attack, f in raised:
      shown = ', '.join(f'{k}: {v}' for k, v in f.items())
      out.append(f'- eps {eps:g}, `{attack}`: {shown}')
    if not raised:
      out.append('- none raised')
  cert = report.get('certification')
  if cert:
    out += ['', f'## Certified accuracy ({cert["method"]})', '', cert['description'], '',
            _format_certified(cert)]
    if cert['total_violations']:
      out += ['', f'**WARNING**: {cert["warning"]}']
  env = report['environment']
  t = report['timing']
  out += ['', '## Run', '',
          f'- seed {s["seed"]}, batch size {s["batch_size"]}, AutoAttack version '
          f'{s["version"]}',
          f'- attack time {t["attack_s"]:.1f} s over {t["units"]} units '
          f'({t["units_resumed"]} restored from an earlier run); this run took '
          f'{t["wall_s"]:.1f} s',
          f'- python {env["python"]}, jax {env["jax"]}, flax {env["flax"]}, robustjax '
          f'{env["robustjax"]}; {env["machine"]["backend"]} '
          f'({", ".join(sorted(set(env["machine"]["devices"])))}), '
          f'{env["machine"]["platform"]}', '']
  return '\n'.join(out)


def _plot(path_tmp: str, xs, curves: dict, *, xlabel: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5, 3.5))
  for label, (ys, style) in curves.items():
    ax.plot(xs, ys, style, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('accuracy')
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path_tmp, format='png', dpi=120)
  plt.close(fig)


# -------------------------------------------------------------------------- run


class _Progress:
  """tqdm with ETA when stdout is a terminal; nothing otherwise."""

  def __init__(self, total: int, initial: int, enabled: bool | None):
    enabled = sys.stdout.isatty() if enabled is None else enabled
    self._bar = None
    if enabled and total > initial:
      import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm.tqdm(total=total, initial=initial, unit='batch', file=sys.stdout,
                            dynamic_ncols=True)

  def update(self, text: str) -> None:
    if self._bar is not None:
      self._bar.set_description(text, refresh=False)
      self._bar.update(1)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def run(workdir: str, *, eps: Sequence[float] | float | None = None, norm=None,
        attacks: Sequence[str] | str = DEFAULT_ATTACKS, version: str = 'standard',
        num_examples: int = 0, split: str = 'test', batch_size: int = 0,
        tag: str | None = None, seed: int = 0, certify: str = '', sigma: float = 0.25,
        num_samples: int = 100_000, num_selection: int = 100, alpha: float = 0.001,
        radii: Sequence[float] | None = None, progress: bool | None = None,
        on_unit: Callable[[str], None] | None = None) -> dict:
  """Evaluates a trained run and writes ``workdir/eval/<tag>/``; returns the report.

  Args:
    workdir: a training run's directory (``config.json`` and ``checkpoints/``).
    eps: radii (default: the run's ``config.eval.eps``); ``0`` is clean accuracy.
    norm: ``'inf'``, ``'2'`` or ``'1'`` (or the numbers); default the run's
      ``config.eval.p``.
    attacks: names from :data:`ATTACKS`: ``'autoattack'`` (the ensemble of
      ``version``), one of its attacks alone (``'apgd-ce'``, ``'apgd-dlr'``, ``'apgd-t'``,
      ``'fab'``, ``'fab-t'``, ``'square'``, each through
      :func:`robustjax.attacks.autoattack` with ``attacks=[name]``), or ``'pgd'``
      (PGD-20, one restart, CE: training's end-of-run evaluation).
    version: AutoAttack version, ``'standard'``, ``'plus'`` or ``'rand'``.
    num_examples: the first that many examples of the split (0 = all).
    split: ``'test'`` or ``'train'``.
    batch_size: examples per attacked batch (0 = the run's ``config.eval.batch_size``;
      at most the number of examples), rounded up to a multiple of the local device
      count. The last batch is padded for PGD and the certificates (one compilation);
      AutoAttack gets its real examples only.
    tag: name of the output directory under ``workdir/eval/`` (default ``l<norm>``,
      or ``certify-<method>``).
    seed: seed of every attack (see :func:`attack_key`) and certificate.
    certify: ``''`` (attacks only), ``'crc'`` or ``'smoothing'`` (L2; see the module
      docstring); then the attacks run at ``radii`` with ``norm=2``.
    sigma, num_samples, num_selection, alpha: randomized smoothing's noise level, the
      Monte-Carlo samples of its estimation and selection steps and its failure
      probability.
    radii: L2 radii of the certified-accuracy curve (default :data:`DEFAULT_RADII`).
    progress: show a progress bar (default: when stdout is a terminal).
    on_unit: called with each finished unit's file name after it is saved (tests use
      it to interrupt an evaluation).

  Returns:
    The report (what ``report.json`` holds).

  Raises:
    ValueError: a bad argument or workdir, naming the command-line flag (``--eps:
      ...``), before anything compiles and before anything is written.
  """
  t_start = time.perf_counter()
  flags = _check_flags(eps=eps, norm=norm, attacks=attacks, version=version,
                       num_examples=num_examples, split=split, batch_size=batch_size,
                       seed=seed, certify=certify, sigma=sigma, num_samples=num_samples,
                       num_selection=num_selection, alpha=alpha, radii=radii, tag=tag)
  workdir = os.path.abspath(workdir)
  from robustjax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from robustjax.training import feed  # pylint: disable=g-import-not-at-top
  from robustjax.training import train  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    _fail('workdir', f'{workdir!r} is not a directory')
  try:
    config = train.load_config(workdir)
  except ValueError as e:
    _fail('workdir', str(e).split(': ', 1)[-1])
  step = checkpoints.latest_step(workdir)
  if step is None:
    _fail('workdir', f'no checkpoint in {workdir!r}; train it first '
          '(python -m robustjax.main --config=... --workdir=...)')
  if flags['eps'] is None:
    flags['eps'] = _radii(float(config.eval.eps), 'eps')
  if flags['norm'] is None:
    flags['norm'] = _norm_name(float(config.eval.p))
  _check_norms(flags['norm'], flags['attacks'])
  activation = _check_crc_model(config) if flags['certify'] == 'crc' else None
  try:
    feed.check_available(config.dataset)
  except ValueError as e:
    _fail('workdir', f'the run\'s dataset is not available here: {e}')

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from robustjax import _checks  # pylint: disable=g-import-not-at-top
  from robustjax.training import step as step_lib  # pylint: disable=g-import-not-at-top

  images, labels = feed.eval_arrays(config.dataset, split=flags['split'],
                                    num_examples=flags['num_examples'])
  try:
    _checks.check_in_bounds(images, BOUNDS, name='the dataset\'s inputs')
  except ValueError as e:
    _fail('workdir', str(e))
  n = int(len(labels))
  if n == 0:
    _fail('num_examples', f'the {flags["split"]} split has no examples to evaluate')
  mesh = step_lib.make_mesh(jax.local_devices())
  requested = min(flags['batch_size'] or int(config.eval.batch_size), n)
  batch_size = int(math.ceil(requested / mesh.size) * mesh.size)
  settings = Settings(workdir=workdir, checkpoint_step=int(step), split=flags['split'],
                      num_examples=flags['num_examples'], norm=flags['norm'],
                      eps=flags['eps'], attacks=flags['attacks'], version=flags['version'],
                      batch_size=batch_size, seed=flags['seed'], certify=flags['certify'],
                      sigma=flags['sigma'], num_samples=flags['num_samples'],
                      num_selection=flags['num_selection'], alpha=flags['alpha'])
  tag = tag or _default_tag(settings.norm, settings.certify)
  out_dir = os.path.join(workdir, EVAL_DIR, tag)
  partial_dir = os.path.join(out_dir, PARTIAL_DIR)
  settings_path = os.path.join(partial_dir, SETTINGS_FILE)
  if os.path.exists(settings_path):
    with open(settings_path, encoding='utf-8') as f:
      old = json.load(f)
    diff = _diff_settings(old, settings.as_json())
    if diff:
      _fail('tag', f'{out_dir} holds an evaluation with other flags ({"; ".join(diff)}); '
            'pass a new --tag, or delete that directory to start over')

  _, logits_fn, params = _restore(workdir, step)
  rep, shard = step_lib.replicated(mesh), step_lib.batch_sharded(mesh)
  params = jax.device_put(params, rep)
  p = NORMS[settings.norm]
  num_batches = int(math.ceil(n / batch_size))

  def padded(b):
    lo, hi = b * batch_size, min((b + 1) * batch_size, n)
    x, y = images[lo:hi], labels[lo:hi]
    pad = batch_size - len(y)
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
      y = np.concatenate([y, np.repeat(y[-1:], pad, 0)])
    return x, y, hi - lo

  # The classifier the attacks see: the model, or for smoothing the smoothed surrogate.
  attack_logits_fn = logits_fn
  if settings.certify == 'smoothing':
    attack_logits_fn = _smoothed_logits_fn(logits_fn, settings, images.shape[1:])
  model = train.build_model(config, feed.info(config.dataset))
  layers = _crc_layers(config, model, params) if settings.certify == 'crc' else None

  # Attack functions; argument checks fire here, before anything compiles or is written.
  sub_names: dict[str, list] = {}
  fns: dict[tuple[str, float], Any] = {}
  x0, y0, _ = padded(0)
  for name in settings.attacks:
    if name == 'pgd':
      sub_names[name] = ['pgd']
      continue
    try:
      sub_names[name] = _autoattack_names(name, settings.version)
    except ImportError as err:
      _fail('attacks', f'{name} needs robustjax.attacks.autoattack, which is missing '
            f'here ({err}); use --attacks=pgd')
  num_classes = int(jax.eval_shape(logits_fn, params, x0[:1]).shape[-1])
  _check_autoattack({a: s for a, s in sub_names.items() if a != 'pgd'},
                    num_classes=num_classes, input_ndim=images.ndim)
  pgd_jit = jax.jit(_pgd_fn(attack_logits_fn, p=p), in_shardings=(rep, shard, shard, rep, rep))
  if 'pgd' in settings.attacks:
    try:
      pgd_jit.trace(params, x0, y0, attack_key(settings.seed, 'pgd'), jnp.float32(0.0))
    except ValueError as err:
      _fail('attacks', f'pgd, L{settings.norm}: {err}')
  for name in settings.attacks:
    for e in settings.eps:
      if e != 0 and name != 'pgd':
        fns[(name, e)] = _autoattack_fn(attack_logits_fn, name, eps=e, p=p,
                                        version=settings.version)
  if layers is not None:
    from robustjax.certify import bounds as bounds_lib  # pylint: disable=g-import-not-at-top
    gap = float(jnp.max(jnp.abs(bounds_lib.mlp_apply(layers, x0, activation=activation)
                                - logits_fn(params, x0))))
    if not gap <= 1e-3 * (1.0 + float(jnp.max(jnp.abs(logits_fn(params, x0))))):
      _fail('certify', f'crc: the MLP read from the checkpoint does not reproduce the '
            f'model\'s logits (max difference {gap:g}); this model is not a plain MLP')

  # Nothing has been written so far; from here on only eval/<tag>/ is.
  os.makedirs(partial_dir, exist_ok=True)
  if not os.path.exists(settings_path):
    _atomic_write_bytes(settings_path, _json_bytes(settings.as_json()))

  # Clean predictions (cheap; recomputed on every run).
  predict = jax.jit(lambda prm, x: jnp.argmax(logits_fn(prm, x), -1),
                    in_shardings=(rep, shard))
  predictions = np.concatenate([np.asarray(predict(params, padded(b)[0]))[:padded(b)[2]]
                                for b in range(num_batches)])
  clean_correct = predictions == labels

  kind = 'smoothed' if settings.certify == 'smoothing' else 'attack'
  units = [(kind, name, e, b) for name in settings.attacks for e in settings.eps if e != 0
           for b in range(num_batches)]
  if settings.certify:
    units += [('certify', settings.certify, None, b) for b in range(num_batches)]
  unit_path = lambda k, name, e, b: os.path.join(partial_dir, _unit_file(k, name, e, b))
  results: dict = {}
  for unit in units:
    loaded = _load_npz(unit_path(*unit))
    if loaded is not None:
      results[unit] = loaded
  resumed = len(results)
  bar = _Progress(len(units), resumed, progress)
  compile_s: dict[str, float] = {}
  compiled: dict = {}
  from robustjax.certify import smoothing  # pylint: disable=g-import-not-at-top
  noise_batch = int(math.ceil(max(batch_size, 1000) / mesh.size) * mesh.size)

  try:
    for unit in units:
      if unit in results:
        continue
      k, name, e, b = unit
      x, y, real = padded(b)
      t0 = time.perf_counter()
      if k == 'certify' and name == 'crc':
        from robustjax.certify import crc_mlp  # pylint: disable=g-import-not-at-top
        cert = crc_mlp(layers, jnp.asarray(x), jnp.asarray(y),
                               activation=activation)
        arrays = {'radius': np.asarray(cert.radius, np.float64)[:real],
                  'prediction': np.asarray(predict(params, x))[:real].astype(np.int32),
                  'is_certificate': np.asarray(cert.certified, bool)[:real]}
      elif k == 'certify':
        cert = smoothing.certify(
            logits_fn, params, jnp.asarray(x), rng=jax.random.fold_in(
                attack_key(settings.seed, 'certify-smoothing'), b),
            sigma=settings.sigma, num_selection=settings.num_selection,
            num_estimation=settings.num_samples, alpha=settings.alpha,
            batch_size=noise_batch, bounds=BOUNDS, mesh=mesh)
        arrays = {'radius': np.asarray(cert.radius, np.float64)[:real],
                  'prediction': np.asarray(cert.prediction)[:real].astype(np.int32),
                  'count': np.asarray(cert.count)[:real].astype(np.int64),
                  'is_certificate': np.asarray(cert.prediction)[:real] != ABSTAIN}
      else:
        key = jax.random.fold_in(attack_key(settings.seed, _key_name(name)), b)
        if name == 'pgd':
          eps_arg = jnp.float32(e)
          if 'pgd' not in compiled:
            t1 = time.perf_counter()
            compiled['pgd'] = pgd_jit.lower(params, x, y, key, eps_arg).compile()
            compile_s['pgd'] = time.perf_counter() - t1
            t0 = time.perf_counter()
          outputs = compiled['pgd'](params, x, y, key, eps_arg)
        else:  # AutoAttack re-batches itself: no padded copies to attack
          outputs = fns[(name, e)](params, x[:real], y[:real], key)
        robust, broken_by, flag_counts, x_adv = jax.block_until_ready(outputs)
        flag_names = sorted(flag_counts)
        arrays = {
            'robust': np.asarray(robust)[:real], 'broken_by': np.asarray(broken_by)[:real],
            'flag_names': np.asarray(flag_names, dtype=str),
            'flag_counts': np.asarray([int(flag_counts[f]) for f in flag_names], np.int64)}
        if k == 'smoothed':  # the smoothed classifier's own answer at the attack's point
          arrays['smoothed_prediction'] = np.asarray(smoothing.predict(
              logits_fn, params, jnp.clip(x_adv, *BOUNDS), rng=jax.random.fold_in(
                  attack_key(settings.seed, f'predict:{name}:{e!r}'), b),
              sigma=settings.sigma, num_samples=SMOOTHING_PREDICT_SAMPLES,
              alpha=settings.alpha, batch_size=noise_batch, bounds=BOUNDS,
              mesh=mesh))[:real].astype(np.int32)
      arrays['seconds'] = np.float64(time.perf_counter() - t0)
      path = unit_path(*unit)
      _atomic_write_bytes(path, _npz_bytes(arrays))
      results[unit] = arrays
      bar.update(f'{name} eps={e:g}' if e is not None else f'certify {name}')
      if on_unit is not None:
        on_unit(os.path.basename(path))
  finally:
    bar.close()

  report, per_example = _assemble(settings, tag, config, n, labels, predictions,
                                  clean_correct, results, num_batches, sub_names)
  report['timing'] = {
      'wall_s': time.perf_counter() - t_start,
      'attack_s': float(sum(float(v['seconds']) for v in results.values())),
      'seconds_by_attack': {a: float(sum(float(v['seconds']) for u, v in results.items()
                                         if u[1] == a and u[0] != 'certify'))
                            for a in settings.attacks},
      'certify_s': float(sum(float(v['seconds']) for u, v in results.items()
                             if u[0] == 'certify')),
      'compile_s': compile_s, 'units': len(units), 'units_resumed': resumed,
      'note': ('attack_s sums the units of every run that contributed (resumed ones '
               'included); compile_s is PGD\'s compilation in this run; AutoAttack and '
               'the certificates compile inside their first unit'),
      'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }
  report['environment'] = _environment(mesh.size)
  cert = report.get('certification')
  if cert and cert['total_violations']:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.warning('%s', cert['warning'])
    print(f'WARNING: {cert["warning"]}', file=sys.stderr)
  _write_report(out_dir, report, per_example)
  return report


_RESTORED: dict = {}  # the last restored run: (workdir, step, mtime) -> (config, fn, params)


def _restore(workdir: str, step: int):
  """:func:`robustjax.training.restore`, remembered for the last checkpoint asked for.

  Evaluating one run several times in a process (norms, certificates) then hands the
  attacks the same ``logits_fn`` object, so their compiled programs are reused.
  """
  from robustjax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from robustjax.training import train  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, checkpoints.CHECKPOINT_DIR, str(step))
  key = (workdir, step, os.stat(path).st_mtime_ns if os.path.exists(path) else None)
  if key not in _RESTORED:
    _RESTORED.clear()
    _RESTORED[key] = train.restore(workdir, step=step)
  return _RESTORED[key]


def _smoothed_logits_fn(logits_fn, settings: Settings, input_shape):
  """Log of the base model's softmax averaged over fixed Gaussian draws (a surrogate of
  the smoothed classifier that gradient attacks can follow)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  m = SMOOTHING_ATTACK_SAMPLES
  noise = settings.sigma * jax.random.normal(
      attack_key(settings.seed, 'smoothing-attack-noise'), (m,) + tuple(input_shape))

  def smoothed(params, x):
    noisy = (x[:, None] + noise[None].astype(x.dtype)).reshape((-1,) + x.shape[1:])
    probs = jax.nn.softmax(logits_fn(params, noisy), axis=-1)
    probs = probs.reshape((x.shape[0], m, -1)).mean(axis=1)
    return jnp.log(jnp.maximum(probs, 1e-30))

  return smoothed


def _assemble(settings, tag, config, n, labels, predictions, clean_correct, results,
              num_batches, sub_names):
  """The report dict and the per-example arrays from the unit results."""
  eps_list, attacks = list(settings.eps), list(settings.attacks)
  num_e, num_a = len(eps_list), len(attacks)
  kind = 'smoothed' if settings.certify == 'smoothing' else 'attack'
  robust = np.zeros((num_e, num_a, n), bool)
  per_attack_broken = np.zeros((num_e, num_a, n), np.int32)
  smoothed_at_attack = np.full((num_e, num_a, n), -1, np.int32)
  flags = [[{} for _ in attacks] for _ in eps_list]
  for i, e in enumerate(eps_list):
    for j, name in enumerate(attacks):
      if e == 0:
        robust[i, j] = clean_correct
        per_attack_broken[i, j] = np.where(clean_correct, ROBUST, CLEAN_MISCLASSIFIED)
        continue
      parts = [results[(kind, name, e, b)] for b in range(num_batches)]
      robust[i, j] = np.concatenate([r['robust'] for r in parts]).astype(bool)
      per_attack_broken[i, j] = np.concatenate([r['broken_by'] for r in parts])
      if kind == 'smoothed':
        smoothed_at_attack[i, j] = np.concatenate([r['smoothed_prediction'] for r in parts])
      for r in parts:
        for k, c in zip(r['flag_names'].tolist(), r['flag_counts'].tolist()):
          flags[i][j][k] = flags[i][j].get(k, 0) + int(c)
  # Names of the breaking attacks: 'pgd', 'apgd-ce', 'autoattack:apgd-t', ...
  broken_names, offsets = [], []
  for name in attacks:
    offsets.append(len(broken_names))
    subs = sub_names[name]
    broken_names += [name if (name != 'autoattack' and len(subs) == 1) else
                     f'{name}:{s}' for s in subs]
  worst = robust.all(axis=1)  # [E, N]
  broken_by = np.full((num_e, n), ROBUST, np.int32)
  broken_by[:, ~clean_correct] = CLEAN_MISCLASSIFIED
  for i in range(num_e):
    for j in reversed(range(num_a)):  # the first attack in the list wins
      hit = ~robust[i, j] & clean_correct & (per_attack_broken[i, j] >= 0)
      broken_by[i, hit] = offsets[j] + per_attack_broken[i, j, hit]
  rows = []
  for i, e in enumerate(eps_list):
    counts = {nm: int(np.sum(broken_by[i] == k)) for k, nm in enumerate(broken_names)}
    rows.append({
        'eps': e,
        'robust_accuracy': {a: float(robust[i, j].mean()) for j, a in enumerate(attacks)},
        'worst_case': float(worst[i].mean()),
        'num_robust': {a: int(robust[i, j].sum()) for j, a in enumerate(attacks)},
        'num_robust_worst_case': int(worst[i].sum()),
        'broken_by': counts,
        # Each AutoAttack-family attack's own account (as if it ran alone).
        'broken_by_within': {a: {sub: int(np.sum(per_attack_broken[i, j] == k))
                                 for k, sub in enumerate(sub_names[a])}
                             for j, a in enumerate(attacks) if a != 'pgd'},
        'autoattack_flags': {a: flags[i][j] for j, a in enumerate(attacks)
                             if a != 'pgd'},
    })
  terms = sorted({str(t.get('name', k)) for k, t in dict(config.regularizers).items()})
  report = {
      'format': FORMAT, 'tag': tag, 'workdir': settings.workdir,
      'checkpoint_step': settings.checkpoint_step,
      'config': {'dataset': config.dataset.name, 'model': config.model.name,
                 'model_kwargs': json.loads(json.dumps(dict(config.model.kwargs),
                                                       default=str)),
                 'method': terms or ['standard'], 'seed': int(config.seed)},
      'settings': settings.as_json(), 'split': settings.split, 'num_examples': n,
      'norm': settings.norm, 'eps': eps_list, 'attacks': attacks,
      'attacked_classifier': ('the model (inference mode)' if kind == 'attack' else
                              f'the smoothed classifier\'s surrogate: log of the model\'s '
                              f'softmax averaged over {SMOOTHING_ATTACK_SAMPLES} fixed '
                              f'Gaussian draws of sigma {settings.sigma:g}'),
      'attack_hyperparameters': {a: _attack_hparams(a, settings.version, sub_names[a],
                                                    settings.norm)
                                 for a in attacks},
      'seed': settings.seed, 'bounds': list(BOUNDS),
      'clean_accuracy': float(clean_correct.mean()),
      'num_clean_correct': int(clean_correct.sum()),
      'results': rows,
      'robust_accuracy': {a: [r['robust_accuracy'][a] for r in rows] for a in attacks},
      'worst_case_accuracy': [r['worst_case'] for r in rows],
      'broken_by_names': broken_names,
  }
  per_example = {
      'eps': np.asarray(eps_list, np.float64), 'attacks': np.asarray(attacks, str),
      'robust': robust, 'worst_robust': worst, 'broken_by': broken_by,
      'broken_by_per_attack': per_attack_broken,
      'broken_by_names': np.asarray(broken_names, str).reshape(len(broken_names)),
      'labels': np.asarray(labels, np.int32), 'predictions': predictions.astype(np.int32),
      'clean_correct': clean_correct, 'indices': np.arange(n, dtype=np.int64),
  }
  if settings.certify:
    cert, arrays = _certification(settings, labels, clean_correct, worst,
                                  smoothed_at_attack, results, num_batches)
    report['certification'] = cert
    per_example.update(arrays)
    if kind == 'smoothed':
      per_example['smoothed_prediction_at_attack'] = smoothed_at_attack
  return report, per_example


def _certification(settings, labels, clean_correct, worst, smoothed_at_attack, results,
                   num_batches):
  """The certified curve, the empirical one of the same classifier, and violations."""
  parts = [results[('certify', settings.certify, None, b)] for b in range(num_batches)]
  radius = np.concatenate([r['radius'] for r in parts])
  prediction = np.concatenate([r['prediction'] for r in parts])
  is_certificate = np.concatenate([r['is_certificate'] for r in parts]).astype(bool)
  radii = np.asarray(settings.eps, np.float64)
  # Certified at r: a certificate for the true label with radius > r (the certified
  # ball is open). Abstentions, misclassified points and results that are not
  # certificates never count.
  correct = prediction == labels
  certified = (is_certificate & correct)[None] & (radius[None] > radii[:, None])  # [R, N]
  if settings.certify == 'smoothing':
    # The smoothed classifier is broken at r when PREDICT returns another class at an
    # attack's point (abstaining is no evidence of a wrong class).
    broken = ((smoothed_at_attack != ABSTAIN) &
              (smoothed_at_attack != labels[None, None])).any(axis=1)  # [R, N]
    empirical = correct[None] & ~broken
    description = (
        f'Randomized smoothing (Cohen et al. 2019), sigma {settings.sigma:g}, CERTIFY '
        f'with n0 = {settings.num_selection}, n = {settings.num_samples}, alpha = '
        f'{settings.alpha:g}; certified at r: certified for the true label with radius '
        f'> r (abstentions count as wrong). Empirical at r: the smoothed classifier '
        f'predicts the true label at x and PREDICT ({SMOOTHING_PREDICT_SAMPLES} samples) '
        f'returns no other class at any attack\'s point (the attacks run on the '
        f'smoothed surrogate).')
    method = 'smoothing'
  else:
    empirical = worst & clean_correct[None]
    description = (
        'CRC (Singla & Feizi): the curvature-based certificate of a smooth MLP against '
        'every other class, with exact (SVD) curvature bounds; certified at r: correctly '
        'classified with certified radius > r. Empirical at r: robust under every '
        'attack at eps = r.')
    method = 'crc'
  violations = certified & ~empirical
  curve = [{'radius': float(r), 'certified_accuracy': float(certified[i].mean()),
            'empirical_accuracy': float(empirical[i].mean()),
            'violations': int(violations[i].sum())} for i, r in enumerate(radii)]
  total = int(violations.sum())
  listed = [{'radius': float(radii[i]), 'count': int(violations[i].sum()),
             'indices': np.flatnonzero(violations[i])[:50].tolist()}
            for i in range(len(radii)) if violations[i].any()]
  attack_name = ' + '.join(settings.attacks) + ' L2'
  cert = {
      'method': method, 'description': description, 'radii': radii.tolist(),
      'hyperparameters': ({'sigma': settings.sigma, 'num_selection': settings.num_selection,
                           'num_estimation': settings.num_samples,
                           'alpha': settings.alpha,
                           'predict_samples_at_attack_points': SMOOTHING_PREDICT_SAMPLES,
                           'surrogate_noise_draws': SMOOTHING_ATTACK_SAMPLES}
                          if method == 'smoothing' else
                          {'targets': 'all', 'curvature_bounds': 'svd (exact)'}),
      'empirical_attack': attack_name,
      'curve': curve,
      'certified_accuracy': [c['certified_accuracy'] for c in curve],
      'empirical_accuracy': [c['empirical_accuracy'] for c in curve],
      'abstentions': int(np.sum(prediction == -1)) if method == 'smoothing' else 0,
      'mean_certified_radius': float(np.mean(np.where(correct, radius, 0.0))),
      'violations': listed, 'total_violations': total,
      'warning': (f'{total} certified (example, radius) pairs were broken by an attack '
                  f'within their certified radius: a certificate or an attack is wrong '
                  f'(see certification.violations)') if total else None,
  }
  arrays = {'radii': radii, 'certified_radius': radius,
            'certified_prediction': prediction.astype(np.int32),
            'is_certificate': is_certificate, 'certified': certified,
            'empirical': empirical, 'violations': violations}
  return cert, arrays


def _write_report(out_dir: str, report: dict, per_example: dict) -> None:
  """Writes every report file to a temporary name, then renames, report.json last."""
  staged = []

  def stage(name, data: bytes | None = None):
    tmp = os.path.join(out_dir, f'.{name}.tmp{os.getpid()}')
    if data is not None:
      with open(tmp, 'wb') as f:
        f.write(data)
    staged.append((tmp, os.path.join(out_dir, name)))
    return tmp

  stage('per_example.npz', _npz_bytes(per_example))
  eps = np.asarray(report['eps'])
  order = np.argsort(eps)
  xs = eps[order]
  curves = {}
  if 0.0 not in report['eps']:
    xs = np.concatenate([[0.0], xs])
  for a in report['attacks']:
    ys = np.asarray(report['robust_accuracy'][a])[order]
    if 0.0 not in report['eps']:
      ys = np.concatenate([[report['clean_accuracy']], ys])
    curves[a] = (ys, 'o-')
  if len(report['attacks']) > 1:
    ys = np.asarray(report['worst_case_accuracy'])[order]
    if 0.0 not in report['eps']:
      ys = np.concatenate([[report['clean_accuracy']], ys])
    curves['worst case'] = (ys, 'k--')
  norm = 'L∞' if report['norm'] == 'inf' else f'L{report["norm"]}'
  _plot(stage('accuracy_vs_eps.png'), xs, curves, xlabel=f'eps ({norm})',
        title=f'{report["config"]["dataset"]} {", ".join(report["config"]["method"])}, '
        f'step {report["checkpoint_step"]}')
  cert = report.get('certification')
  if cert:
    radii = [r['radius'] for r in cert['curve']]
    _plot(stage('certified_accuracy.png'), radii, {
        f'certified ({cert["method"]})': ([r['certified_accuracy'] for r in cert['curve']],
                                          'o-'),
        f'empirical ({cert["empirical_attack"]})':
            ([r['empirical_accuracy'] for r in cert['curve']], 's--')},
          xlabel='L2 radius', title=f'{report["config"]["dataset"]}: certified vs '
          'empirical robust accuracy')
  stage('report.md', _markdown(report).encode('utf-8'))
  stage('report.json', _json_bytes(report))
  for tmp, final in staged:
    os.replace(tmp, final)


# ------------------------------------------------------------------------ CLI


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'A training run\'s directory.')
  flags.DEFINE_list('eps', None, 'Attack radii (default: the run\'s config.eval.eps).')
  flags.DEFINE_string('norm', None, 'inf, 2 or 1 (default: the run\'s config.eval.p).')
  flags.DEFINE_list('attacks', list(DEFAULT_ATTACKS), f'Attacks, from: {", ".join(ATTACKS)}.')
  flags.DEFINE_string('version', 'standard', 'AutoAttack version: standard, plus, rand.')
  flags.DEFINE_integer('num_examples', 0, 'First examples of the split (0 = all).')
  flags.DEFINE_string('split', 'test', 'test or train.')
  flags.DEFINE_integer('batch_size', 0, 'Examples per batch (0 = config.eval.batch_size).')
  flags.DEFINE_string('tag', None, 'Output directory under WORKDIR/eval/ (default: l<norm> '
                      'or certify-<method>).')
  flags.DEFINE_integer('seed', 0, 'Seed of the attacks and certificates.')
  flags.DEFINE_string('certify', '', 'smoothing or crc: certified accuracy at --radii.')
  flags.DEFINE_list('radii', None, 'L2 radii of the certified curve (with --certify).')
  flags.DEFINE_float('sigma', 0.25, 'Randomized smoothing noise level.')
  flags.DEFINE_integer('num_samples', 100_000, 'Smoothing: Monte-Carlo samples (n).')
  flags.DEFINE_integer('num_selection', 100, 'Smoothing: selection samples (n0).')
  flags.DEFINE_float('alpha', 0.001, 'Smoothing: failure probability.')
  flags.mark_flag_as_required('workdir')
  return flags.FLAGS


def _quiet_libraries(record) -> bool:
  """Keeps warnings and robustjax's own info lines; drops orbax's restore chatter."""
  return record.levelno >= std_logging.WARNING or 'robustjax' in record.pathname


def main(argv, FLAGS=None):  # pylint: disable=invalid-name
  """The command line: ``run`` with the flags, a table on stdout, errors in one line."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_logger().addFilter(_quiet_libraries)
  try:
    report = run(FLAGS.workdir, eps=FLAGS.eps, norm=FLAGS.norm, attacks=FLAGS.attacks,
                 version=FLAGS.version, num_examples=FLAGS.num_examples, split=FLAGS.split,
                 batch_size=FLAGS.batch_size, tag=FLAGS.tag, seed=FLAGS.seed,
                 certify=FLAGS.certify, sigma=FLAGS.sigma, num_samples=FLAGS.num_samples,
                 num_selection=FLAGS.num_selection, alpha=FLAGS.alpha, radii=FLAGS.radii)
  except ValueError as e:
    if not str(e).startswith('--'):
      raise
    sys.exit(f'error: {e}')
  print(format_table(report))
  cert = report.get('certification')
  if cert:
    print(_format_certified(cert))
  print(f'wrote {os.path.join(report["workdir"], EVAL_DIR, report["tag"])}/report.json')


if __name__ == '__main__':
  from absl import app as _app  # pylint: disable=g-import-not-at-top
  _FLAGS = _define_flags()
  _app.run(lambda argv: main(argv, _FLAGS))
