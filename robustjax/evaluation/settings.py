"""What an evaluation is asked to do: the flags, checked once, and the frozen :class:`Settings`.

:func:`check_flags` validates the arguments that need no workdir (naming the command-line
flag in every error); :func:`resolve` fills in what the run supplies (its checkpoint step,
its ``config.eval`` radius and norm, the batch size rounded to the device count) and
returns the :class:`Settings` every other module of :mod:`robustjax.evaluation` reads.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import numpy as np

from robustjax import attacks as attacks_lib

ATTACKS = ('autoattack',) + attacks_lib.AUTOATTACK_ATTACKS + ('pgd',)
DEFAULT_ATTACKS = ('pgd', 'autoattack')
NORMS = {'inf': math.inf, '2': 2.0, '1': 1.0}
VERSIONS = attacks_lib.AUTOATTACK_VERSIONS
SPLITS = ('test', 'train')
DEFAULT_RADII = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)
DEFAULT_RADII_INF = (0.0, 0.025, 0.05, 0.1, 0.2, 0.3)


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

  @property
  def p(self) -> float:
    """The norm as a number (``inf``, 2 or 1)."""
    return NORMS[self.norm]


def fail(flag: str, message: str):
  """Raises the one-line ``ValueError('--flag: message')`` the CLI prints."""
  raise ValueError(f'--{flag}: {message}')


def _as_list(value, flag: str, convert: Callable[[Any], Any]) -> list:
  if isinstance(value, str):
    value = [v for v in value.split(',') if v.strip()]
  elif np.ndim(value) == 0:
    value = [value]
  try:
    return [convert(v.strip() if isinstance(v, str) else v) for v in value]
  except (TypeError, ValueError):
    fail(flag, f'expected a comma-separated list, got {value!r}')


def parse_radii(value, flag: str) -> tuple[float, ...]:
  """Distinct finite radii >= 0 from a list, a number or ``'0.1,0.2'``."""
  values = _as_list(value, flag, float)
  if not values:
    fail(flag, 'give at least one radius')
  for v in values:
    if not math.isfinite(v) or v < 0:
      fail(flag, f'every radius must be a finite number >= 0, got {v}')
  if len(set(values)) != len(values):
    fail(flag, f'radii must be distinct, got {values}')
  return tuple(float(v) for v in values)


def _integer(value, flag: str, minimum: int) -> int:
  ok = (not isinstance(value, bool) and isinstance(value, (int, np.integer, float))
        and float(value).is_integer() and value >= minimum)
  if not ok:
    fail(flag, f'must be an integer >= {minimum}, got {value!r}')
  return int(value)


def norm_name(norm) -> str:
  """``'inf'``, ``'2'`` or ``'1'`` from a name (``'Linf'``, ``'2.0'``) or a number."""
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
    fail('norm', f'unknown norm {norm!r}; valid: inf, 2, 1')
  return name


def check_flags(*, eps, norm, attacks, version, num_examples, split, batch_size,
                seed, certify, sigma, num_samples, num_selection, alpha, radii, tag,
                certify_methods, certify_norms=None) -> dict:
  """Validates the flags that need no workdir; returns them normalised.

  ``certify_methods`` are the valid ``--certify`` names (the certificate registry's);
  ``certify_norms`` maps a name to the norms it certifies, first the default (L2 when
  a name is missing).
  """
  certify = certify or ''
  if certify not in ('',) + tuple(certify_methods):
    fail('certify', f'unknown method {certify!r}; valid: {", ".join(certify_methods)} '
         '(or empty)')
  if certify:
    allowed = tuple((certify_norms or {}).get(certify, ('2',)))
    if norm is not None and norm_name(norm) not in allowed:
      if allowed == ('2',):
        fail('norm', f'certificates here are L2: --certify={certify} needs --norm=2 '
             f'(or no --norm), got {norm!r}')
      fail('norm', f'--certify={certify} certifies the norms '
           f'{", ".join(allowed)}, got {norm!r}')
    if eps is not None:
      fail('eps', 'with --certify the empirical curve is measured at --radii; drop --eps')
    norm = allowed[0] if norm is None else norm_name(norm)
    default = DEFAULT_RADII_INF if norm == 'inf' else DEFAULT_RADII
    eps = parse_radii(default if radii is None else radii, 'radii')
  else:
    if radii is not None:
      fail('radii', 'only used with --certify; use --eps for attack radii')
    if eps is not None:
      eps = parse_radii(eps, 'eps')
    if norm is not None:
      norm = norm_name(norm)
  names = _as_list(attacks, 'attacks', str)
  if not names:
    fail('attacks', f'give at least one attack; valid: {", ".join(ATTACKS)}')
  for name in names:
    if name not in ATTACKS:
      fail('attacks', f'unknown attack {name!r}; valid: {", ".join(ATTACKS)}')
  if len(set(names)) != len(names):
    fail('attacks', f'each attack once, got {names}')
  if version not in VERSIONS:
    fail('version', f'unknown AutoAttack version {version!r}; valid: '
         f'{", ".join(VERSIONS)}')
  if split not in SPLITS:
    fail('split', f'unknown split {split!r}; valid: {", ".join(SPLITS)}')
  num_examples = _integer(num_examples, 'num_examples', 0)
  batch_size = _integer(batch_size or 0, 'batch_size', 0)
  seed = _integer(seed, 'seed', 0)
  if certify == 'smoothing':
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
      fail('sigma', f'must be > 0, got {sigma!r}')
    num_samples = _integer(num_samples, 'num_samples', 1)
    num_selection = _integer(num_selection, 'num_selection', 1)
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
      fail('alpha', f'must lie in (0, 1), got {alpha!r}')
  else:  # not used: fixed values keep the settings comparable
    sigma, num_samples, num_selection, alpha = 0.0, 0, 0, 0.0
  if tag is not None and tag != '':
    if (not isinstance(tag, str) or '/' in tag or os.sep in tag or tag in ('.', '..')
        or tag.startswith('.')):
      fail('tag', f'must be a plain directory name, got {tag!r}')
  return dict(eps=eps, norm=norm, attacks=tuple(names), version=version,
              num_examples=num_examples, split=split, batch_size=batch_size, seed=seed,
              certify=certify, sigma=float(sigma), num_samples=num_samples,
              num_selection=num_selection, alpha=float(alpha))



def resolve(flags: dict, *, workdir: str, config, step: int, num_examples: int,
            num_devices: int) -> Settings:
  """The :class:`Settings` of checked ``flags`` for a run: radius and norm default to
  ``config.eval``'s; the batch size (0 = ``config.eval.batch_size``, at most the number
  of examples) is rounded up to a multiple of ``num_devices``."""
  eps = flags['eps'] if flags['eps'] is not None else parse_radii(float(config.eval.eps), 'eps')
  norm = flags['norm'] if flags['norm'] is not None else norm_name(float(config.eval.p))
  requested = min(flags['batch_size'] or int(config.eval.batch_size), num_examples)
  batch_size = int(math.ceil(requested / num_devices) * num_devices)
  return Settings(workdir=workdir, checkpoint_step=int(step), split=flags['split'],
                  num_examples=flags['num_examples'], norm=norm, eps=eps,
                  attacks=flags['attacks'], version=flags['version'],
                  batch_size=batch_size, seed=flags['seed'], certify=flags['certify'],
                  sigma=flags['sigma'], num_samples=flags['num_samples'],
                  num_selection=flags['num_selection'], alpha=flags['alpha'])


def default_tag(norm: str, certify: str) -> str:
  """``l<norm>``, or ``certify-<method>``."""
  return f'certify-{certify}' if certify else f'l{norm}'


def diff(old: dict, new: dict) -> list[str]:
  """``'--eps was [0.1], now [0.2]'`` for every setting that differs."""
  out = []
  for k in sorted(set(old) | set(new)):
    if k != 'workdir' and old.get(k) != new.get(k):  # a moved workdir may resume
      name = 'the checkpoint step' if k == 'checkpoint_step' else f'--{k}'
      out.append(f'{name} was {old.get(k)!r}, now {new.get(k)!r}')
  return out
