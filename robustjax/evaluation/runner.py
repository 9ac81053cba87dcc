"""One evaluation, end to end: restore, check, run the missing units, assemble, write.

:func:`evaluate` is what ``robustjax.evaluate.run`` calls. Nothing is written before every
check has passed (flags, workdir, model, the attacks' and certificates' own refusals, the
resume identity); then only ``WORKDIR/eval/<tag>/`` is.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from robustjax import _checks
from robustjax.evaluation import classifiers
from robustjax.evaluation import render
from robustjax.evaluation import report as report_lib
from robustjax.evaluation import settings as settings_lib
from robustjax.evaluation import units as units_lib
from robustjax.training import checkpoints
from robustjax.training import feed
from robustjax.training import observe
from robustjax.training import step as step_lib
from robustjax.training import train

fail = settings_lib.fail


def _load_run(workdir: str):
  if not os.path.isdir(workdir):
    fail('workdir', f'{workdir!r} is not a directory')
  try:
    config = train.load_config(workdir)
  except ValueError as e:
    fail('workdir', str(e).split(': ', 1)[-1])
  step = checkpoints.latest_step(workdir)
  if step is None:
    fail('workdir', f'no checkpoint in {workdir!r}; train it first '
         '(python -m robustjax.main --config=... --workdir=...)')
  return config, step


def _batches(config, split: str, batch_size: int, num_examples: int):
  """The split's batches (padded rows masked out) and the labels of the real rows."""
  batches = list(feed.eval_batches(config.dataset, split=split, batch_size=batch_size,
                                   num_examples=num_examples))
  for x, _, mask in batches:
    try:
      _checks.check_in_bounds(x[mask], classifiers.BOUNDS, name='the dataset\'s inputs')
    except ValueError as e:
      fail('workdir', str(e))
  labels = np.concatenate([y[mask] for _, y, mask in batches])
  return batches, labels


