r"""The papers' comparisons, several seeds, judged by AutoAttack, written to RESULTS.md.

  python -m experiments.reproduce --suite=digits --seeds=3 --out=/tmp/repro_digits
  python -m experiments.reproduce --suite=digits --quick --out=/tmp/repro_smoke   # CI smoke
  python -m experiments.reproduce --suite=cifar10 --seeds=3 --out=/data/repro_cifar10  # GPU
  python -m experiments.reproduce --suite=fashion_mnist --seeds=3 --only_seeds=0,1 --out=/tmp/repro_fashion &
  python -m experiments.reproduce --suite=fashion_mnist --seeds=3 --only_seeds=2 --out=/tmp/repro_fashion
  python -m experiments.reproduce --suite=fashion_mnist --seeds=3 --out=/tmp/repro_fashion  # the report

Run from the repository root. For every method of the suite and every seed it trains the
method's config (``configs/<method>_<dataset>.py``, ``config.seed`` = the seed) into
``OUT/runs/<method>/seed<k>``, then evaluates the run with :func:`robustjax.evaluate.run`:

- clean accuracy; robust accuracy under AutoAttack ('standard') and PGD-20 at the suite's
  Linf radii (and its L2 radii for the L2 methods), with AutoAttack's masking flags;
- attack ARA and BTR ARA (Woods et al. 2019, eq. 2-4, :mod:`robustjax.metrics.ara`);
- CRC certified accuracy at L2 radii for the smooth MLPs (CRT and a standard softplus
  MLP; ``--certify=crc`` of :mod:`robustjax.evaluate`);

and the cost of each method's training step as a ratio to standard training's, timed in
this process (``experiments/benchmarks/train_throughput.py``'s ``time_method``). A
finished run or evaluation is skipped when the command is run again, so a killed study
resumes at the run it was in. The summary goes to ``OUT/results.json``; with
``--results`` (default ``RESULTS.md`` at the repository root for full runs, none for
``--quick``) the Markdown report and its figures (``results/<suite>_*.png``) are written
there. Nothing in RESULTS.md is written by hand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from robustjax.training import workdir as workdir_lib  # pylint: disable=wrong-import-position

INF = math.inf


class Method:
  """One row of a suite: a config (optionally changed) and how it is evaluated."""

  def __init__(self, name: str, config: str, *, label: str, l2: bool = False,
               certify: bool = False, init_from: str = '',
               change: Callable[[Any], None] | None = None):
    self.name, self.config, self.label = name, config, label
    self.l2, self.certify, self.init_from, self.change = l2, certify, init_from, change


def _without_lipschitz(c):
  """Woods et al.'s recipe without the Lipschitz term: half-half L2,min AT alone."""
  del c.regularizers['lipschitz']
  c.controller.name = 'none'
  c.controller.term = ''


def _without_regularizers(c):
  """Standard training of the same model (the smooth-MLP baseline of CRT)."""
  for name in list(c.regularizers.keys()):
    del c.regularizers[name]
  c.nominal_weight = 1.0
  c.eval.p, c.eval.eps = INF, 0.1


def _suite_rows(dataset: str) -> list[Method]:
  """Every row of a suite, whether or not its config exists for the dataset."""
  d = dataset if dataset != 'cifar10' else 'cifar'
  rows = [
      Method('standard', f'standard_{d}', label='standard'),
      Method('at', f'at_{d}', label='adversarial training (PGD-7)'),
      Method('trades', f'trades_{d}', label='TRADES'),
      Method('gradnorm', f'gradnorm_{d}', label='gradient norm'),
      Method('cure', f'cure_{d}', label='CURE'),
      Method('scorpio', f'scorpio_{d}', label='SCORPIO'),
      Method('soar', f'soar_{d}', label='SOAR (fine-tuned from standard)',
             init_from='standard'),
      Method('llr', f'llr_{d}', label='LLR'),
      Method('fgsm', f'fgsm_{d}', label='FGSM-RS (Wong et al.)'),
      Method('n_fgsm', f'n_fgsm_{d}', label='N-FGSM'),
      Method('gradalign', f'gradalign_{d}', label='FGSM + GradAlign'),
      Method('elle', f'elle_{d}', label='FGSM + ELLE'),
      Method('elle_a', f'elle_a_{d}', label='FGSM + ELLE-A (adaptive lambda)'),
      Method('lipschitz', f'lipschitz_{d}', label='stochastic Lipschitz + half-half L2,min',
             l2=True),
      Method('l2min', f'lipschitz_{d}', label='half-half L2,min alone (no Lipschitz)',
             l2=True, change=_without_lipschitz),
      Method('crt', f'crt_{d}', label='CRT (softplus MLP)', l2=True, certify=True),
      Method('softplus', f'crt_{d}', label='standard softplus MLP', l2=True, certify=True,
             change=_without_regularizers),
  ]
  return rows + _certified_training_rows(dataset)


def _has_config(method: Method) -> bool:
  return os.path.exists(os.path.join(ROOT, 'configs', f'{method.config}.py'))


def _methods(dataset: str) -> list[Method]:
  """The rows of a suite that have a config for the dataset."""
  return [m for m in _suite_rows(dataset) if _has_config(m)]


def missing_rows(dataset: str) -> list[str]:
  """``'name (configs/<config>.py)'`` for each row of the suite without a config."""
  return [f'{m.name} (configs/{m.config}.py)' for m in _suite_rows(dataset)
          if not _has_config(m)]


SUITES = {
    'digits': dict(dataset='digits', linf=(0.05, 0.1, 0.15), l2=(0.5, 1.0),
                   radii=(0.0, 0.1, 0.2, 0.3, 0.5), num_examples=0),
    # Fashion-MNIST: the digits rows on 28x28 images, base.FASHION_EPOCHS = 1 epoch each
    # (small CNN; CRT and the certified rows on the 784-1024-10 softplus MLP). Clean
    # accuracy on all 10,000 test images (clean_examples=0); PGD-20 on the first 1,000 at
    # the whole grid; AutoAttack (and PGD-20 again, for the gap on the same points) on the
    # first 100 at the training radii only (Linf 0.1, L2 1.58); ARA on the same 100 by
    # Woods et al.'s own Algorithm 1 (450 iterations: the bisection's multi-targeted
    # search is 1,800 gradients per point and took 5 min per run); AutoAttack costs about
    # 0.25-0.5 CPU-s per robust point and radius on the small CNN (docs/design.md), so
    # the full grid on 1,000 points (~20,000 robust point-radii per seed) would take
    # 10-20 CPU-h for 3 seeds, against the 2.5 h wall budget on 2 cores.
    'fashion_mnist': dict(dataset='fashion_mnist', linf=(0.05, 0.1, 0.15),
                          l2=(0.5, 1.0, 1.58), radii=(0.0, 0.5, 1.0, 1.58),
                          num_examples=1000, clean_examples=0,
                          autoattack=dict(linf=(0.1,), l2=(1.58,), num_examples=100),
                          ara=dict(method='ticktock', steps=450, num_examples=100),
                          # CRC on the first 200 (the dual solve took ~4 min per 500
                          # points of the 784-1024-10 MLP with three seed processes on
                          # the 2 cores); local CRC solves one 784x784 eigenvalue problem
                          # per point, class and radius step (about 2.5 CPU-s per point
                          # and step): 8 points, 2 steps
                          crc_examples=200,
                          local_crc=dict(num_examples=8, radius_steps=2)),
    'mnist': dict(dataset='mnist', linf=(0.1, 0.2, 0.3), l2=(1.0, 2.0),
                  radii=(0.0, 0.5, 1.0, 1.58), num_examples=1000),
    'svhn': dict(dataset='svhn', linf=(4 / 255, 8 / 255), l2=(0.25, 0.5),
                 radii=(0.0, 0.25, 0.5), num_examples=1000),
    'cifar10': dict(dataset='cifar10', linf=(2 / 255, 4 / 255, 8 / 255), l2=(0.25, 0.5),
                    radii=(0.0, 0.25, 0.5), num_examples=1000),
}

