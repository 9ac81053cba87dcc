"""Catastrophic overfitting made visible: single-step vs multi-step accuracy in training.

Single-step adversarial training can overfit catastrophically (Wong et al. 2020, "Fast is
better than free"; Andriushchenko & Flammarion 2020): within a few steps the accuracy
under a multi-step attack (PGD) collapses while the accuracy under the single-step attack
the model is trained against (FGSM) rises, often above the clean accuracy. With
``config.eval.monitor_every_steps > 0`` the run measures, every that many steps and at
its last step, on the first ``config.eval.monitor_examples`` examples of the evaluation
split: clean accuracy, accuracy under FGSM (one step of size ε from x) and under the
evaluation's PGD (``eval.steps``, ``eval.step_size``, one random start), and their gap
``fgsm − pgd``. Rows go to ``metrics.jsonl`` with ``split: 'monitor'``.

The rule (:func:`catastrophic_overfitting`): an evaluation ``t`` is flagged when the PGD
accuracy has dropped by at least :data:`DROP` (20 points) from its best value so far,
reached at evaluation ``b <= t``, while the FGSM accuracy has not fallen
(``fgsm_t >= fgsm_b``). The first flagged step is logged as a warning and written to
``final_metrics.json`` (``catastrophic_overfitting``, ``catastrophic_overfitting_step``).
A PGD drop with a falling FGSM accuracy is ordinary degradation and is not flagged.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks
from robustjax import models

DROP = 0.2  # PGD accuracy below its best by this much (with FGSM not falling) = CO
SPLIT = 'monitor'  # metrics.jsonl rows of the monitor
RULE = (f'PGD accuracy at least {100 * DROP:.0f} points below its best so far while FGSM '
        f'accuracy is at least its value at that best')


def make_monitor(model, *, eps: float, p: float, steps: int, step_size: float = 0.0):
  """``fn(params, batch_stats, x, y, key) -> (clean, fgsm, pgd)`` correct counts, jitted.

  Inference-mode logits (BatchNorm running averages).
  """
  def logits_fn(variables, inputs):
    params, stats = variables
    return models.logits_fn_for(model, {'batch_stats': stats} if stats else {})(params,
                                                                              inputs)

  def fn(params, batch_stats, x, y, key):
    variables = (params, batch_stats)
    ok = lambda points: jnp.argmax(logits_fn(variables, points), -1) == y
    clean = ok(x)
    x_fgsm = attacks.fgsm(logits_fn, variables, (x, y), eps=eps, p=p)
    kwargs = {'step_size': step_size} if step_size else {}
    x_pgd = attacks.pgd(logits_fn, variables, (x, y), rng=key, eps=eps, p=p,
                        steps=max(int(steps), 1), **kwargs)
    return jnp.sum(clean), jnp.sum(clean & ok(x_fgsm)), jnp.sum(clean & ok(x_pgd))

  return jax.jit(fn)


def measure(fn, params, batch_stats, x: np.ndarray, y: np.ndarray, key) -> dict:
  """One monitor evaluation: accuracies and the single-minus-multi-step gap."""
  counts = [float(np.asarray(c)) for c in fn(params, batch_stats, x, y, key)]
  n = max(len(y), 1)
  clean, fgsm, pgd = (c / n for c in counts)
  return {'clean_accuracy': clean, 'fgsm_accuracy': fgsm, 'pgd_accuracy': pgd,
          'single_minus_multi_step': fgsm - pgd}


def catastrophic_overfitting(history: Sequence[dict], *, drop: float = DROP) -> dict:
  """Applies the rule of the module docstring to monitor rows in step order.

  Args:
    history: dicts with ``step``, ``pgd_accuracy``, ``fgsm_accuracy``.
    drop: the PGD drop from its best that counts (fraction, default 0.2).

  Returns:
    ``{'catastrophic_overfitting': bool, 'catastrophic_overfitting_step': first flagged
    step or None, 'best_pgd_accuracy', 'best_pgd_step', 'rule'}``.
  """
  best = None
  flagged_step = None
  for row in history:
    if best is None or row['pgd_accuracy'] > best['pgd_accuracy']:
      best = row
    if (flagged_step is None and best['pgd_accuracy'] - row['pgd_accuracy'] >= drop
        and row['fgsm_accuracy'] >= best['fgsm_accuracy']):
      flagged_step = int(row['step'])
  return {'catastrophic_overfitting': flagged_step is not None,
          'catastrophic_overfitting_step': flagged_step,
          'best_pgd_accuracy': None if best is None else float(best['pgd_accuracy']),
          'best_pgd_step': None if best is None else int(best['step']),
          'rule': RULE}


def read_history(workdir: str, metrics_file: str = 'metrics.jsonl') -> list[dict]:
  """The monitor rows of a run's ``metrics.jsonl``, in step order."""
  path = os.path.join(workdir, metrics_file)
  rows: list[dict[str, Any]] = []
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        if row.get('split') == SPLIT:
          rows.append(row)
  return sorted(rows, key=lambda r: r['step'])
