"""The config schema of a training run, and its validation before anything compiles.

Every config file in ``configs/`` starts from :func:`base_config` and overrides values;
:func:`validate` checks a config against this schema (unknown keys, unknown names,
impossible values) and raises one ``ValueError`` naming the field, before any model is
built, any data is read or anything in the workdir is written.

Schema (``config.<key>``)::

  seed                    int, the run's only source of randomness
  batch_size              global batch, divisible by the number of devices
  num_train_steps         optimizer steps
  checkpoint_every_steps  periodic checkpoint interval (a final one is always saved)
  keep_checkpoints        how many checkpoints to keep (orbax max_to_keep)
  log_every_steps         metrics fetched, checked for NaN and written every that many steps
  dataset.name            'digits' (embedded) | 'mnist' | 'fashion_mnist' | 'cifar10' |
                          'cifar100' | 'svhn'
  dataset.data_dir        TFDS data dir, and the root searched for local files
                          ('' = TFDS default, then the well-known local places)
  dataset.source          'auto' (TFDS if prepared, else the first local layout found) |
                          'tfds' | 'idx' | 'cifar_batches' | 'npz'
                          (robustjax.data.local; ignored for digits and the 2-D sets)
  dataset.resolved        written by the run into its config.json: {source, path} that
                          were read (robustjax.data.resolve_source); leave empty
  dataset.augment         random crop + flip (CIFAR-style) for the training split
  model.name              a robustjax.models name ('mlp', 'cnn', 'resnet18', ...)
  model.kwargs            free-form module attributes (widths, activation, ...)
  optimizer.name          'sgd' | 'adam' | 'adamw'
  optimizer.lr            peak learning rate
  optimizer.momentum      SGD momentum (0 = plain SGD)
  optimizer.nesterov      SGD Nesterov momentum
  optimizer.weight_decay  L2 regularisation added to the gradient (decoupled for adamw)
  optimizer.grad_clip     global gradient-norm clip of the whole update (0 = off)
  optimizer.schedule      'constant' | 'piecewise' | 'cosine'
  optimizer.boundaries    piecewise: fractions of num_train_steps where lr *= decay_factor
  optimizer.decay_factor  piecewise decay factor
  optimizer.warmup_steps  linear warm-up from warmup_init * lr
  optimizer.warmup_init   warm-up start as a fraction of lr
  nominal_weight          weight of the clean cross-entropy
  regularizers.<label>    terms added to the objective, each:
      name                a robustjax.regularizers name
      weight              weight of the batch mean of the penalty values
      hparams             free-form keyword hyperparameters of the penalty
      grad_clip           clip the L2 norm of this term's parameter gradient (SOAR: 30)
      schedules.<hparam>  a ramp of any numeric hparam to its configured value:
                          {'steps': N, 'kind': 'linear'|'cosine', 'init': start value
                          (default 0), 'begin': steps held at init (default 0)},
                          e.g. schedules={'h': {'steps': 500, 'init': 0.1}} (CURE's h),
                          schedules={'eps': {'steps': N}} (LLR's linear eps ramp from 0)
      eps_ramp_steps      (older configs) the same as schedules={'eps': {'steps': N}};
                          read and folded into schedules (:func:`fold_legacy`)
      aux_loss            name of a per-example entry of the penalty's aux added to the
                          objective (SOAR's loss at the start point x'), outside any
                          grad_clip; '' = none
      aux_loss_weight     its weight
      inputs_from         label of another (unclipped) term whose aux['x_adv'] this term
                          is evaluated at instead of the clean batch ('' = clean), e.g.
                          Woods et al.'s eq. 9 on the half-adversarial L2,min batch
  controller.name         'none' | 'adaptive_psi' (Woods et al. eq. 15) | 'elle_a' (ELLE-A)
  controller.term         the label of the regularizer it scales (its hparams.psi if the
                          penalty has one, i.e. eq. 9 only; otherwise its weight)
  controller.loss         the L_train of eq. 15: 'auto' (the classification loss of the
                          trained batch: nominal CE and adversarial terms, by weight),
                          'nominal' or a term label
  controller.*            target_loss, k0, k, eps_better, eps_worse (eq. 15);
                          lam_max, lam_min, decay, sensitivity, min_history (ELLE-A,
                          fed the ELLE term's error: controller.loss = its label)
  bn.stop_gradient_stats  cut the params-gradient through clean-batch BN statistics
  init_from               a workdir whose latest params (and BN stats) start this run
  eval.*                  eps, p, steps, restarts, step_size (0 = 2.5 eps / steps),
                          objective, batch_size, num_examples (0 = whole split), split,
                          attack ('pgd' | 'autoattack': the standard AutoAttack ensemble,
                          steps/restarts/step_size/objective then unused),
                          monitor_every_steps (0 = off; else FGSM and PGD accuracy on the
                          first monitor_examples examples every that many steps, and the
                          catastrophic-overfitting flag: robustjax.training.monitor)
  distributed.*           initialize (jax.distributed.initialize), coordinator_address,
                          num_processes, process_id (0 / -1 = auto-detect)
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile
from typing import Any, Sequence

import ml_collections

OPTIMIZERS = ('sgd', 'adam', 'adamw')
SCHEDULES = ('constant', 'piecewise', 'cosine')
CONTROLLERS = ('none', 'adaptive_psi', 'elle_a')  # regularizers.controllers.NAMES
SCHEDULE_KINDS = ('linear', 'cosine')  # the kinds training.step.schedule_value evaluates
EVAL_OBJECTIVES = ('ce', 'margin')
EVAL_ATTACKS = ('pgd', 'autoattack')
DATASETS = ('digits', 'mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'svhn')
DATA_SOURCES = ('auto', 'tfds', 'idx', 'cifar_batches', 'npz')  # robustjax.data.local
FREE_FORM = ('model.kwargs', 'hparams')  # subtrees whose keys are not checked here


LEGACY_EPS_RAMP = 'eps_ramp_steps'  # older spelling of schedules={'eps': {'steps': N}}


def _folded_schedules(schedules, eps_ramp_steps, field: str) -> dict:
  """``schedules`` as plain dicts with a legacy ``eps_ramp_steps`` folded in."""
  out = {k: dict(v) for k, v in dict(schedules or {}).items()}
  if isinstance(eps_ramp_steps, bool) or not isinstance(eps_ramp_steps, (int, float)):
    _fail(f'{field}.{LEGACY_EPS_RAMP}', f'must be a number, got {eps_ramp_steps!r}')
  if eps_ramp_steps < 0:
    _fail(f'{field}.{LEGACY_EPS_RAMP}', f'must be >= 0, got {eps_ramp_steps!r}')
  if eps_ramp_steps:
    if 'eps' in out:
      _fail(f'{field}.schedules.eps', 'eps already ramps through eps_ramp_steps; use '
            'one of the two')
    out['eps'] = {'steps': int(eps_ramp_steps)}
  return out


def term(name: str, *, weight: float = 1.0, grad_clip: float = 0.0,
         aux_loss: str = '', aux_loss_weight: float = 1.0,
         schedules: dict | None = None, inputs_from: str = '',
         eps_ramp_steps: int = 0, **hparams: Any) -> ml_collections.ConfigDict:
  """One regularizer term of the objective: ``weight * mean(penalty(...))``.

  ``eps_ramp_steps=N`` (older configs) is read as ``schedules={'eps': {'steps': N}}``:
  the same linear ramp of ε from 0 over N steps.
  """
  return ml_collections.ConfigDict({
      'name': name, 'weight': float(weight), 'grad_clip': float(grad_clip),
      'aux_loss': aux_loss, 'aux_loss_weight': float(aux_loss_weight),
      'schedules': ml_collections.ConfigDict(
          _folded_schedules(schedules, eps_ramp_steps, f'regularizers.<{name}>')),
      'inputs_from': inputs_from,
      'hparams': ml_collections.ConfigDict(hparams)})


def term_schedules(t) -> dict:
  """A term's schedules ``{hparam: spec}``, a legacy ``eps_ramp_steps`` included."""
  return _folded_schedules(t.get('schedules', {}) or {}, t.get(LEGACY_EPS_RAMP, 0) or 0,
                           'regularizers.<term>')