# The papers' own CIFAR-10 numbers (clean / robust under the attack each paper used, and
# AutoAttack where RobustBench lists the model), for the table the CIFAR suite fills.
PAPER_CIFAR10 = [
    ('standard', 'SOAR, Table 1', '86.33', '0.39 (PGD-20, 8/255)', '-'),
    ('at', 'SOAR, Table 1 (Adv7)', '70.71', '36.03 (PGD-20, 8/255)', '-'),
    ('soar', 'SOAR, Table 1', '81.73', '32.83 (PGD-20, 8/255)', '-'),
    ('cure', 'Moosavi-Dezfooli et al. 2019 (RobustBench)', '83.11', '41.4 (PGD, 8/255)',
     '38.50'),
    ('llr', 'Qin et al. 2019 (RobustBench)', '86.28', '-', '52.84'),
]


def load_config(method: Method, seed: int, runs_dir: str, quick: bool):
  module = importlib.import_module(f'configs.{method.config}')
  c = module.get_config()
  if method.change is not None:
    method.change(c)
  c.seed = seed
  if method.init_from:
    c.init_from = os.path.join(runs_dir, method.init_from, f'seed{seed}')
  if quick:
    c.num_train_steps = 4
    c.checkpoint_every_steps = 4
    c.log_every_steps = 2
    if c.dataset.name != 'digits':  # training's own end-of-run PGD on a few images only
      c.eval.num_examples = 64
    for t in c.regularizers.values():
      for spec in t.get('schedules', {}).values():
        spec['steps'] = min(int(spec['steps']), 2)
        if 'begin' in spec:
          spec['begin'] = min(int(spec['begin']), 2)
    if c.eval.get('monitor_every_steps', 0):
      c.eval.monitor_every_steps = 2
  return c


def _done(path: str) -> bool:
  return os.path.exists(path)


def _diverged_path(workdir: str) -> str:
  return os.path.join(workdir, 'diverged.json')


def _diverged(workdir: str) -> dict | None:
  """``{'diverged': message, 'seconds'}`` of a run whose training stopped on a
  non-finite loss (it has no checkpoint to evaluate; a rerun would diverge again), else
  None."""
  path = _diverged_path(workdir)
  return _read_json(path) if _done(path) else None


def _read_json(path: str) -> dict:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  workdir_lib.atomic_write(path, json.dumps(obj, indent=1, default=float))


def evaluate_run(workdir: str, method: Method, suite: dict, *, quick: bool,
                 train_seconds: float = 0.0) -> dict:
  """Every measurement of one trained run, cached in ``workdir/reproduce.json``.

  ``seconds`` in the result is the run's training plus evaluation time.
  """
  start = time.time()
  from robustjax import evaluate  # pylint: disable=g-import-not-at-top
  from robustjax import metrics  # pylint: disable=g-import-not-at-top
  from robustjax import training  # pylint: disable=g-import-not-at-top
  from robustjax.training import feed  # pylint: disable=g-import-not-at-top
  cache = os.path.join(workdir, 'reproduce.json')
  if _done(cache):
    return _read_json(cache)
  n = 16 if quick else suite['num_examples']
  common = dict(num_examples=n, progress=False, version='standard', seed=0)
  out = {'linf': {}, 'flags': {}}
  for kind, norm in (('linf', 'inf'), ('l2', '2')):
    if kind == 'l2' and not method.l2:
      continue
    out[kind] = _robust_accuracies(workdir, suite, kind, norm, quick=quick,
                                   flags=out['flags'], common=common)
    if kind == 'linf':
      out['clean'] = out[kind].pop('clean')
    else:
      out[kind].pop('clean')
  if method.certify:
    # The cross-check attack: AutoAttack, or PGD-20 under a reduced AutoAttack protocol.
    check = ['pgd'] if suite.get('autoattack') else ['autoattack']
    cert = evaluate.run(workdir, certify='crc', radii=list(suite['radii']), attacks=check,
                        tag=certify_tag(f'reproduce-crc-{check[0]}', suite),
                        **dict(common, num_examples=certify_examples(suite, quick)))
    out['crc'] = cert['certification']
  if method.name in BOUND_ROWS and not quick:  # smoke-tested by --section=bounds --quick
    out['bounds'] = bound_certificates(workdir, method, suite, quick=quick)
  config, logits_fn, params = training.restore(workdir)
  if 'clean_examples' in suite:  # clean accuracy on more test images than the attacks
    out['clean_subset'] = out['clean']
    out['clean'], out['clean_examples'] = clean_accuracy(
        logits_fn, params, config.dataset, num_examples=n if quick else
        suite['clean_examples'])
  # The suite's 'ara' settings: metrics.ara's keywords and the points it runs on.
  ara = dict(suite.get('ara', {}))
  n_ara = n if quick else ara.pop('num_examples', n)
  x, y = feed.eval_arrays(config.dataset, split='test', num_examples=n_ara)
  key = jax.random.PRNGKey(0)
  search = dict(search_steps=3, steps=5) if quick else ara
  out['attack_ara'] = float(metrics.attack_ara(logits_fn, params, (x, y), rng=key,
                                               **search)['ara'])
  out['btr_ara'] = float(metrics.btr_ara(logits_fn, params, (x, y), rng=key,
                                         **search)['ara'])
  out['seconds'] = time.time() - start + train_seconds
  _write_json(cache, out)
  return out


def _robust_accuracies(workdir: str, suite: dict, kind: str, norm: str, *, quick: bool,
                       flags: dict, common: dict) -> dict:
  """``{'clean', 'pgd': {eps: acc}, 'autoattack': {eps: acc}[, 'pgd_aa_subset': ...]}``.

  PGD-20 runs at every radius of the suite's grid on its ``num_examples`` points.
  AutoAttack runs there too, unless the suite names an ``autoattack`` protocol (radii
  and a smaller subset: the 2-core budget); then PGD-20 runs again on AutoAttack's
  subset at its radii (``pgd_aa_subset``) so that the PGD-20 vs AutoAttack gap compares
  the same points. AutoAttack's masking flags are added to ``flags``.
  """
  from robustjax import evaluate  # pylint: disable=g-import-not-at-top
  grid = list(suite[kind])
  protocol = suite.get('autoattack')
  both = ['pgd', 'autoattack']
  if protocol is not None and quick:
    protocol = dict(protocol, num_examples=8)
  if protocol is None:
    rep = evaluate.run(workdir, eps=grid, norm=norm, attacks=both, tag=f'reproduce-{kind}',
                       **common)
    _add_flags(flags, rep)
    return {'clean': rep['clean_accuracy'],
            **{a: dict(zip(map(str, grid), rep['robust_accuracy'][a])) for a in both}}
  pgd = evaluate.run(workdir, eps=grid, norm=norm, attacks=['pgd'],
                     tag=f'reproduce-{kind}-pgd', **common)
  aa_grid = list(protocol[kind])
  aa = evaluate.run(workdir, eps=aa_grid, norm=norm, attacks=both,
                    tag=f'reproduce-{kind}-autoattack',
                    **dict(common, num_examples=protocol['num_examples']))
  _add_flags(flags, aa)
  return {'clean': pgd['clean_accuracy'],
          'pgd': dict(zip(map(str, grid), pgd['robust_accuracy']['pgd'])),
          'autoattack': dict(zip(map(str, aa_grid), aa['robust_accuracy']['autoattack'])),
          'pgd_aa_subset': dict(zip(map(str, aa_grid), aa['robust_accuracy']['pgd']))}


def certify_examples(suite: dict, quick: bool) -> int:
  """Test points the certificates (CRC, IBP, CROWN) run on: the suite's
  ``crc_examples`` (a budget), else all of its points."""
  return 16 if quick else suite.get('crc_examples', suite['num_examples'])


