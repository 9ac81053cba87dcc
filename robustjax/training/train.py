"""``train_and_evaluate(config, workdir)``: the whole run, importable from a notebook.

Order of a run: validate the config (one clear error naming the field, before anything
compiles or is written), initialise ``jax.distributed`` when configured, load data,
build model/optimizer/objective, restore the latest checkpoint (or ``init_from``, or a
fresh init), train with periodic checkpoints and metrics, save a final checkpoint, and
evaluate clean and PGD robust accuracy at ``config.eval.eps`` on the test split.

A workdir belongs to one run (:mod:`robustjax.training.workdir`): re-running with the
same config resumes, a different config is refused naming the differing fields, and
raising ``num_train_steps`` needs ``extend=True`` and is recorded as a segment. A run
that already finished returns its saved final metrics without evaluating again.

SIGTERM (a preemption) is honoured at every stage: during training the step in flight
finishes, a checkpoint is saved and the run returns ``preempted: True``; during the
final evaluation, the evaluation is abandoned (training is complete and saved) and the
run returns the same, so re-running the command evaluates.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from robustjax import losses
from robustjax import metrics
from robustjax import models
from robustjax.training import checkpoints
from robustjax.training import feed
from robustjax.training import monitor as monitor_lib
from robustjax.training import observe
from robustjax.training import optim
from robustjax.training import schema
from robustjax.training import step as step_lib
from robustjax.training import workdir as workdir_lib

CONFIG_FILE = workdir_lib.CONFIG_FILE
FINAL_METRICS_FILE = 'final_metrics.json'
MAX_UNSYNCED_STEPS = 10  # block on metrics at least this often (see module docstring)


def fetch(tree):
  """Host copies of replicated arrays (their local shard: works on several hosts too)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))
                      if isinstance(x, jax.Array) else x, tree)


class NonFiniteError(FloatingPointError):
  """A loss or penalty became NaN/inf; the message names the term and the step."""


def _as_config(config) -> ml_collections.ConfigDict:
  if isinstance(config, ml_collections.FrozenConfigDict):
    config = ml_collections.ConfigDict(config.as_configdict())
  elif isinstance(config, dict):
    config = ml_collections.ConfigDict(config)
  # An unlocked copy, older spellings (eps_ramp_steps) read as today's.
  return schema.fold_legacy(ml_collections.ConfigDict(config.to_dict()))


def build_model(config, info):
  """The Flax module of ``config.model`` for a dataset's classes and pixel statistics."""
  kwargs = {k: schema.tuplify(v) for k, v in dict(config.model.kwargs).items()}
  if info.mean is not None and 'mean' not in kwargs:
    kwargs['mean'], kwargs['std'] = info.mean, info.std
  return models.create(config.model.name, num_classes=info.num_classes, **kwargs)


def _maybe_initialize_distributed(dist) -> None:
  if not dist.initialize:
    return
  jax.distributed.initialize(
      coordinator_address=dist.coordinator_address or None,
      num_processes=dist.num_processes or None,
      process_id=dist.process_id if dist.process_id >= 0 else None)


class _EvaluationInterrupted(Exception):
  """Raised by the SIGTERM handler while the final evaluation runs."""


class _Preemption:
  """SIGTERM sets a flag; the loop checks it each step, saves and exits cleanly.

  After training (``interrupt_evaluation()``), SIGTERM instead raises
  :class:`_EvaluationInterrupted`, which abandons the evaluation: there is nothing left to
  save, and a scheduler's grace period is shorter than a long evaluation.
  """

  def __init__(self):
    self.requested = False
    self._raise = False
    self._previous = None

  def handler(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True
    if self._raise:
      raise _EvaluationInterrupted()
    logging.warning('SIGTERM received: saving a checkpoint and stopping')

  def interrupt_evaluation(self, on: bool = True) -> None:
    self._raise = on

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self.handler)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, metrics: dict, terms: Sequence[step_lib.Term]) -> None:
  """Raises :class:`NonFiniteError` naming the first non-finite term at ``step``."""
  names = [(t.label, f"regularizer term {t.label!r} (penalty {t.name!r})") for t in terms]
  names += [('nominal', 'nominal cross-entropy'), ('loss', 'total loss'),
            ('grad_norm', 'gradient norm')]
  names += [(k, f'term {k!r}') for k in metrics if '/' in k]
  for key, what in names:
    if key in metrics and not math.isfinite(float(metrics[key])):
      raise NonFiniteError(f'non-finite {what} at step {step}: {float(metrics[key])}')


