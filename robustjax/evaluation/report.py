"""Report assembly: the finished units of an evaluation -> ``report.json``'s dict and the
per-example arrays of ``per_example.npz``.

Every table of a report describes one classifier, named in ``report['classifier']``: the
model, or with ``--certify=smoothing`` the smoothed classifier, whose clean accuracy is
PREDICT's at x and which counts as broken at a radius when PREDICT returns another class
at an attack's point (abstaining there is no evidence of a wrong class). A point the
table's classifier misclassifies or abstains on at x is non-robust at every radius.
"""

from __future__ import annotations

import json
import os
import platform
import socket

import flax
import jax
import jaxlib
import numpy as np

import robustjax
from robustjax.evaluation import classifiers
from robustjax.evaluation.classifiers import ABSTAIN, CLEAN_MISCLASSIFIED, ROBUST

FORMAT = 1


def attack_kind(settings) -> str:
  """The attack units' kind: ``'smoothed'`` when the attacks see the smoothed classifier."""
  cert = classifiers.CERTIFICATES.get(settings.certify)
  return 'smoothed' if cert is not None and cert.smoothed else 'attack'


def classifier_name(settings) -> str:
  """The classifier every table of the report describes."""
  if attack_kind(settings) == 'smoothed':
    return (f'the smoothed classifier (Gaussian noise of sigma {settings.sigma:g}; '
            f'PREDICT with {classifiers.SMOOTHING_PREDICT_SAMPLES} samples, alpha '
            f'{settings.alpha:g}; abstentions count as wrong)')
  return 'the model (inference mode)'


def broken_names(attacks, sub_names) -> tuple[list[str], list[int]]:
  """Names of the breaking attacks (``'pgd'``, ``'apgd-ce'``, ``'autoattack:apgd-t'``,
  ...) and each attack's offset into them."""
  names, offsets = [], []
  for name in attacks:
    offsets.append(len(names))
    subs = sub_names[name]
    names += [name if (name != 'autoattack' and len(subs) == 1) else f'{name}:{s}'
              for s in subs]
  return names, offsets


def _concat(parts, key):
  return np.concatenate([r[key] for r in parts])


def assemble(settings, tag, config, n, labels, predictions, results, num_batches,
             sub_names):
  """The report dict and the per-example arrays from the unit results.

  Args:
    settings: the :class:`robustjax.evaluation.Settings`.
    tag: the output directory's name.
    config: the run's config.
    n: number of examples.
    labels: ``[n]`` int labels.
    predictions: ``[n]`` the model's clean predictions.
    results: ``{Unit or (kind, name, eps, batch): arrays}`` of every unit.
    num_batches: batches per (attack, radius).
    sub_names: attack -> the attacks it runs (``['pgd']`` for PGD).
  """
  eps_list, attacks = list(settings.eps), list(settings.attacks)
  num_e, num_a = len(eps_list), len(attacks)
  kind = attack_kind(settings)
  labels = np.asarray(labels)
  model_predictions = np.asarray(predictions)
  if kind == 'smoothed':  # the table's classifier is the smoothed one
    cert_parts = [results[('certify', settings.certify, None, b)]
                  for b in range(num_batches)]
    predictions = _concat(cert_parts, 'clean_prediction')
  clean_correct = predictions == labels
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
      robust[i, j] = _concat(parts, 'robust').astype(bool)
      per_attack_broken[i, j] = _concat(parts, 'broken_by')
      if kind == 'smoothed':
        at = _concat(parts, 'smoothed_prediction')
        smoothed_at_attack[i, j] = at
        robust[i, j] = clean_correct & ((at == ABSTAIN) | (at == labels))
        # A break of the smoothed classifier the surrogate did not see is credited to
        # the attack's first member (its point is where PREDICT disagreed).
        per_attack_broken[i, j] = np.where(
            ~clean_correct, CLEAN_MISCLASSIFIED,
            np.where(robust[i, j], ROBUST, np.maximum(per_attack_broken[i, j], 0)))
      for r in parts:
        for k, c in zip(r['flag_names'].tolist(), r['flag_counts'].tolist()):
          flags[i][j][k] = flags[i][j].get(k, 0) + int(c)
  names, offsets = broken_names(attacks, sub_names)
  worst = robust.all(axis=1)  # [E, N]
  broken_by = np.full((num_e, n), ROBUST, np.int32)
  broken_by[:, ~clean_correct] = CLEAN_MISCLASSIFIED
  for i in range(num_e):
    for j in reversed(range(num_a)):  # the first attack in the list wins
      hit = ~robust[i, j] & clean_correct & (per_attack_broken[i, j] >= 0)
      broken_by[i, hit] = offsets[j] + per_attack_broken[i, j, hit]
  rows = []
  for i, e in enumerate(eps_list):
    counts = {nm: int(np.sum(broken_by[i] == k)) for k, nm in enumerate(names)}
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
      'classifier': classifier_name(settings),
      'attacked_classifier': (
          'the model (inference mode)' if kind == 'attack' else
          f'the smoothed classifier\'s surrogate: log of the model\'s softmax averaged '
          f'over {classifiers.SMOOTHING_ATTACK_SAMPLES} fixed Gaussian draws of sigma '
          f'{settings.sigma:g}'),
      'attack_hyperparameters': {a: classifiers.attack_hparams(a, settings.version,
                                                               sub_names[a], settings.norm)
                                 for a in attacks},
      'seed': settings.seed, 'bounds': list(classifiers.BOUNDS),
      'clean_accuracy': float(clean_correct.mean()),
      'num_clean_correct': int(clean_correct.sum()),
      'results': rows,
      'robust_accuracy': {a: [r['robust_accuracy'][a] for r in rows] for a in attacks},
      'worst_case_accuracy': [r['worst_case'] for r in rows],
      'broken_by_names': names,
  }
  per_example = {
      'eps': np.asarray(eps_list, np.float64), 'attacks': np.asarray(attacks, str),
      'robust': robust, 'worst_robust': worst, 'broken_by': broken_by,
      'broken_by_per_attack': per_attack_broken,
      'broken_by_names': np.asarray(names, str).reshape(len(names)),
      'labels': labels.astype(np.int32), 'predictions': predictions.astype(np.int32),
      'clean_correct': clean_correct, 'indices': np.arange(n, dtype=np.int64),
  }
  if settings.certify:
    cert, arrays = certification(settings, labels, clean_correct, worst, results,
                                 num_batches)
    report['certification'] = cert
    per_example.update(arrays)
    if kind == 'smoothed':
      per_example['smoothed_prediction_at_attack'] = smoothed_at_attack
      per_example['model_predictions'] = model_predictions.astype(np.int32)
      report['model_clean_accuracy'] = float(np.mean(model_predictions == labels))
  return report, per_example