def certify_tag(base: str, suite: dict) -> str:
  """An evaluation tag that names a reduced certificate subset (so its units are never
  resumed from a run on other points)."""
  return base + (f'-n{suite["crc_examples"]}' if 'crc_examples' in suite else '')


def _add_flags(total: dict, report: dict) -> None:
  for k, v in _sum_flags(report).items():
    total[k] = total.get(k, 0) + v


def clean_accuracy(logits_fn, params, dataset, *, num_examples: int = 0,
                   batch_size: int = 1000) -> tuple[float, int]:
  """``(accuracy, n)`` on the first ``num_examples`` (0 = all) test images."""
  from robustjax.training import feed  # pylint: disable=g-import-not-at-top
  x, y = feed.eval_arrays(dataset, split='test', num_examples=num_examples)
  predict = jax.jit(lambda p, xs: jax.numpy.argmax(logits_fn(p, xs), -1))
  correct = 0
  for i in range(0, len(y), batch_size):
    xs = x[i:i + batch_size]
    pad = batch_size - len(xs)  # one compilation: the last batch is padded
    if pad:
      xs = np.concatenate([xs, np.zeros((pad, *xs.shape[1:]), xs.dtype)])
    pred = np.asarray(predict(params, xs))[:batch_size - pad]
    correct += int((pred == y[i:i + batch_size]).sum())
  return correct / len(y), len(y)


def _sum_flags(report: dict) -> dict[str, int]:
  total: dict[str, int] = {}
  for row in report['results']:
    for flags in row.get('autoattack_flags', {}).values():
      for k, v in flags.items():
        total[k] = total.get(k, 0) + int(v)
  return total


def step_costs(methods: list[Method], runs_dir: str, *, steps: int,
               kind: str = 'digits') -> dict[str, float]:
  """Median seconds per train step of each method's config, timed in this process
  (``kind``: the benchmark model, :func:`train_throughput.build`)."""
  from experiments.benchmarks import train_throughput  # pylint: disable=g-import-not-at-top
  from robustjax.training import step as step_lib  # pylint: disable=g-import-not-at-top
  mesh = step_lib.make_mesh()
  costs = {}
  for m in methods:
    config = load_config(m, 0, runs_dir, quick=False)
    costs[m.name], _ = train_throughput.time_method(config, kind, steps, mesh)
  return costs


def _mean_std(values: list[float]) -> tuple[float, float]:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return float('nan'), float('nan')
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aa_radii(suite: dict, kind: str) -> tuple[float, ...]:
  """The radii at which the suite runs AutoAttack (``kind``: 'linf' or 'l2')."""
  return tuple(suite.get('autoattack', {}).get(kind, suite[kind]))


def pgd_on_aa_points(suite: dict) -> str:
  """The results key of PGD-20 on AutoAttack's points (its subset, if the suite has one)."""
  return 'pgd_aa_subset' if 'autoattack' in suite else 'pgd'