def _write_json(path: str, obj: Any) -> None:
  workdir_lib.write_json(path, obj)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of the run in ``workdir``: its ``config.json``, with the
  ``num_train_steps`` of its latest extension (``config.segment-<n>.json``) if any."""
  config = workdir_lib.saved_config(workdir)
  if config is None:
    raise ValueError(f'workdir: no {CONFIG_FILE} in {workdir!r}; is it a robustjax run?')
  return ml_collections.ConfigDict(config)


def _eval_fn(logits_fn, *, eps, p, steps, restarts, step_size, objective):
  """``(params, x, y, mask, key) -> (clean count, robust count)`` over the unmasked rows."""

  def fn(params, x, y, mask, key):
    clean_ok = metrics.correct(logits_fn, params, x, y)
    if eps > 0 and steps > 0:
      robust_ok = metrics.robust_correct(logits_fn, params, (x, y), rng=key, eps=eps, p=p,
                                         steps=steps, restarts=restarts,
                                         objective=objective, step_size=step_size or None)
    else:
      robust_ok = clean_ok
    return jnp.sum(clean_ok & mask), jnp.sum(robust_ok & mask)

  return fn


def evaluate(logits_fn, params, images: np.ndarray | None = None,
             labels: np.ndarray | None = None, *, eps: float, p: float = math.inf,
             steps: int = 20, restarts: int = 1, step_size: float = 0.0,
             objective: str = 'ce', batch_size: int = 256, seed: int = 0, mesh=None,
             attack: str = 'pgd', batches=None) -> dict:
  """Clean and robust accuracy of ``logits_fn`` on ``images [N, ...]``, ``labels [N]``.

  Robust accuracy counts an example when it is classified correctly both clean and at
  the attack's point (:func:`robustjax.metrics.robust_correct`): ``attack='pgd'``
  (``restarts`` random starts, the worst kept per example) or ``'autoattack'``
  (:func:`robustjax.attacks.autoattack`, standard version: APGD-CE, APGD-T, FAB-T,
  Square; ``steps``, ``restarts``, ``step_size`` and ``objective`` are then unused).
  AutoAttack gathers the still-robust points on the host between its attacks, so it
  runs per batch on the real (unmasked) rows outside the sharded jit. Batch ``i`` is
  attacked under ``fold_in(PRNGKey(seed), i)``.

  Args:
    batches: instead of ``images`` and ``labels``, batches ``(inputs [B, ...], labels
      [B], mask [B])`` of :func:`robustjax.data.eval_batches` (``B = batch_size``
      rounded up to a multiple of the mesh's devices).

  Returns:
    ``{'clean_accuracy', 'robust_accuracy', 'num_examples'}``.
  """
  if attack not in ('pgd', 'autoattack'):
    raise ValueError(f"unknown attack {attack!r}; valid choices: 'pgd', 'autoattack'")
  mesh = step_lib.make_mesh() if mesh is None else mesh
  if batches is None:
    n = len(labels)
    batch_size = eval_batch_size(batch_size, n, mesh.size)
    batches = metrics.pad_batches(images, labels, batch_size)
  rep, shard = step_lib.replicated(mesh), step_lib.batch_sharded(mesh)
  ensemble = attack == 'autoattack' and eps > 0
  fn = jax.jit(_eval_fn(logits_fn, eps=0.0 if ensemble else eps, p=p, steps=steps,
                        restarts=restarts, step_size=step_size, objective=objective),
               in_shardings=(rep, shard, shard, shard, rep), out_shardings=rep)
  clean = robust = 0.0
  total = 0
  key = jax.random.PRNGKey(seed)
  for i, (x, y, mask) in enumerate(batches):
    total += int(np.sum(mask))
    arrays = [jax.make_array_from_callback(a.shape, shard, lambda idx, a=a: a[idx])
              for a in (x, y, mask)]
    c, r = fn(params, *arrays, jax.random.fold_in(key, i))
    clean += float(fetch(c))
    if ensemble:
      ok = metrics.robust_correct(logits_fn, params,
                                  (jnp.asarray(x[mask]), jnp.asarray(y[mask])),
                                  rng=jax.random.fold_in(key, i), eps=eps, p=p,
                                  attack='autoattack')
      robust += float(np.sum(np.asarray(ok)))
    else:
      robust += float(fetch(r))
  return {'clean_accuracy': clean / max(total, 1), 'robust_accuracy': robust / max(total, 1),
          'num_examples': total}


def eval_batch_size(requested: int, num_examples: int, num_devices: int) -> int:
  """An evaluation batch: ``requested``, at most the number of examples, rounded up to a
  multiple of the devices."""
  return int(math.ceil(min(requested, max(num_examples, 1)) / num_devices) * num_devices)


def _describe_attack(ev) -> str:
  p = 'Linf' if math.isinf(ev.p) else f'L{ev.p:g}'
  if ev.get('attack', 'pgd') == 'autoattack':
    return f'AutoAttack (standard) {p} eps={ev.eps:g}'
  restarts = f' x{ev.restarts} restarts' if ev.restarts > 1 else ''
  return f'PGD-{ev.steps} {p} eps={ev.eps:g}{restarts}'


def _init_from(config, state, mesh):
  """Replaces params / batch stats of a fresh ``state`` with those of another run."""
  raw = checkpoints.restore_raw_state(config.init_from)
  params, stats = raw['params'], raw.get('batch_stats', {}) or {}
  want = jax.tree.structure(state.params)
  if jax.tree.structure(jax.tree.map(np.asarray, params)) != want:
    raise ValueError(f'config.init_from: params in {config.init_from!r} do not match '
                     f'config.model ({config.model.name}); use the same model settings')
  rep = step_lib.replicated(mesh)
  params = jax.device_put(jax.tree.map(jnp.asarray, params), rep)
  if jax.tree.structure(state.batch_stats) == jax.tree.structure(stats):
    stats = jax.device_put(jax.tree.map(jnp.asarray, stats), rep)
  else:
    stats = state.batch_stats
  return params, stats


class _Watch:
  """The catastrophic-overfitting monitor of a run (:mod:`robustjax.training.monitor`)."""

  def __init__(self, config, model, workdir: str, start: int):
    ev = config.eval
    self.every = int(ev.monitor_every_steps)
    self.x, self.y = feed.eval_arrays(config.dataset, split=ev.split,
                                      num_examples=int(ev.get('monitor_examples', 512)))
    self.fn = monitor_lib.make_monitor(model, eps=float(ev.eps), p=float(ev.p),
                                       steps=int(ev.steps), step_size=float(ev.step_size))
    self.key = jax.random.PRNGKey(config.seed)
    self.history = [r for r in monitor_lib.read_history(workdir) if r['step'] <= start]
    self.flagged = monitor_lib.catastrophic_overfitting(self.history)[
        'catastrophic_overfitting']

  def measure(self, step: int, state, writer) -> None:
    row = monitor_lib.measure(self.fn, state.params, state.batch_stats, self.x, self.y,
                              jax.random.fold_in(self.key, step))
    writer.write(step, row, prefix=monitor_lib.SPLIT)
    self.history.append({'step': step, **row})
    logging.info('step %d monitor (%d examples): clean %.4f fgsm %.4f pgd %.4f '
                 '(fgsm - pgd %.4f)', step, len(self.y), row['clean_accuracy'],
                 row['fgsm_accuracy'], row['pgd_accuracy'], row['single_minus_multi_step'])
    verdict = monitor_lib.catastrophic_overfitting(self.history)
    if verdict['catastrophic_overfitting'] and not self.flagged:
      self.flagged = True
      logging.warning('catastrophic overfitting at step %d: PGD accuracy %.4f, best %.4f '
                      'at step %d, FGSM accuracy %.4f (%s)', step, row['pgd_accuracy'],
                      verdict['best_pgd_accuracy'], verdict['best_pgd_step'],
                      row['fgsm_accuracy'], verdict['rule'])


def _monitor_summary(workdir: str) -> dict:
  """The last monitor row and the catastrophic-overfitting verdict, for final metrics."""
  history = monitor_lib.read_history(workdir)
  if not history:
    return {}
  last = history[-1]
  verdict = monitor_lib.catastrophic_overfitting(history)
  return {'monitor_step': last['step'], 'monitor_fgsm_accuracy': last['fgsm_accuracy'],
          'monitor_pgd_accuracy': last['pgd_accuracy'],
          'single_minus_multi_step': last['single_minus_multi_step'],
          'catastrophic_overfitting': verdict['catastrophic_overfitting'],
          'catastrophic_overfitting_step': verdict['catastrophic_overfitting_step'],
          'catastrophic_overfitting_rule': verdict['rule']}


def _extension_note(config, claim, start: int) -> str:
  """What extending a run does to its learning rate at the restored step."""
  total = int(config.num_train_steps)
  _, old = optim.make_optimizer(config.optimizer, claim.previous_num_train_steps)
  _, new = optim.make_optimizer(config.optimizer, total)
  return (f'extending the run in this workdir from {claim.previous_num_train_steps} to '
          f'{total} steps from step {start}; the learning-rate schedule now spans {total} '
          f'steps (lr at step {start}: {float(new(start)):.4g}, was '
          f'{float(old(start)):.4g})')


def _finished(workdir: str, step: int, attack: str) -> dict | None:
  """The saved final metrics when the run already ended at ``step`` with ``attack``."""
  path = os.path.join(workdir, FINAL_METRICS_FILE)
  if not os.path.exists(path):
    return None
  final = workdir_lib.read_json(path)
  if final.get('step') != step or final.get('eval_attack') != attack:
    return None
  return final


def _final_line(final: dict) -> str:
  line = (f'final: clean_accuracy={final["clean_accuracy"]:.4f} '
          f'robust_accuracy={final["robust_accuracy"]:.4f} ({final["eval_attack"]})')
  if final.get('catastrophic_overfitting'):
    line += f'; catastrophic overfitting at step {final["catastrophic_overfitting_step"]}'
  return line


def train_and_evaluate(config, workdir: str, *,
                       devices: Sequence[jax.Device] | None = None,
                       extend: bool = False) -> dict:
  """Trains as ``config`` says in ``workdir`` (resuming if possible) and evaluates.

  Args:
    config: a ConfigDict following :func:`schema.base_config` (e.g. from configs/).
    workdir: directory for checkpoints, metrics.jsonl, TensorBoard events,
      config.json and final_metrics.json. Re-running with the same config resumes from
      the latest checkpoint; a run that finished returns its saved final metrics.
    devices: devices of the data mesh (default: all devices of all hosts).
    extend: allow ``config.num_train_steps`` to be higher than the workdir's run's (the
      only change accepted): training continues to the new total, and the extension is
      recorded in ``config.segment-<n>.json`` beside ``config.json``.

  Returns:
    The final metrics: ``clean_accuracy``, ``robust_accuracy`` (PGD at
    ``config.eval.eps``), ``step``, ``preemption_count``, ``eval_attack``; or, when
    SIGTERM stopped the run, ``{'preempted': True, 'stage': 'training' | 'evaluation',
    'step', 'preemption_count'}`` without final metrics.

  Raises:
    ValueError: bad config or workdir (naming the field), before any compilation.
    workdir_lib.WorkdirConflictError: (a ValueError) the workdir holds a run with
      another config; the message lists the differing fields. Nothing is written.
    NonFiniteError: a loss or penalty became non-finite (naming term and step); the
      last good checkpoint is kept.
  """
  config = _as_config(config)
  schema.validate(config, workdir=workdir)
  config_dict = json.loads(config.to_json_best_effort())
  claim = workdir_lib.check(workdir, config_dict, extend=extend)
  _maybe_initialize_distributed(config.distributed)  # before any JAX computation
  mesh = step_lib.make_mesh(devices)
  schema.validate(config, num_devices=mesh.size, process_count=jax.process_count())
  if config.init_from and checkpoints.latest_step(config.init_from) is None:
    raise ValueError(f'config.init_from: no checkpoint in {config.init_from!r}')
  source, path = feed.check_available(config.dataset)  # reads (and checks) the files
  config_dict['dataset']['resolved'] = {'source': source, 'path': path}
  info = feed.info(config.dataset)
  model = build_model(config, info)
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  terms = step_lib.resolve_terms(config)
  controller = step_lib.controller_from_config(config.controller)

  is_lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)

  state = step_lib.init_state(model, tx, rng=jax.random.PRNGKey(config.seed),
                              input_shape=info.input_shape, mesh=mesh,
                              controller=controller)
  mngr = checkpoints.manager(workdir, max_to_keep=config.keep_checkpoints)
  preemption_count = 0
  if mngr.latest_step() is not None:
    state, meta = checkpoints.restore(mngr, checkpoints.abstract(state))
    preemption_count = int(meta.get('preemption_count', 0))
    logging.info('resumed from step %d of %s', int(state.step), workdir)
  elif config.init_from:
    params, stats = _init_from(config, state, mesh)
    state = step_lib.init_state(model, tx, rng=jax.random.PRNGKey(config.seed),
                                input_shape=info.input_shape, mesh=mesh,
                                controller=controller, params=params, batch_stats=stats)
    logging.info('initialised params from %s', config.init_from)

  start = int(fetch(state.step))
  total = int(config.num_train_steps)
  if claim.kind == 'extend':
    logging.warning(_extension_note(config, claim, start))
  if is_lead:
    workdir_lib.record(workdir, config_dict, claim, start_step=start)

  train_step = step_lib.jit_train_step(step_lib.train_step_from_config(
      config, model, tx, schedule, terms=terms, controller=controller), mesh)

  writer = observe.MetricWriter(workdir, enabled=is_lead, resume_step=start)
  watch = _Watch(config, model, workdir, start) if config.eval.get(
      'monitor_every_steps', 0) and start < total else None
  progress = observe.Progress(start=start, total=total, enabled=is_lead)
  pending: list[tuple[int, Any]] = []
  last_good = mngr.latest_step()

  def flush():
    nonlocal pending
    fetched = fetch(pending)
    pending = []
    for s, m in fetched:
      _check_finite(s, m, terms)
    return [m for _, m in fetched]

  log_buffer = []
  preempted = False
  with _Preemption() as preemption:
    try:
      batches = feed.train_batches(config.dataset, batch_size=config.batch_size,
                                   seed=config.seed, start_step=start,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count())
      for s, local in zip(range(start, total), batches):
        state, metrics = train_step(state, step_lib.global_batch(local, mesh))
        pending.append((s, metrics))  # s: the step whose loss these metrics are
        done = s + 1
        is_log = done % config.log_every_steps == 0 or done == total
        is_ckpt = done % config.checkpoint_every_steps == 0 or done == total
        if is_log or is_ckpt or preemption.requested or len(pending) >= MAX_UNSYNCED_STEPS:
          try:
            log_buffer.extend(flush())
          except NonFiniteError as e:
            where = (f'the last good checkpoint (step {last_good}) is kept in '
                     f'{os.path.join(workdir, checkpoints.CHECKPOINT_DIR)}'
                     if last_good is not None else 'no checkpoint was written')
            raise NonFiniteError(f'{e}; training stopped, {where}') from None
        if is_log and log_buffer:
          mean = {k: float(np.mean([m[k] for m in log_buffer])) for k in log_buffer[-1]}
          writer.write(done, mean)
          progress.update(done, mean)
          log_buffer = []
        if watch is not None and (done % watch.every == 0 or done == total):
          watch.measure(done, state, writer)
        if is_ckpt or preemption.requested:
          if preemption.requested:
            preemption_count += 1
          checkpoints.save(mngr, state, preemption_count=preemption_count)
          last_good = done
        if preemption.requested:
          preempted = True
          break
      if not preempted:
        checkpoints.save(mngr, state, preemption_count=preemption_count)  # no-op if saved
    finally:
      progress.close()
      mngr.close()

    step = int(fetch(state.step))
    if preempted:
      writer.close()
      logging.warning('stopped at step %d after SIGTERM; re-run the same command to '
                      'resume', step)
      return {'preempted': True, 'stage': 'training', 'step': step,
              'preemption_count': preemption_count}

    ev = config.eval
    attack = _describe_attack(ev)
    saved = _finished(workdir, step, attack) if start == step else None
    if saved is not None:  # nothing trained now: the saved evaluation still holds
      writer.close()
      logging.info('this run already finished at step %d; its final metrics are in %s',
                    step, os.path.join(workdir, FINAL_METRICS_FILE))
      if is_lead:
        print(_final_line(saved), flush=True)
      return saved

    try:
      preemption.interrupt_evaluation()
      if preemption.requested:  # arrived after the loop's last look at the flag
        raise _EvaluationInterrupted()
      num_eval = feed.num_eval_examples(config.dataset, split=ev.split,
                                        num_examples=ev.num_examples)
      batches = feed.eval_batches(
          config.dataset, split=ev.split, num_examples=ev.num_examples,
          batch_size=eval_batch_size(ev.batch_size, num_eval, mesh.size))
      logits_fn = models.logits_fn_for(model, {'batch_stats': state.batch_stats}
                                       if state.batch_stats else {})
      results = evaluate(logits_fn, state.params, eps=ev.eps, p=ev.p, steps=ev.steps,
                         restarts=ev.restarts, step_size=ev.step_size,
                         objective=ev.objective, seed=config.seed, mesh=mesh,
                         attack=ev.get('attack', 'pgd'), batches=batches)
      preemption.interrupt_evaluation(False)
    except _EvaluationInterrupted:
      preemption.interrupt_evaluation(False)
      writer.close()
      logging.warning('SIGTERM during the final evaluation: training is complete and '
                      'saved at step %d; re-run the same command to evaluate', step)
      return {'preempted': True, 'stage': 'evaluation', 'step': step,
              'preemption_count': preemption_count}

  final = {**results, 'step': step, 'preemption_count': preemption_count,
           'eval_eps': ev.eps, 'eval_p': ev.p, 'eval_attack': attack}
  if ev.get('monitor_every_steps', 0):
    final.update(_monitor_summary(workdir))
  writer.write_eval(step, {k: results[k] for k in ('clean_accuracy', 'robust_accuracy')},
                    attack=attack, eps=ev.eps, p=ev.p)
  writer.close()
  if is_lead:
    _write_json(os.path.join(workdir, FINAL_METRICS_FILE), final)
    print(_final_line(final), flush=True)
  return final


def restore(workdir: str, *, step: int | None = None):
  """Loads a trained run for inference-mode evaluation.

  Args:
    workdir: a run's workdir (holds config.json and checkpoints/).
    step: checkpoint step (default: latest).

  Returns:
    ``(config, logits_fn, params)``: ``logits_fn(params, inputs [B, ...]) -> [B, K]``
    uses BatchNorm running averages (inference mode).
  """
  config = load_config(workdir)
  if checkpoints.latest_step(workdir) is None:
    raise ValueError(f'workdir: no checkpoint in {workdir!r}')
  info = feed.info(config.dataset)
  model = build_model(config, info)
  tx, _ = optim.make_optimizer(config.optimizer, config.num_train_steps)
  mesh = step_lib.make_mesh(jax.local_devices()[:1])
  controller = step_lib.controller_from_config(config.controller)
  abstract = jax.eval_shape(lambda: step_lib.init_state(
      model, tx, rng=jax.random.PRNGKey(0), input_shape=info.input_shape, mesh=mesh,
      controller=controller))
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                         sharding=step_lib.replicated(mesh)),
                          abstract)
  try:
    with contextlib.closing(checkpoints.manager(workdir, create=False)) as mngr:
      state, _ = checkpoints.restore(mngr, abstract, step)
    params, batch_stats = state.params, state.batch_stats
  except ValueError:
    # A checkpoint whose controller state has another structure (runs without a
    # controller written before EmptyState): evaluation needs params and stats only.
    raw = checkpoints.restore_raw_state(workdir, step)
    params = jax.tree.map(jnp.asarray, raw['params'])
    batch_stats = jax.tree.map(jnp.asarray, raw.get('batch_stats', {}) or {})
  logits_fn = models.logits_fn_for(model, {'batch_stats': batch_stats}
                                   if batch_stats else {})
  return config, logits_fn, params