def fold_legacy(config):
  """Rewrites older spellings in place (a ConfigDict or a plain dict) and returns it.

  A term's ``eps_ramp_steps: N`` becomes ``schedules.eps = {'steps': N}`` (removed when
  0), so an old config, or the ``config.json`` of an old run, reads as the same run.
  """
  regularizers = config.get('regularizers', {}) if hasattr(config, 'get') else {}
  for label in list(regularizers.keys()):
    t = regularizers[label]
    if not hasattr(t, 'keys') or LEGACY_EPS_RAMP not in t:
      continue
    folded = _folded_schedules(t.get('schedules', {}) or {}, t[LEGACY_EPS_RAMP] or 0,
                               f'regularizers.{label}')
    if isinstance(t, ml_collections.ConfigDict):
      with t.unlocked():
        del t[LEGACY_EPS_RAMP]
        t.schedules = ml_collections.ConfigDict(folded)
    else:
      del t[LEGACY_EPS_RAMP]
      t['schedules'] = folded
  return config


def base_config() -> ml_collections.ConfigDict:
  """The full schema with defaults: standard training of a small MLP on digits."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.batch_size = 128
  c.num_train_steps = 1000
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3
  c.log_every_steps = 50

  c.dataset = ml_collections.ConfigDict({
      'name': 'digits', 'data_dir': '', 'augment': False, 'source': 'auto',
      'resolved': ml_collections.ConfigDict({'source': '', 'path': ''})})
  c.model = ml_collections.ConfigDict({
      'name': 'mlp',
      'kwargs': ml_collections.ConfigDict({'widths': (128, 128), 'activation': 'relu'})})

  c.optimizer = ml_collections.ConfigDict({
      'name': 'sgd', 'lr': 0.1, 'momentum': 0.9, 'nesterov': False, 'weight_decay': 0.0,
      'grad_clip': 0.0, 'schedule': 'cosine', 'boundaries': (0.5, 0.75),
      'decay_factor': 0.1, 'warmup_steps': 0, 'warmup_init': 0.1})

  c.nominal_weight = 1.0
  c.regularizers = ml_collections.ConfigDict()
  c.controller = ml_collections.ConfigDict({
      'name': 'none', 'term': '', 'loss': 'auto', 'target_loss': 1.0, 'k0': 220.0,
      'k': 0.02, 'eps_better': 1.0, 'eps_worse': 0.01,
      'lam_max': 4000.0, 'lam_min': 0.0, 'decay': 0.99, 'sensitivity': 2.0,
      'min_history': 3})
  c.bn = ml_collections.ConfigDict({'stop_gradient_stats': False})
  c.init_from = ''

  c.eval = ml_collections.ConfigDict({
      'eps': 0.1, 'p': math.inf, 'steps': 20, 'restarts': 1, 'step_size': 0.0,
      'objective': 'ce', 'batch_size': 256, 'num_examples': 0, 'split': 'test',
      'attack': 'pgd', 'monitor_every_steps': 0, 'monitor_examples': 512})
  c.distributed = ml_collections.ConfigDict({
      'initialize': False, 'coordinator_address': '', 'num_processes': 0,
      'process_id': -1})
  return c


TERM_KEYS = tuple(term('x').keys()) + (LEGACY_EPS_RAMP,)


def _fail(field: str, message: str):
  raise ValueError(f'config.{field}: {message}')


def _unknown_keys(config, schema, prefix: str = '') -> None:
  for key in config.keys():
    field = f'{prefix}{key}'
    if field in FREE_FORM or key in FREE_FORM:
      continue
    if prefix == 'regularizers.' or field == 'regularizers':
      continue
    if key not in schema:
      valid = ', '.join(sorted(schema.keys()))
      _fail(field, f'unknown key {key!r}; valid keys here: {valid}')
    value, expected = config[key], schema[key]
    if isinstance(expected, ml_collections.ConfigDict):
      if not isinstance(value, (ml_collections.ConfigDict, dict)):
        _fail(field, f'must be a group of settings, got {value!r}')
      _unknown_keys(value, expected, f'{field}.')


def _check_number(config, field: str, *, minimum=None, strict=False, integer=False):
  value = config
  for part in field.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    _fail(field, f'must be a number, got {value!r}')
  if integer and not float(value).is_integer():
    _fail(field, f'must be an integer, got {value!r}')
  if math.isnan(value):
    _fail(field, 'must not be NaN')
  if minimum is not None and (value < minimum or (strict and value == minimum)):
    _fail(field, f'must be {">" if strict else ">="} {minimum}, got {value!r}')
  return value


def _choice(value, field: str, choices: Sequence[str]):
  if value not in choices:
    _fail(field, f'unknown name {value!r}; valid choices: {", ".join(map(repr, choices))}')


def _penalty_hparams(penalty) -> tuple[set[str], bool]:
  """Keyword hyperparameter names of a penalty, and whether it accepts **kwargs."""
  fn = inspect.unwrap(penalty)
  params = inspect.signature(fn).parameters.values()
  names = {p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != 'rng'}
  return names, any(p.kind == p.VAR_KEYWORD for p in params)


def dataset_names() -> tuple[str, ...]:
  """Dataset names the data package accepts (falls back to :data:`DATASETS`)."""
  try:
    from robustjax import data  # pylint: disable=g-import-not-at-top
    names = getattr(data, 'dataset_names', None)
    return tuple(names()) if callable(names) else DATASETS
  except ImportError:
    return DATASETS


def load_regularizers():
  """``robustjax.regularizers`` with every penalty module imported (registry complete)."""
  import importlib  # pylint: disable=g-import-not-at-top
  import pkgutil  # pylint: disable=g-import-not-at-top
  from robustjax import regularizers  # pylint: disable=g-import-not-at-top
  for info in pkgutil.iter_modules(regularizers.__path__):
    if not info.name.startswith('_'):
      importlib.import_module(f'{regularizers.__name__}.{info.name}')
  return regularizers


def validate_terms(config) -> None:
  """Checks every regularizer term: known name, known hparams, sane values."""
  regularizers = load_regularizers()
  for label, t in config.regularizers.items():
    field = f'regularizers.{label}'
    if not isinstance(t, (ml_collections.ConfigDict, dict)):
      _fail(field, f'must be a term group (see schema.term), got {t!r}')
    for key in t.keys():
      if key not in TERM_KEYS:
        _fail(f'{field}.{key}', f'unknown key {key!r}; valid keys: {", ".join(TERM_KEYS)}')
    for key in ('name', 'weight'):
      if key not in t:
        _fail(f'{field}.{key}', 'is required')
    _choice(t['name'], f'{field}.name', regularizers.names())
    _check_number(config, f'{field}.weight')
    for key, minimum in (('grad_clip', 0), (LEGACY_EPS_RAMP, 0), ('aux_loss_weight', None)):
      if key in t:
        _check_number(config, f'{field}.{key}', minimum=minimum)
    hparams = dict(t.get('hparams', {}) or {})
    known, open_kwargs = _penalty_hparams(regularizers.get(t['name']))
    for key, value in hparams.items():
      if key not in known and not open_kwargs:
        _fail(f'{field}.hparams.{key}', f'unknown hyperparameter of {t["name"]!r}; valid: '
              f'{", ".join(sorted(known))}')
      if key in ('eps', 'h', 'alpha') and isinstance(value, (int, float)) and value < 0:
        _fail(f'{field}.hparams.{key}', f'must be >= 0, got {value!r}')
      if key == 'p' and isinstance(value, (int, float)) and not value >= 1:
        _fail(f'{field}.hparams.p', f'must be in [1, inf], got {value!r}')
    if t.get(LEGACY_EPS_RAMP, 0) and 'eps' not in hparams:
      _fail(f'{field}.{LEGACY_EPS_RAMP}', 'needs hparams.eps to ramp')
    _validate_schedules(config, label, t, hparams)
    source = t.get('inputs_from', '') or ''
    if source:
      if source == label or source not in config.regularizers:
        _fail(f'{field}.inputs_from', f'{source!r} is not the label of another term; '
              f'labels: {", ".join(map(repr, config.regularizers.keys()))}')
      if t.get('grad_clip', 0) or config.regularizers[source].get('grad_clip', 0):
        _fail(f'{field}.inputs_from', 'terms with grad_clip are evaluated in their own '
              'pass and cannot take or give inputs_from')


SCHEDULE_KEYS = ('steps', 'kind', 'init', 'begin')


def _validate_schedules(config, label: str, t, hparams: dict) -> None:
  """``regularizers.<label>.schedules``: ramps of numeric hparams (see :func:`term`)."""
  schedules = t.get('schedules', {}) or {}
  for name, spec in dict(schedules).items():
    field = f'regularizers.{label}.schedules.{name}'
    if name not in hparams:
      _fail(field, f'schedules hparams.{name}, which is not set; set its final value '
            f'in hparams')
    value = hparams[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      _fail(field, f'hparams.{name} must be a number to be scheduled, got {value!r}')
    if name == 'eps' and t.get(LEGACY_EPS_RAMP, 0):
      _fail(field, 'eps already ramps through eps_ramp_steps; use one of the two')
    if not isinstance(spec, (ml_collections.ConfigDict, dict)):
      _fail(field, f"must be a group {{'steps': N, ...}}, got {spec!r}")
    for key in spec.keys():
      if key not in SCHEDULE_KEYS:
        _fail(f'{field}.{key}', f'unknown key {key!r}; valid keys: '
              f'{", ".join(SCHEDULE_KEYS)}')
    if 'steps' not in spec:
      _fail(f'{field}.steps', 'is required')
    _check_number(config, f'{field}.steps', minimum=1, integer=True)
    if 'begin' in spec:
      _check_number(config, f'{field}.begin', minimum=0, integer=True)
    if 'init' in spec:
      _check_number(config, f'{field}.init')
    _choice(spec.get('kind', 'linear'), f'{field}.kind', SCHEDULE_KINDS)


def _check_elle_a(config) -> None:
  """``controller.*`` of ELLE-A: numbers in range (the controller's own checks)."""
  from robustjax.regularizers import controllers  # pylint: disable=g-import-not-at-top
  for key in ('lam_max', 'lam_min', 'decay', 'sensitivity'):
    _check_number(config, f'controller.{key}', minimum=0)
  _check_number(config, 'controller.min_history', minimum=1, integer=True)
  ctl = config.controller
  try:
    controllers.elle_a(lam_max=ctl.lam_max, lam_min=ctl.lam_min, decay=ctl.decay,
                       sensitivity=ctl.sensitivity, min_history=int(ctl.min_history))
  except ValueError as e:
    _fail('controller', str(e))


def _check_model_kwargs(name: str, kwargs: dict, models) -> None:
  """``model.kwargs`` must be settings of ``model.name`` (builds the module: no
  parameters, no compilation)."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  def settings(model_name):
    module = models.create(model_name, num_classes=2)
    return [f.name for f in dataclasses.fields(module)
            if f.init and f.name not in ('parent', 'name', 'num_classes')]

  known = settings(name)
  unknown = [k for k in kwargs if k not in known]
  if unknown:
    fits = [m for m in models.model_names() if all(k in settings(m) for k in kwargs)]
    _fail(f'model.kwargs.{unknown[0]}', f'is not a setting of model {name!r} (its '
          f'settings: {", ".join(known)}); models that take these kwargs: '
          f'{", ".join(map(repr, fits)) or "none"}')
  try:
    models.create(name, num_classes=2, **{k: tuplify(v) for k, v in kwargs.items()})
  except (TypeError, ValueError) as e:
    _fail('model.kwargs', f'rejected by model {name!r}: {e}')


def tuplify(value):
  """Lists (as JSON and config files give them), recursively, as tuples (hashable)."""
  return tuple(tuplify(v) for v in value) if isinstance(value, list) else value


def check_workdir(workdir: str) -> None:
  """Raises unless ``workdir`` exists or can be created, and is writable."""
  if not workdir:
    raise ValueError('workdir: must be a directory path, got an empty string')
  path = os.path.abspath(workdir)
  probe = path
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise ValueError(f'workdir: {probe!r} exists and is not a directory')
  if not os.access(probe, os.W_OK | os.X_OK):
    raise ValueError(f'workdir: {workdir!r} is not writable (checked {probe!r})')
  # Permission bits do not tell everything (root, /proc, read-only mounts): try it, with
  # a file in an existing workdir, or a directory (removed at once) in its nearest
  # existing ancestor.
  try:
    if probe == path:
      with tempfile.TemporaryFile(dir=path):
        pass
    else:
      os.rmdir(tempfile.mkdtemp(dir=probe, prefix='.robustjax-probe-'))
  except OSError as e:
    what = 'is not writable' if probe == path else f'cannot be created in {probe!r}'
    raise ValueError(f'workdir: {workdir!r} {what} ({e.strerror or e})') from None


def validate(config, *, num_devices: int = 1, process_count: int = 1,
             workdir: str | None = None) -> None:
  """Raises a ``ValueError`` naming the first bad field of ``config``; touches nothing.

  Args:
    config: a ConfigDict built from :func:`base_config`.
    num_devices: devices of the data mesh; ``batch_size`` must be divisible by it.
    process_count: hosts; ``batch_size`` must be divisible by it too.
    workdir: checked to exist or be creatable, and writable, when given.
  """
  from robustjax import models  # pylint: disable=g-import-not-at-top
  _unknown_keys(config, base_config())
  for key in ('seed', 'batch_size', 'num_train_steps', 'checkpoint_every_steps',
              'keep_checkpoints', 'log_every_steps'):
    if key not in config:
      _fail(key, 'is required')
  _check_number(config, 'seed', minimum=0, integer=True)
  _check_number(config, 'batch_size', minimum=1, integer=True)
  _check_number(config, 'num_train_steps', minimum=0, integer=True)
  _check_number(config, 'checkpoint_every_steps', minimum=1, integer=True)
  _check_number(config, 'keep_checkpoints', minimum=1, integer=True)
  _check_number(config, 'log_every_steps', minimum=1, integer=True)
  if config.batch_size % num_devices:
    _fail('batch_size', f'{config.batch_size} is not divisible by the number of devices '
          f'({num_devices}); use a multiple of {num_devices}')
  if config.batch_size % process_count:
    _fail('batch_size', f'{config.batch_size} is not divisible by the number of hosts '
          f'({process_count})')

  _choice(config.dataset.name, 'dataset.name', dataset_names())
  _choice(config.dataset.get('source', 'auto'), 'dataset.source', DATA_SOURCES)
  _choice(config.model.name, 'model.name', models.model_names())
  _check_model_kwargs(config.model.name, dict(config.model.kwargs), models)

  opt = config.optimizer
  _choice(opt.name, 'optimizer.name', OPTIMIZERS)
  _choice(opt.schedule, 'optimizer.schedule', SCHEDULES)
  _check_number(config, 'optimizer.lr', minimum=0)
  _check_number(config, 'optimizer.momentum', minimum=0)
  _check_number(config, 'optimizer.weight_decay', minimum=0)
  _check_number(config, 'optimizer.grad_clip', minimum=0)
  _check_number(config, 'optimizer.warmup_steps', minimum=0, integer=True)
  for b in opt.boundaries:
    if not 0 <= b <= 1:
      _fail('optimizer.boundaries', f'are fractions of num_train_steps in [0, 1], got {b!r}')

  _check_number(config, 'nominal_weight')
  validate_terms(config)

  ctl = config.controller
  _choice(ctl.name, 'controller.name', CONTROLLERS)
  if ctl.name != 'none':
    if ctl.term not in config.regularizers:
      _fail('controller.term', f'{ctl.term!r} is not a regularizer label; labels: '
            f'{", ".join(map(repr, config.regularizers.keys())) or "(none)"}')
    if ctl.name == 'adaptive_psi':
      _check_number(config, 'controller.target_loss', minimum=0, strict=True)
    else:
      _check_elle_a(config)
    reads = ctl.get('loss', 'auto')
    if ctl.name == 'elle_a' and reads in ('auto', 'nominal'):
      _fail('controller.loss', f"ELLE-A is fed the ELLE term's linearity error, not "
            f"{reads!r}; set it to the ELLE term's label ({ctl.term!r})")
    if reads not in ('auto', 'nominal') and reads not in config.regularizers:
      _fail('controller.loss', f"{reads!r} is not 'auto', 'nominal' or a regularizer "
            f'label; labels: {", ".join(map(repr, config.regularizers.keys())) or "(none)"}')

  ev = config.eval
  _check_number(config, 'eval.eps', minimum=0)
  _check_number(config, 'eval.p', minimum=1)
  _check_number(config, 'eval.steps', minimum=0, integer=True)
  _check_number(config, 'eval.restarts', minimum=1, integer=True)
  _check_number(config, 'eval.step_size', minimum=0)
  _check_number(config, 'eval.batch_size', minimum=1, integer=True)
  _check_number(config, 'eval.num_examples', minimum=0, integer=True)
  _check_number(config, 'eval.monitor_every_steps', minimum=0, integer=True)
  _check_number(config, 'eval.monitor_examples', minimum=1, integer=True)
  _choice(ev.objective, 'eval.objective', EVAL_OBJECTIVES)
  _choice(ev.get('attack', 'pgd'), 'eval.attack', EVAL_ATTACKS)
  _choice(ev.split, 'eval.split', ('test', 'train'))
  if workdir is not None:
    check_workdir(workdir)