def headline_eps(suite: dict) -> float:
  """The Linf radius the orderings and summaries judge at: AutoAttack's middle one."""
  radii = aa_radii(suite, 'linf')
  return radii[len(radii) // 2]


def aggregate(results: dict[str, list[dict]], methods: list[Method], suite: dict,
              costs: dict[str, float]) -> dict:
  """Mean and std over seeds of every metric, per method."""
  table = {}
  for m in methods:
    runs, diverged = _trained(results.get(m.name, []))
    if not runs:
      continue
    row: dict[str, Any] = {'label': m.label + _diverged_note(diverged, len(runs)),
                           'seeds': len(runs), 'diverged': len(diverged)}
    row['clean'] = _mean_std([r['clean'] for r in runs])
    for kind in ('linf', 'l2'):
      if kind not in runs[0]:
        continue
      grid = sorted(set(suite[kind]) | set(aa_radii(suite, kind)))
      for a in ('pgd', 'autoattack', 'pgd_aa_subset'):
        for e in grid:
          row[f'{kind}/{a}/{e:g}'] = _mean_std([r[kind].get(a, {}).get(str(e))
                                                 for r in runs])
    row['attack_ara'] = _mean_std([r['attack_ara'] for r in runs])
    row['btr_ara'] = _mean_std([r['btr_ara'] for r in runs])
    flags: dict[str, int] = {}
    for r in runs:
      for k, v in r['flags'].items():
        flags[k] = flags.get(k, 0) + v
    row['flags'] = flags
    if 'crc' in runs[0]:
      radii = runs[0]['crc'].get('radii', list(suite['radii']))
      row['crc_radii'] = radii
      row['crc'] = [_mean_std([r['crc']['certified_accuracy'][i] for r in runs])
                    for i in range(len(radii))]
    if m.name in costs and 'standard' in costs:
      row['step_cost'] = costs[m.name] / costs['standard']
    if 'bounds' in runs[0]:
      row.update(aggregate_bounds(runs))
    table[m.name] = row
  return table


def _trained(runs: list[dict]) -> tuple[list[dict], list[dict]]:
  """``(evaluated runs, diverged runs)`` of one row."""
  return ([r for r in runs if 'diverged' not in r], [r for r in runs if 'diverged' in r])


def _diverged_note(diverged: list[dict], trained: int) -> str:
  if not diverged:
    return ''
  return (f' ({len(diverged)} of {len(diverged) + trained} seeds stopped on a non-finite '
          f'loss and are left out)')


def diverged_rows(results: dict[str, list[dict]], methods: list[Method]) -> list[str]:
  """``'label (message)'`` of the rows whose every seed stopped on a non-finite loss."""
  out = []
  for m in methods:
    runs, diverged = _trained(results.get(m.name, []))
    if diverged and not runs:
      out.append(f'{m.label} ({diverged[0]["diverged"]})')
  return out


def _fmt(ms: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
  mean, std = ms
  if math.isnan(mean):
    return '-'
  return f'{scale * mean:.{digits}f} ± {scale * std:.{digits}f}'


def _figures(table: dict, suite: dict, fig_dir: str, name: str) -> list[str]:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  os.makedirs(fig_dir, exist_ok=True)
  paths = []
  # The curve is AutoAttack's where it ran on the whole grid, else PGD-20's.
  curve = 'autoattack' if aa_radii(suite, 'linf') == tuple(suite['linf']) else 'pgd'
  grid = (0.0,) + tuple(suite['linf'])
  fig, ax = plt.subplots(figsize=(7, 4.5))
  markers = 'osD^vP*Xh<>p'
  for i, (m, row) in enumerate(table.items()):
    means = [row['clean'][0]] + [row[f'linf/{curve}/{e:g}'][0] for e in suite['linf']]
    stds = [row['clean'][1]] + [row[f'linf/{curve}/{e:g}'][1] for e in suite['linf']]
    # 12 methods: distinct colours from tab20 and distinct markers, never a repeat.
    ax.errorbar(grid, means, yerr=stds, marker=markers[i % len(markers)], capsize=3,
                label=m, color=plt.cm.tab20(i % 20), linestyle='-' if i < 10 else '--')
  ax.set_xlabel('Linf eps (pixels in [0, 1])')
  ax.set_ylabel('AutoAttack robust accuracy' if curve == 'autoattack' else
                'PGD-20 robust accuracy')
  ax.set_title(f'{name}: accuracy vs eps (mean ± std over seeds)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  paths.append(os.path.join(fig_dir, f'{name}_accuracy_vs_eps.png'))
  fig.tight_layout()
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  mid = headline_eps(suite)
  for kind, xkey, xlabel in (('clean', 'clean', 'clean accuracy'),
                             ('cost', 'step_cost', 'train step cost (x standard)')):
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for m, row in table.items():
      if xkey not in row:
        continue
      x = row[xkey][0] if isinstance(row[xkey], tuple) else row[xkey]
      xerr = row[xkey][1] if isinstance(row[xkey], tuple) else None
      y, yerr = row[f'linf/autoattack/{mid:g}']
      ax.errorbar([x], [y], xerr=xerr, yerr=yerr, marker='o', capsize=3)
      ax.annotate(m, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f'AutoAttack robust accuracy, Linf eps={mid:g}')
    ax.grid(alpha=0.3)
    if kind == 'cost':
      ax.set_xscale('log')
    paths.append(os.path.join(fig_dir, f'{name}_robust_vs_{kind}.png'))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
  return paths


def _verdict(holds: bool) -> str:
  return 'reproduces' if holds else 'does not reproduce'


def orderings(table: dict, suite: dict) -> list[str]:
  """Each paper's claimed ordering, checked against the measured means."""
  mid = headline_eps(suite)
  aa = lambda m: table[m][f'linf/autoattack/{mid:g}'][0] if m in table else float('nan')
  pct = lambda v: f'{100 * v:.1f}%'
  lines = []
  if all(m in table for m in ('scorpio', 'cure', 'gradnorm', 'at')):
    holds = aa('scorpio') > aa('cure') and aa('scorpio') > aa('gradnorm')
    lines.append(
        f'- **SCORPIO (Table 2)**: SCORPIO above CURE and gradient norm, close to AT. '
        f'AutoAttack at eps={mid:g}: SCORPIO {pct(aa("scorpio"))}, CURE {pct(aa("cure"))}, '
        f'gradient norm {pct(aa("gradnorm"))}, AT {pct(aa("at"))}: the ordering over CURE '
        f'and gradient norm {_verdict(holds)}; SCORPIO is '
        f'{abs(100 * (aa("at") - aa("scorpio"))):.1f} points '
        f'{"below" if aa("scorpio") < aa("at") else "above"} AT.')
  if all(m in table for m in ('soar', 'at', 'standard')):
    clean = lambda m: table[m]['clean'][0]
    holds = clean('soar') > clean('at') and aa('soar') > aa('standard')
    lines.append(
        f'- **SOAR (Table 1)**: SOAR keeps more clean accuracy than AT (81.7% vs 70.7%) '
        f'with robustness near AT under PGD (32.8% vs 36.0% PGD-20). Here: clean SOAR '
        f'{pct(clean("soar"))} vs AT {pct(clean("at"))}; AutoAttack SOAR {pct(aa("soar"))} '
        f'vs AT {pct(aa("at"))}, CURE {pct(aa("cure")) if "cure" in table else "-"}, '
        f'standard {pct(aa("standard"))}: "more clean accuracy than AT and more robust than '
        f'standard" {_verdict(holds)}; robustness '
        f'{"near" if aa("at") - aa("soar") < 0.05 else "well below"} AT.')
  if all(m in table for m in ('llr', 'at')):
    holds = aa('llr') >= aa('at') - 0.01
    lines.append(
        f'- **LLR**: LLR matches or beats AT at the same eps. AutoAttack LLR '
        f'{pct(aa("llr"))} vs AT {pct(aa("at"))}: {_verdict(holds)}.')
  if all(m in table for m in ('lipschitz', 'l2min')):
    a1, a0 = table['lipschitz']['attack_ara'][0], table['l2min']['attack_ara'][0]
    b1, b0 = table['lipschitz']['btr_ara'][0], table['l2min']['btr_ara'][0]
    holds = a1 > a0 and b1 > b0
    lines.append(
        f'- **Woods et al. (Table II)**: the Lipschitz term raises ARA over half-half '
        f'L2,min training alone. Attack ARA {a1:.4f} vs {a0:.4f}, BTR ARA {b1:.4f} vs '
        f'{b0:.4f}: {_verdict(holds)}.')
  if all(m in table for m in ('crt', 'softplus')) and 'crc' in table['crt']:
    radii = table['crt']['crc_radii']
    pairs = ', '.join(f'r={r:g}: {pct(c[0])} vs {pct(s[0])}' for r, c, s in
                      zip(radii, table['crt']['crc'], table['softplus']['crc']))
    holds = all(c[0] >= s[0] for r, c, s in
                zip(radii, table['crt']['crc'], table['softplus']['crc']) if r > 0)
    lines.append(
        f'- **CRT / CRC**: CRT raises CRC certified accuracy (r > 0) over a standard smooth '
        f'MLP, at some cost in clean accuracy (r = 0). '
        f'CRT vs standard softplus MLP ({pairs}): {_verdict(holds)}.')
  lines += _clean_cost_ordering(table) + _single_step_ordering(table, aa, mid)
  lines += _gap_lines(table, suite)
  return lines


def _clean_cost_ordering(table: dict) -> list[str]:
  """The clean-accuracy price of AT against the regularizers (SOAR, LLR, CURE, SCORPIO)."""
  others = [m for m in ('soar', 'llr', 'cure', 'scorpio', 'gradnorm') if m in table]
  if 'at' not in table or not others:
    return []
  clean = lambda m: table[m]['clean'][0]
  above = [m for m in others if clean(m) > clean('at')]
  listed = ', '.join(f'{m} {100 * clean(m):.1f}%' for m in others)
  return [f'- **Clean accuracy, AT against the regularizers** (SOAR, Table 1: AT costs '
          f'clean accuracy that the regularizers keep): AT {100 * clean("at"):.1f}%; '
          f'{listed}. Above AT: {", ".join(above) or "none"}; the claim '
          f'{_verdict(len(above) == len(others))} for every one of them.']


def _single_step_ordering(table: dict, aa, mid: float) -> list[str]:
  """N-FGSM, GradAlign, ELLE and ELLE-A against plain FGSM-RS (the single-step papers'
  claim)."""
  fixes = [m for m in ('n_fgsm', 'gradalign', 'elle', 'elle_a') if m in table]
  if 'fgsm' not in table or not fixes:
    return []
  listed = ', '.join(f'{m} {100 * aa(m):.1f}%' for m in fixes)
  holds = all(aa(m) >= aa('fgsm') - 0.01 for m in fixes)
  return [f'- **Single-step training** (Andriushchenko & Flammarion 2020; de Jorge et al. '
          f'2022; Abad Rocamora et al. 2024): GradAlign, N-FGSM, ELLE and ELLE-A are at '
          f'least as robust as FGSM-RS. AutoAttack at eps={mid:g}: '
          f'FGSM-RS {100 * aa("fgsm"):.1f}%, '
          f'{listed}: {_verdict(holds)} (within 1 point counts as "at least").']


def _gap_lines(table: dict, suite: dict) -> list[str]:
  """PGD-20 minus AutoAttack on the same points, per method (masking shows as a gap)."""
  eps = headline_eps(suite)
  pgd_key = f'linf/{pgd_on_aa_points(suite)}/{eps:g}'
  gaps = {m: row[pgd_key][0] - row[f'linf/autoattack/{eps:g}'][0]
          for m, row in table.items() if pgd_key in row}
  gaps = {m: g for m, g in gaps.items() if not math.isnan(g)}
  if not gaps:
    return []
  listed = ', '.join(f'{m} {100 * g:.1f}' for m, g in
                     sorted(gaps.items(), key=lambda kv: -kv[1]))
  big = [m for m, g in gaps.items() if g > 0.05]
  return [f'- **PGD-20 vs AutoAttack** at Linf eps={eps:g}, on the same points (points, '
          f'largest first): {listed}. More than 5 points (a masking warning): '
          f'{", ".join(big) or "none"}.']


def _subset(suite: dict) -> str:
  n = suite['num_examples']
  text = f' (first {n} examples)' if n else ''
  if n and 'clean_examples' in suite:
    m = suite['clean_examples']
    text += (f'; clean accuracy on the first {m}' if m else
             '; clean accuracy on the whole test split')
  return text


RESULTS_TITLE = '# Reproduction of the papers\' comparisons'
SUITE_TITLES = {'digits': '8x8 digits (scikit-learn)', 'fashion_mnist': 'Fashion-MNIST (28x28)',
                'mnist': 'MNIST', 'svhn': 'SVHN', 'cifar10': 'CIFAR-10'}


def markers(name: str) -> tuple[str, str]:
  """The comments that delimit a written block (``name``: a suite, or ``bounds:<dataset>``)."""
  return f'<!-- reproduce:{name} begin -->', f'<!-- reproduce:{name} end -->'


def replace_block(text: str, name: str, block: str) -> str:
  """``text`` with its ``name`` block (markers included) replaced by ``block``, or with
  ``block`` appended when it has none; everything outside the block is kept."""
  begin, end = markers(name)
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    return head + block + rest.split(end, 1)[1]
  return text.rstrip('\n') + '\n\n' + block + '\n'


def _protocol_text(suite: dict) -> str:
  protocol = suite.get('autoattack')
  if not protocol:
    return ''
  radii = '; '.join(f'{k.replace("linf", "Linf").replace("l2", "L2")} '
                    f'{", ".join(f"{e:g}" for e in protocol[k])}'
                    for k in ('linf', 'l2') if k in protocol)
  return (f' AutoAttack runs on the first {protocol["num_examples"]} of those points at '
          f'the training radii only ({radii}), PGD-20 on all of them at every radius: '
          'the whole grid under AutoAttack does not fit the 2-core budget '
          '(experiments/reproduce.py, SUITES). "PGD-20 - AA" is the gap on '
          'AutoAttack\'s points. Attack and BTR ARA are on the first '
          f'{suite.get("ara", {}).get("num_examples", suite["num_examples"])} points, '
          'by Woods et al.\'s Algorithm 1 (450 iterations) rather than the bisection.'
          + (f' CRC certifies the first {suite["crc_examples"]} points.'
             if 'crc_examples' in suite else ''))


def block_name(suite_name: str, methods: str = '') -> str:
  """RESULTS.md's block of a run: the suite's, or its own for a ``--methods`` subset (so a
  partial run never replaces the whole table)."""
  return suite_name if not methods else f'{suite_name}:{methods.replace(",", "+")}'


def write_markdown(path: str, *, table: dict, suite_name: str, suite: dict, args,
                   seeds: int, wall_s: float, figures: list[str],
                   diverged: list[str] = ()) -> None:
  """The run's block of RESULTS.md (environment, command, tables, figures, orderings);
  the other blocks are kept. ``diverged``: rows whose every seed stopped on a non-finite
  loss (:func:`diverged_rows`), named under the tables' introduction."""
  rel = lambda p: os.path.relpath(p, os.path.dirname(os.path.abspath(path)))
  methods = getattr(args, 'methods', '')
  begin, end = markers(block_name(suite_name, methods))
  linf_aa, l2_aa = aa_radii(suite, 'linf'), aa_radii(suite, 'l2')
  gap_kind = pgd_on_aa_points(suite)
  lines = [
      begin,
      f'## {SUITE_TITLES.get(suite_name, suite_name)}'
      + (f': the rows {", ".join(methods.split(","))}' if methods else ''),
      '',
      f'Written by `python -m experiments.reproduce --suite={suite_name} '
      f'{"--quick" if args.quick else f"--seeds={seeds}"}'
      f'{f" --methods={methods}" if methods else ""} --out=...` (do not edit by '
      f'hand). Run time {wall_s / 60:.0f} min (every run\'s training and evaluation, '
      f'summed: runs in parallel processes overlap) on '
      f'{platform.processor() or platform.machine()} '
      f'({os.cpu_count()} cores, {jax.devices()[0].platform}); Python '
      f'{platform.python_version()}, jax {jax.__version__}.',
      '',
      f'Every number is the mean ± std over {seeds} seeds (training seed; the '
      f'attacks use seed 0) on the {suite["dataset"]} test split'
      f'{_subset(suite)}.'
      ' Robust accuracy is under AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square; '
      'robustjax.attacks.autoattack) unless a column says PGD-20 (one restart, the '
      'training-time check). A PGD-20 number well above the AutoAttack one is a masking '
      f'warning. Accuracies in %; eps in pixel units of [0, 1].{_protocol_text(suite)}',
      '',
  ]
  missing = missing_rows(suite['dataset'])
  if missing:
    lines += [f'Rows of the suite without a config for {suite["dataset"]} (not run): '
              f'{", ".join(missing)}.', '']
  if diverged:
    lines += [f'Rows whose every seed stopped on a non-finite loss (no model to evaluate): '
              f'{"; ".join(diverged)}.', '']
  lines += ['### Linf', '']
  linf_cols = ([f'AA {e:g}' for e in linf_aa] + [f'PGD-20 {e:g}' for e in suite['linf']] +
               [f'PGD-20 - AA {e:g}' for e in linf_aa])
  lines.append('| method | clean | ' + ' | '.join(linf_cols) +
               ' | attack ARA | BTR ARA | step cost (x standard) | AutoAttack flags |')
  lines.append('| --- ' * (len(linf_cols) + 6) + '|')
  for m, row in table.items():
    cells = [_fmt(row[f'linf/autoattack/{e:g}']) for e in linf_aa]
    cells += [_fmt(row[f'linf/pgd/{e:g}']) for e in suite['linf']]
    cells += [_gap(row, 'linf', gap_kind, e) for e in linf_aa]
    flags = ', '.join(f'{k}: {v}' for k, v in row['flags'].items() if v) or 'none'
    cost = f'{row["step_cost"]:.2f}' if 'step_cost' in row else '-'
    lines.append(f'| {row["label"]} | {_fmt(row["clean"])} | ' + ' | '.join(cells) +
                 f' | {_fmt(row["attack_ara"], 1.0, 4)} | {_fmt(row["btr_ara"], 1.0, 4)} '
                 f'| {cost} | {flags} |')
  l2_rows = {m: r for m, r in table.items() if f'l2/pgd/{suite["l2"][0]:g}' in r}
  if l2_rows:
    cols = ([f'AA {e:g}' for e in l2_aa] + [f'PGD-20 {e:g}' for e in suite['l2']] +
            [f'PGD-20 - AA {e:g}' for e in l2_aa])
    lines += ['', '### L2 (the L2 methods)', '',
              '| method | clean | ' + ' | '.join(cols) + ' |',
              '| --- ' * (len(cols) + 2) + '|']
    for m, row in l2_rows.items():
      cells = [_fmt(row[f'l2/autoattack/{e:g}']) for e in l2_aa]
      cells += [_fmt(row[f'l2/pgd/{e:g}']) for e in suite['l2']]
      cells += [_gap(row, 'l2', gap_kind, e) for e in l2_aa]
      lines.append(f'| {row["label"]} | {_fmt(row["clean"])} | ' + ' | '.join(cells) + ' |')
  crc_rows = {m: r for m, r in table.items() if 'crc' in r}
  if crc_rows:
    radii = next(iter(crc_rows.values()))['crc_radii']
    lines += ['', '### CRC certified accuracy (L2)', '',
              '| method | ' + ' | '.join(f'r = {r:g}' for r in radii) + ' |',
              '| --- ' * (len(radii) + 1) + '|']
    for m, row in crc_rows.items():
      lines.append(f'| {row["label"]} | ' + ' | '.join(_fmt(c) for c in row['crc']) + ' |')
  lines += [''] + bounds_section(table, suite)
  lines += ['', '### Figures', '']
  lines += [f'![{os.path.basename(p)}]({rel(p)})' for p in figures]
  lines += ['', '### Do the papers\' orderings hold here?', '']
  lines += orderings(table, suite) or ['(not enough methods in this run to compare)']
  if suite_name == 'cifar10':
    lines += ['', '### The papers\' own CIFAR-10 numbers', '',
              'The papers\' columns are their published numbers.', '',
              '| method | source | clean (paper) | robust (paper, its attack) | AutoAttack '
              '(RobustBench) | clean (robustjax) | AutoAttack (robustjax) |',
              '| --- | --- | --- | --- | --- | --- | --- |']
    lines += [f'| {m} | {src} | {c} | {r} | {aa} | {_fmt(table[m]["clean"]) if m in table else ""} '
              f'| {_fmt(table[m][f"linf/autoattack/{8 / 255:g}"]) if m in table else ""} |'
              for m, src, c, r, aa in PAPER_CIFAR10]
  lines.append(end)
  text = (open(path, encoding='utf-8').read() if os.path.exists(path)
          else RESULTS_TITLE + '\n')
  block = '\n'.join(lines)
  bounds_name = f'bounds:{suite["dataset"]}'
  if markers(bounds_name)[0] not in block and begin in text:
    old = text.split(begin, 1)[1].split(end, 1)[0]  # keep a --section=bounds block
    if markers(bounds_name)[0] in old and markers(bounds_name)[1] in old:
      kept = markers(bounds_name)[0] + old.split(markers(bounds_name)[0], 1)[1].split(
          markers(bounds_name)[1], 1)[0] + markers(bounds_name)[1]
      block = block.replace('\n' + end, '\n' + kept + '\n' + end)
  workdir_lib.atomic_write(path, replace_block(text, block_name(suite_name, methods), block))


def _gap(row: dict, kind: str, pgd: str, eps: float) -> str:
  p, a = row.get(f'{kind}/{pgd}/{eps:g}'), row.get(f'{kind}/autoattack/{eps:g}')
  if p is None or a is None or math.isnan(p[0]) or math.isnan(a[0]):
    return '-'
  return f'{100 * (p[0] - a[0]):.1f}'


def write_readme_summary(readme: str, table: dict, suite_name: str, suite: dict,
                         seeds: int) -> bool:
  """Replaces the README's block for the suite (between its :func:`markers`) with a short
  summary. Returns False (README unchanged) when the markers are missing."""
  with open(readme, encoding='utf-8') as f:
    text = f.read()
  begin, end = markers(suite_name)
  if begin not in text or end not in text:
    return False
  mid = headline_eps(suite)
  pgd = pgd_on_aa_points(suite)
  points = (f'PGD-20 and AutoAttack on the first {suite["autoattack"]["num_examples"]} '
            'test images, clean accuracy on the whole test split; '
            if 'autoattack' in suite else '')
  lines = [begin,
           f'Mean ± std over {seeds} seeds, {suite["dataset"]} test split, Linf eps = '
           f'{mid:g}; {points}AutoAttack is the standard ensemble, PGD-20 the '
           f'training-time check (written by `python -m experiments.reproduce '
           f'--suite={suite_name}`; the whole table, L2 and certified results, ARA and the '
           'papers\' orderings are in [RESULTS.md](RESULTS.md)).', '',
           '| method | clean | PGD-20 | AutoAttack |', '| --- | --- | --- | --- |']
  for row in table.values():
    lines.append(f'| {row["label"]} | {_fmt(row["clean"])} | '
                 f'{_fmt(row[f"linf/{pgd}/{mid:g}"])} | '
                 f'{_fmt(row[f"linf/autoattack/{mid:g}"])} |')
  lines.append(end)
  workdir_lib.atomic_write(readme, replace_block(text, suite_name, '\n'.join(lines)))
  return True


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--suite', default='digits', choices=sorted(SUITES))
  parser.add_argument('--seeds', type=int, default=3)
  parser.add_argument('--out', required=True, help='directory for runs and results.json')
  parser.add_argument('--quick', action='store_true',
                      help='one seed, a few steps, 16 test points: a smoke test, not a result')
  parser.add_argument('--methods', default='', help='comma-separated subset of the suite')
  parser.add_argument('--results', default=None,
                      help='RESULTS.md path (default: the repository\'s for full runs)')
  parser.add_argument('--only_seeds', default='',
                      help='comma-separated seeds to run in this process (e.g. to share the '
                           'work between processes or machines); the results are written '
                           'only when every seed is done')
  parser.add_argument('--num_examples', type=int, default=-1,
                      help='test points per evaluation (default: the suite\'s)')
  parser.add_argument('--section', default='', choices=('', 'bounds'),
                      help='bounds: run only the CRT-paper rows (crt, softplus, ibp, '
                           'crown_ibp), their certificates, and replace only that section '
                           'of RESULTS.md')
  parser.add_argument('--cost_steps', type=int, default=20,
                      help='timed train steps per method for the cost column')
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f'--seeds must be >= 1, got {args.seeds}')
  suite = SUITES[args.suite]
  if args.quick:  # one radius of each kind: the smoke test covers code paths, not curves
    suite = dict(suite, linf=suite['linf'][1:2], l2=suite['l2'][:1], radii=suite['radii'][:2])
  if args.num_examples >= 0:
    suite = dict(suite, num_examples=args.num_examples)
  methods = _methods(suite['dataset'])
  missing = missing_rows(suite['dataset'])
  if missing:
    print(f'suite {args.suite}: {len(missing)} of {len(methods) + len(missing)} rows have '
          f'no config and are left out: {", ".join(missing)}', flush=True)
  if args.methods:
    wanted = args.methods.split(',')
    unknown = sorted(set(wanted) - {m.name for m in methods})
    if unknown:
      parser.error(f'--methods: unknown {unknown}; valid: {[m.name for m in methods]}')
    methods = [m for m in methods if m.name in wanted or
               any(o.init_from == m.name for o in methods if o.name in wanted)]
  if args.section == 'bounds':
    methods = [m for m in methods if m.name in BOUND_ROWS]
  seeds = 1 if args.quick else args.seeds
  runs_dir = os.path.join(args.out, 'runs')
  os.makedirs(runs_dir, exist_ok=True)
  from robustjax import training  # pylint: disable=g-import-not-at-top

  start = time.time()
  run_seeds = range(seeds)
  if args.only_seeds:
    run_seeds = [int(v) for v in args.only_seeds.split(',')]
    if any(not 0 <= v < seeds for v in run_seeds):
      parser.error(f'--only_seeds must lie in [0, {seeds}), got {args.only_seeds}')
  jobs = [(m, s) for s in run_seeds for m in methods]
  results: dict[str, list[dict]] = {}
  spent, done_jobs = 0.0, 0
  for i, (m, seed) in enumerate(jobs):
    workdir = os.path.join(runs_dir, m.name, f'seed{seed}')
    t0 = time.time()
    run_eval = bounds_study_run if args.section == 'bounds' else evaluate_run
    cached = _done(os.path.join(workdir, 'reproduce_bounds.json' if args.section
                                else 'reproduce.json')) or _done(_diverged_path(workdir))
    train_seconds = 0.0
    config = load_config(m, seed, runs_dir, args.quick)
    # A finished (or diverged) run is reused only if it was trained from this very config:
    # a changed config raises, naming the fields, rather than mixing old and new runs.
    workdir_lib.check(workdir, json.loads(config.to_json_best_effort()))
    result = _diverged(workdir)
    if result is None and not _done(os.path.join(workdir, 'final_metrics.json')):
      try:
        training.train_and_evaluate(config, workdir)
      except training.NonFiniteError as e:  # a result of the study, not a crash of it
        result = {'diverged': str(e), 'seconds': time.time() - t0}
        _write_json(_diverged_path(workdir), result)
      train_seconds = time.time() - t0
    if result is None:
      result = run_eval(workdir, m, suite, quick=args.quick, train_seconds=train_seconds)
    results.setdefault(m.name, []).append(result)
    took = time.time() - t0
    if not cached:
      spent += took
      done_jobs += 1
    left = len(jobs) - i - 1
    eta = spent / max(done_jobs, 1) * left
    outcome = (f'diverged ({result["diverged"]})' if 'diverged' in result
               else f'clean {100 * result["clean"]:.1f}%')
    print(f'[{i + 1}/{len(jobs)}] {m.name} seed {seed}: '
          f'{"cached" if cached else f"{took:.0f} s"}; {outcome}; ETA {eta / 60:.1f} min',
          flush=True)

  if len(jobs) < seeds * len(methods):
    print(f'ran seeds {args.only_seeds}; run without --only_seeds to write the results')
    return None
  if args.section == 'bounds':
    return write_bounds_results(args, suite, results, methods)
  kind = 'fashion_mnist' if suite['dataset'] == 'fashion_mnist' else 'digits'
  costs = step_costs(methods, runs_dir, steps=2 if args.quick else args.cost_steps,
                     kind=kind)
  table = aggregate(results, methods, suite, costs)
  # The study's summed run time: every run's training and evaluation (also those finished by an
  # earlier, interrupted invocation) plus this invocation's cost timing.
  wall = sum(r.get('seconds', 0.0) for rs in results.values() for r in rs) + (
      time.time() - start - spent)
  summary = {'suite': args.suite, 'seeds': seeds, 'quick': args.quick, 'wall_s': wall,
             'step_seconds': costs, 'table': table, 'jax': jax.__version__,
             'runs': results, 'missing_rows': missing}
  _write_json(os.path.join(args.out, 'results.json'), summary)
  results_md = args.results if args.results is not None else (
      '' if args.quick else os.path.join(ROOT, 'RESULTS.md'))
  if results_md:
    fig_dir = os.path.join(os.path.dirname(os.path.abspath(results_md)), 'results')
    block = block_name(args.suite, args.methods)
    figures = (_figures(table, suite, fig_dir, block.replace(':', '_').replace('+', '-'))
               if table else [])
    write_markdown(results_md, table=table, suite_name=args.suite, suite=suite, args=args,
                   seeds=seeds, wall_s=wall, figures=figures,
                   diverged=diverged_rows(results, methods))
    print(f'wrote {results_md}')
    if not args.quick and not args.methods and write_readme_summary(
        os.path.join(ROOT, 'README.md'), table, args.suite, suite, seeds):
      print(f'updated the {args.suite} summary in README.md')
  print(f'done in {wall / 60:.1f} min; summary in {os.path.join(args.out, "results.json")}')
  return summary



# ------------------------------------------------ certified training and bound propagation
# Singla & Feizi's comparisons (ICML 2020): CRT against CROWN-IBP and IBP in certified
# accuracy at the paper's L2 radius; CRC against CROWN in mean certificate; CRC with
# global against local curvature bounds.

BOUND_ROWS = ('crt', 'softplus', 'ibp', 'crown_ibp')
# The paper's radius: rho = 1.58 on MNIST (28x28, also Fashion-MNIST's); on the 8x8 digits
# the L2 radius CRT trains at (configs/crt_digits.py), about 1.58 scaled by 8/28.
PAPER_RADIUS = {'digits': 0.5, 'mnist': 1.58, 'fashion_mnist': 1.58}
LOCAL_CRC = dict(num_examples=64, radius_steps=5)  # the local-CRC search, unless the
# suite sets its own 'local_crc'


def _certified_l2(eps: float):
  """IBP / CROWN-IBP training of CRT's softplus MLP at L2 ``eps`` (pixel space)."""

  def change(c):
    crt = importlib.import_module('configs.crt_' + c.dataset.name).get_config()
    c.model.name, c.model.kwargs = crt.model.name, dict(crt.model.kwargs)
    for t in c.regularizers.values():
      t.hparams.p = 2.0
      t.hparams.eps = eps
      t.hparams.activation = c.model.kwargs['activation']
    c.eval.p, c.eval.eps = 2.0, eps
    if c.dataset.name == 'fashion_mnist':  # the study's epochs, the schedules scaled
      base = importlib.import_module('configs.base')
      scale = base.epochs(base.FASHION_EPOCHS, 'fashion_mnist', c.batch_size) / float(
          c.num_train_steps)
      c.num_train_steps = max(1, round(c.num_train_steps * scale))
      for t in c.regularizers.values():
        for spec in t.get('schedules', {}).values():
          for key in ('steps', 'begin'):
            if key in spec:
              spec[key] = max(1, round(int(spec[key]) * scale))

  return change


def _certified_training_rows(dataset: str) -> list[Method]:
  """Rows 'ibp' and 'crown_ibp': the certified-training baselines of the CRT paper, on
  CRT's softplus MLP at the paper's L2 radius (so CRC applies to them too)."""
  d = dataset if dataset != 'cifar10' else 'cifar'
  eps = PAPER_RADIUS.get(dataset, 0.5)
  return [Method('ibp', f'ibp_{d}', label=f'IBP (L2 {eps:g}, softplus MLP)', l2=True,
                 certify=True, change=_certified_l2(eps)),
          Method('crown_ibp', f'crown_ibp_{d}', label=f'CROWN-IBP (L2 {eps:g}, softplus '
                 'MLP)', l2=True, certify=True, change=_certified_l2(eps))]


def bound_certificates(workdir: str, method: Method, suite: dict, *, quick: bool) -> dict:
  """IBP and CROWN certified curves (L2, the suite's radii, with PGD's cross-check) and
  the mean CRC radius with global and with local curvature bounds."""
  from robustjax import evaluate  # pylint: disable=g-import-not-at-top
  from robustjax import training  # pylint: disable=g-import-not-at-top
  from robustjax.certify import bounds as bounds_lib  # pylint: disable=g-import-not-at-top
  from robustjax import certify as crc_lib  # pylint: disable=g-import-not-at-top
  from robustjax.training import feed  # pylint: disable=g-import-not-at-top
  n = certify_examples(suite, quick)
  radii = sorted(set(suite['radii']) | {PAPER_RADIUS.get(suite['dataset'], 0.5)})
  out = {}
  for name in ('ibp', 'crown'):
    rep = evaluate.run(workdir, certify=name, norm='2', radii=radii, attacks=['pgd'],
                       tag=certify_tag(f'reproduce-{name}', suite), num_examples=n,
                       progress=False, seed=0)
    out[name] = rep['certification']
  config, _, params = training.restore(workdir)
  local_crc = dict(LOCAL_CRC, **suite.get('local_crc', {}))
  k = min(n or local_crc['num_examples'], local_crc['num_examples'])
  x, y = feed.eval_arrays(config.dataset, split='test', num_examples=k)
  activation = dict(config.model.kwargs)['activation']
  layers = bounds_lib.mlp_layers(params)
  steps = dict(bisection_steps=4, newton_steps=2, cg_steps=3) if quick else {}
  glob = crc_lib.crc_mlp(layers, x, y, activation=activation, **steps)
  local = crc_lib.crc_mlp_local(layers, x, y, activation=activation,
                                radius_steps=2 if quick else local_crc['radius_steps'],
                                **steps)
  correct = np.asarray(glob.radius) > 0
  out['crc_global_mean'] = float(np.mean(np.asarray(glob.radius)))
  out['crc_local_mean'] = float(np.mean(np.asarray(local.radius)))
  out['crc_local_examples'] = int(k)
  out['crc_local_improved'] = int(np.sum(np.asarray(local.radius) >
                                         np.asarray(glob.radius) * (1 + 1e-6)))
  out['crc_correct'] = int(correct.sum())
  return out


def aggregate_bounds(all_runs: list[dict]) -> dict:
  """``{'bounds': ..., 'crc_mean_radius': ...}``: mean ± std over seeds of one row's
  bound-propagation measurements and of its CRC mean certificate."""
  out = {}
  if 'crc' in all_runs[0]:
    out['crc_mean_radius'] = _mean_std([r['crc']['mean_certified_radius'] for r in all_runs])
  runs = [r['bounds'] for r in all_runs]
  row = {'radii': runs[0]['crown']['radii']}
  for name in ('ibp', 'crown'):
    row[name] = [_mean_std([r[name]['certified_accuracy'][i] for r in runs])
                 for i in range(len(row['radii']))]
    row[f'{name}_mean_radius'] = _mean_std([r[name]['mean_certified_radius'] for r in runs])
    row[f'{name}_violations'] = sum(int(r[name]['total_violations']) for r in runs)
  for key in ('crc_global_mean', 'crc_local_mean'):
    row[key] = _mean_std([r[key] for r in runs])
  row['crc_local_examples'] = runs[0]['crc_local_examples']
  row['crc_local_improved'] = sum(r['crc_local_improved'] for r in runs)
  out['bounds'] = row
  return out


def bounds_study_run(workdir: str, method: Method, suite: dict, *, quick: bool,
                     train_seconds: float = 0.0) -> dict:
  """``--section=bounds``: clean accuracy, CRC (AutoAttack cross-check) and
  :func:`bound_certificates` of one run, cached in ``workdir/reproduce_bounds.json``."""
  from robustjax import evaluate  # pylint: disable=g-import-not-at-top
  cache = os.path.join(workdir, 'reproduce_bounds.json')
  if _done(cache):
    return _read_json(cache)
  start = time.time()
  n = certify_examples(suite, quick)
  radii = sorted(set(suite['radii']) | {PAPER_RADIUS.get(suite['dataset'], 0.5)})
  cert = evaluate.run(workdir, certify='crc', radii=radii, attacks=['autoattack'],
                      tag=certify_tag('reproduce-crc-bounds', suite), num_examples=n,
                      progress=False,
                      version='standard', seed=0)
  out = {'clean': cert['clean_accuracy'], 'crc': cert['certification'],
         'bounds': bound_certificates(workdir, method, suite, quick=quick)}
  out['seconds'] = time.time() - start + train_seconds
  _write_json(cache, out)
  return out


def bounds_table(results: dict[str, list[dict]], methods: list[Method]) -> dict:
  """The rows of :func:`bounds_section` from :func:`bounds_study_run` results."""
  table = {}
  for m in methods:
    runs, diverged = _trained(results.get(m.name, []))
    if runs:
      row = {'label': m.label + _diverged_note(diverged, len(runs)), 'seeds': len(runs),
             'clean': _mean_std([r['clean'] for r in runs]),
             'crc_radii': runs[0]['crc']['radii'],
             'crc': [_mean_std([r['crc']['certified_accuracy'][i] for r in runs])
                     for i in range(len(runs[0]['crc']['radii']))]}
      row.update(aggregate_bounds(runs))
      table[m.name] = row
  return table


def bounds_section(table: dict, suite: dict) -> list[str]:
  """RESULTS.md's block for the CRT paper's comparisons (between its markers)."""
  rows = {m: r for m, r in table.items() if 'bounds' in r}
  if not rows:
    return []
  rho = PAPER_RADIUS.get(suite['dataset'], 0.5)
  radii = next(iter(rows.values()))['bounds']['radii']
  i = radii.index(rho)
  crc_at = lambda r: (_fmt(r['crc'][r['crc_radii'].index(rho)])
                      if 'crc' in r and rho in r.get('crc_radii', []) else '-')
  seeds = next(iter(rows.values())).get('seeds', 1)
  n = certify_examples(suite, quick=False)
  begin, end = markers(f'bounds:{suite["dataset"]}')
  lines = [begin, f'### CRT vs CROWN-IBP vs IBP (certified accuracy, L2 rho = {rho:g})',
           '',
           f'Written by `python -m experiments.reproduce --suite={suite["dataset"]} '
           f'--seeds={seeds}` (with the whole suite, or alone with `--section=bounds`; do '
           f'not edit by hand): {seeds} seed(s), certificates on the first '
           f'{n or "all"} test points.', '',
           'Singla & Feizi\'s table "Certified Robust accuracy comparison" on '
           f'{suite["dataset"]}: every row is the same softplus MLP (configs/crt_'
           f'{suite["dataset"]}.py); IBP and CROWN-IBP trained at L2 {rho:g} with their '
           'papers\' schedules (configs/ibp_*.py, crown_ibp_*.py). Certified accuracy '
           '(%) by each certificate, against every other class (CRC: exact curvature '
           'bounds; IBP/CROWN: the L2 ball intersected with [0, 1]); certificates are '
           'cross-checked against AutoAttack (CRC) or PGD-20 (IBP, CROWN) at the same '
           'radii: violations must be 0.', '',
           '| method | clean | CRC | CROWN | IBP | violations (CROWN, IBP) |',
           '| --- | --- | --- | --- | --- | --- |']
  for r in rows.values():
    b = r['bounds']
    lines.append(f'| {r["label"]} | {_fmt(r["clean"])} | {crc_at(r)} | '
                 f'{_fmt(b["crown"][i])} | {_fmt(b["ibp"][i])} | {b["crown_violations"]}, '
                 f'{b["ibp_violations"]} |')
  lines += ['', '### CRC vs CROWN: mean certified L2 radius', '',
            'Mean over the test points of the certified radius (0 where misclassified); '
            f'CROWN\'s is the largest radius certified by bisection up to {1.25 * max(radii):g} '
            '(1.25x the largest radius asked for), CRC\'s is unbounded.', '',
            '| method | CRC (global) | CROWN | IBP |', '| --- | --- | --- | --- |']
  for r in rows.values():
    b = r['bounds']
    crc_mean = (_fmt(r['crc_mean_radius'], 1.0, 4) if 'crc_mean_radius' in r
                else _fmt(b['crc_global_mean'], 1.0, 4) + ' *')
    lines.append(f'| {r["label"]} | {crc_mean} | {_fmt(b["crown_mean_radius"], 1.0, 4)} | '
                 f'{_fmt(b["ibp_mean_radius"], 1.0, 4)} |')
  n_local = next(iter(rows.values()))['bounds']['crc_local_examples']
  lines += ['', f'(* CRC on the first {n_local} test points: the run has no CRC curve.)', '',
            '### CRC with global vs local curvature bounds', '',
            f'Mean certified L2 radius on the first {n_local} test points. Local: the '
            'activations\' second-derivative ranges over CROWN\'s pre-activation intervals '
            'of the ball, the certificate claimed inside that ball only, the radius '
            'searched by bisection (robustjax.certify.crc_mlp_local).', '',
            '| method | CRC global | CRC local | points improved |', '| --- | --- | --- | --- |']
  for r in rows.values():
    b = r['bounds']
    lines.append(f'| {r["label"]} | {_fmt(b["crc_global_mean"], 1.0, 4)} | '
                 f'{_fmt(b["crc_local_mean"], 1.0, 4)} | {b["crc_local_improved"]} |')
  lines.append(end)
  return lines


def write_bounds_results(args, suite: dict, results: dict, methods: list[Method]) -> dict:
  """``--section=bounds``: ``OUT/results_bounds.json`` and RESULTS.md's bounds block."""
  table = bounds_table(results, methods)
  summary = {'suite': args.suite, 'seeds': 1 if args.quick else args.seeds,
             'table': table, 'runs': results}
  _write_json(os.path.join(args.out, 'results_bounds.json'), summary)
  results_md = args.results if args.results is not None else (
      '' if args.quick else os.path.join(ROOT, 'RESULTS.md'))
  if results_md:
    update_bounds_section(results_md, table, suite)
    print(f'wrote the bounds section of {results_md}')
  print('\n'.join(bounds_section(table, suite)))
  return summary


def update_bounds_section(path: str, table: dict, suite: dict) -> None:
  """Replaces the suite's bounds block of RESULTS.md, or adds it at the end of the suite's
  block (or of the file, under the suite's heading); the rest is kept as it is."""
  text = (open(path, encoding='utf-8').read() if os.path.exists(path)
          else RESULTS_TITLE + '\n')
  name = f'bounds:{suite["dataset"]}'
  block = '\n'.join(bounds_section(table, suite))
  suite_begin, suite_end = markers(suite['dataset'])
  if markers(name)[0] not in text and suite_end in text:
    text = text.replace(suite_end, block + '\n' + suite_end, 1)
  elif markers(name)[0] not in text:
    title = SUITE_TITLES.get(suite['dataset'], suite['dataset'])
    text = replace_block(text, suite['dataset'],
                         f'{suite_begin}\n## {title}\n\n{block}\n{suite_end}')
  else:
    text = replace_block(text, name, block)
  workdir_lib.atomic_write(path, text)


if __name__ == '__main__':
  main()