def evaluate(workdir: str, *, restore_cache: classifiers.RestoreCache,
             progress: bool | None = None, on_unit: Callable[[str], None] | None = None,
             tag: str | None = None, **kwargs) -> dict:
  """Evaluates a trained run and writes ``workdir/eval/<tag>/``; returns the report.

  ``kwargs`` are :func:`robustjax.evaluate.run`'s evaluation arguments (``eps``, ``norm``,
  ``attacks``, ...).
  """
  t_start = time.perf_counter()
  flags = settings_lib.check_flags(**kwargs, tag=tag,
                                   certify_methods=tuple(classifiers.CERTIFICATES),
                                   certify_norms={k: c.norms for k, c in
                                                  classifiers.CERTIFICATES.items()})
  workdir = os.path.abspath(workdir)
  config, step = _load_run(workdir)
  certificate = classifiers.CERTIFICATES.get(flags['certify'])
  if certificate is not None:
    certificate.check_model(config)
  try:
    feed.check_available(config.dataset)
  except ValueError as e:
    fail('workdir', f'the run\'s dataset is not available here: {e}')
  n = feed.num_eval_examples(config.dataset, split=flags['split'],
                             num_examples=flags['num_examples'])
  if n == 0:
    fail('num_examples', f'the {flags["split"]} split has no examples to evaluate')
  mesh = step_lib.make_mesh(jax.local_devices())
  settings = settings_lib.resolve(flags, workdir=workdir, config=config, step=step,
                                  num_examples=n, num_devices=mesh.size)
  tag = tag or settings_lib.default_tag(settings.norm, settings.certify)
  out_dir = os.path.join(workdir, units_lib.EVAL_DIR, tag)
  store = units_lib.UnitStore(out_dir)
  store.check(settings.as_json(), None)  # the flags first: no restore needed for them

  batches, labels = _batches(config, settings.split, settings.batch_size,
                             settings.num_examples)
  _, logits_fn, params = restore_cache.restore(workdir, step)
  ident = units_lib.identity(params, config, settings.split, np.arange(n))
  store.check(settings.as_json(), ident)
  rep, shard = step_lib.replicated(mesh), step_lib.batch_sharded(mesh)
  params = jax.device_put(params, rep)
  p = settings.p
  x0, y0, _ = batches[0]

  # The classifier the attacks see: the model, or for smoothing the smoothed surrogate.
  attack_logits_fn = logits_fn
  if certificate is not None and certificate.smoothed:
    attack_logits_fn = classifiers.smoothed_logits_fn(
        logits_fn, sigma=settings.sigma, draws=classifiers.SMOOTHING_ATTACK_SAMPLES,
        key=classifiers.attack_key(settings.seed, 'smoothing-attack-noise'),
        input_shape=x0.shape[1:])
  predict = jax.jit(lambda prm, x: jnp.argmax(logits_fn(prm, x), -1),
                    in_shardings=(rep, shard))

  # Attack functions; argument checks fire here, before anything compiles or is written.
  sub_names = {name: (['pgd'] if name == 'pgd' else
                      classifiers.autoattack_names(name, settings.version))
               for name in settings.attacks}
  num_classes = int(jax.eval_shape(logits_fn, params, x0[:1]).shape[-1])
  classifiers.check_autoattack({a: s for a, s in sub_names.items() if a != 'pgd'},
                               num_classes=num_classes, input_shape=x0.shape)
  pgd_jit = jax.jit(classifiers.pgd_fn(attack_logits_fn, p=p),
                    in_shardings=(rep, shard, shard, rep, rep))
  if 'pgd' in settings.attacks:
    try:
      pgd_jit.trace(params, x0, y0, classifiers.attack_key(settings.seed, 'pgd'),
                    jnp.float32(0.0))
    except ValueError as err:
      fail('attacks', f'pgd, L{settings.norm}: {err}')
  fns: dict[tuple[str, float], Any] = {
      (name, e): classifiers.autoattack_fn(attack_logits_fn, name, eps=e, p=p,
                                           version=settings.version)
      for name in settings.attacks for e in settings.eps if e != 0 and name != 'pgd'}
  certify_batch = None
  if certificate is not None:
    model = train.build_model(config, feed.info(config.dataset))
    certify_batch = certificate.prepare(classifiers.CertifyContext(
        settings=settings, config=config, model=model, params=params, logits_fn=logits_fn,
        predict=predict, mesh=mesh, sample_inputs=x0))

  # Nothing has been written so far; from here on only eval/<tag>/ is.
  store.begin(settings.as_json(), ident)

  # Clean predictions (cheap; recomputed on every run).
  predictions = np.concatenate([np.asarray(predict(params, x))[mask]
                                for x, _, mask in batches])

  kind = report_lib.attack_kind(settings)
  num_batches = len(batches)
  todo = [units_lib.Unit(kind, name, e, b) for name in settings.attacks
          for e in settings.eps if e != 0 for b in range(num_batches)]
  if certificate is not None:
    todo += [units_lib.Unit('certify', settings.certify, None, b)
             for b in range(num_batches)]
  results: dict = {}
  for unit in todo:
    loaded = store.load(unit)
    if loaded is not None:
      results[unit] = loaded
  resumed = len(results)
  bar = observe.Progress(start=resumed, total=len(todo), unit='batch', bar=progress,
                         log_lines=False)
  done = resumed
  compile_s: dict[str, float] = {}
  compiled: dict = {}

  try:
    for unit in todo:
      if unit in results:
        continue
      k, name, e, b = unit
      x, y, mask = batches[b]
      real = int(mask.sum())
      t0 = time.perf_counter()
      if k == 'certify':
        arrays = certify_batch(x, y, real, b)
      else:
        key = jax.random.fold_in(classifiers.attack_key(settings.seed,
                                                        classifiers.key_name(name)), b)
        if name == 'pgd':
          eps_arg = jnp.float32(e)
          if 'pgd' not in compiled:
            t1 = time.perf_counter()
            compiled['pgd'] = pgd_jit.lower(params, x, y, key, eps_arg).compile()
            compile_s['pgd'] = time.perf_counter() - t1
            t0 = time.perf_counter()
          outputs = compiled['pgd'](params, x, y, key, eps_arg)
        else:  # AutoAttack re-batches itself: no padded rows to attack
          outputs = fns[(name, e)](params, x[:real], y[:real], key)
        robust, broken_by, flag_counts, x_adv = jax.block_until_ready(outputs)
        flag_names = sorted(flag_counts)
        arrays = {
            'robust': np.asarray(robust)[:real], 'broken_by': np.asarray(broken_by)[:real],
            'flag_names': np.asarray(flag_names, dtype=str),
            'flag_counts': np.asarray([int(flag_counts[f]) for f in flag_names], np.int64)}
        if k == 'smoothed':  # the smoothed classifier's own answer at the attack's point
          arrays['smoothed_prediction'] = classifiers.smoothed_predict(
              logits_fn, params, x_adv, settings=settings, mesh=mesh,
              key=jax.random.fold_in(classifiers.attack_key(
                  settings.seed, f'predict:{name}:{e!r}'), b))[:real]
      arrays['seconds'] = np.float64(time.perf_counter() - t0)
      path = store.save(unit, arrays)
      results[unit] = arrays
      done += 1
      bar.update(done, description=f'{name} eps={e:g}' if e is not None else
                 f'certify {name}')
      if on_unit is not None:
        on_unit(os.path.basename(path))
  finally:
    bar.close()

  report, per_example = report_lib.assemble(settings, tag, config, n, labels, predictions,
                                            results, num_batches, sub_names)
  report['timing'] = {
      'wall_s': time.perf_counter() - t_start,
      'attack_s': float(sum(float(v['seconds']) for v in results.values())),
      'seconds_by_attack': {a: float(sum(float(v['seconds']) for u, v in results.items()
                                         if u[1] == a and u[0] != 'certify'))
                            for a in settings.attacks},
      'certify_s': float(sum(float(v['seconds']) for u, v in results.items()
                             if u[0] == 'certify')),
      'compile_s': compile_s, 'units': len(todo), 'units_resumed': resumed,
      'note': ('attack_s sums the units of every run that contributed (resumed ones '
               'included); compile_s is PGD\'s compilation in this run; AutoAttack and '
               'the certificates compile inside their first unit'),
      'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }
  report['environment'] = report_lib.environment(mesh.size)
  cert = report.get('certification')
  if cert and cert['total_violations']:
    logging.warning('%s', cert['warning'])
    print(f'WARNING: {cert["warning"]}', file=sys.stderr)
  render.write_report(out_dir, report, per_example)
  return report