def certification(settings, labels, clean_correct, worst, results, num_batches):
  """The certified curve, the empirical one of the same classifier, and violations."""
  parts = [results[('certify', settings.certify, None, b)] for b in range(num_batches)]
  radius = _concat(parts, 'radius')
  prediction = _concat(parts, 'prediction')
  is_certificate = _concat(parts, 'is_certificate').astype(bool)
  radii = np.asarray(settings.eps, np.float64)
  # Certified at r: a certificate for the true label with radius > r (the certified
  # ball is open). Abstentions, misclassified points and results that are not
  # certificates never count.
  correct = prediction == labels
  certified = (is_certificate & correct)[None] & (radius[None] > radii[:, None])  # [R, N]
  # Empirical at r: the table's classifier is correct at x and no attack broke it.
  empirical = worst & clean_correct[None]
  description, hparams = classifiers.CERTIFICATES[settings.certify].describe(settings)
  violations = certified & ~empirical
  curve = [{'radius': float(r), 'certified_accuracy': float(certified[i].mean()),
            'empirical_accuracy': float(empirical[i].mean()),
            'violations': int(violations[i].sum())} for i, r in enumerate(radii)]
  total = int(violations.sum())
  listed = [{'radius': float(radii[i]), 'count': int(violations[i].sum()),
             'indices': np.flatnonzero(violations[i])[:50].tolist()}
            for i in range(len(radii)) if violations[i].any()]
  cert = {
      'method': settings.certify, 'description': description, 'radii': radii.tolist(),
      'classifier': classifier_name(settings),
      'hyperparameters': hparams,
      'empirical_attack': ' + '.join(settings.attacks) + ' L2',
      'curve': curve,
      'certified_accuracy': [c['certified_accuracy'] for c in curve],
      'empirical_accuracy': [c['empirical_accuracy'] for c in curve],
      'abstentions': int(np.sum(prediction == ABSTAIN)) if attack_kind(settings) ==
                     'smoothed' else 0,
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


def environment(mesh_size: int) -> dict:
  """Library versions and the machine, for the report."""
  devices = jax.local_devices()
  return {
      'python': platform.python_version(), 'jax': jax.__version__,
      'jaxlib': jaxlib.__version__, 'flax': flax.__version__, 'numpy': np.__version__,
      'robustjax': robustjax.__version__,
      'machine': {'platform': platform.platform(), 'processor': platform.machine(),
                  'hostname': socket.gethostname(), 'cpu_count': os.cpu_count(),
                  'backend': jax.default_backend(),
                  'devices': [str(getattr(d, 'device_kind', d.platform)) for d in devices],
                  'devices_used': mesh_size},
  }
