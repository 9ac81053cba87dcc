"""Rendering a report: the Markdown tables the CLI prints, ``report.md``, the plots, and
the report files written atomically (``report.json`` last: its presence means the
evaluation finished)."""

from __future__ import annotations

import os

from matplotlib import figure
import numpy as np

from robustjax.evaluation import units

REPORT_FILES = ('per_example.npz', 'accuracy_vs_eps.png', 'certified_accuracy.png',
                'report.md', 'report.json')


def _pct(x: float) -> str:
  return f'{100 * x:.2f}'


def _norm_label(norm: str) -> str:
  return 'L∞' if norm == 'inf' else f'L{norm}'


def format_table(report: dict) -> str:
  """The robust-accuracy table of a report (markdown, headed by its classifier; what the
  CLI prints)."""
  attacks = report['attacks']
  head = [f'eps ({_norm_label(report["norm"])})'] + attacks + (
      ['worst case'] if len(attacks) > 1 else [])
  lines = [f'Robust accuracy (%) of {report["classifier"]}:', '',
           '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  lines.append('| clean | ' + ' | '.join([_pct(report['clean_accuracy'])] * (len(head) - 1))
               + ' |')
  for row in report['results']:
    cells = [f'{row["eps"]:g}'] + [_pct(row['robust_accuracy'][a]) for a in attacks]
    if len(attacks) > 1:
      cells.append(_pct(row['worst_case']))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def format_certified(cert: dict) -> str:
  """The certified-vs-empirical table of a report's ``certification``."""
  lines = [f'Certified and empirical accuracy (%) of {cert["classifier"]}:', '',
           '| L2 radius | certified | empirical (' + cert['empirical_attack'] + ') | '
           'violations |', '| --- | --- | --- | --- |']
  for row in cert['curve']:
    lines.append(f'| {row["radius"]:g} | {_pct(row["certified_accuracy"])} | '
                 f'{_pct(row["empirical_accuracy"])} | {row["violations"]} |')
  return '\n'.join(lines)


def markdown(report: dict) -> str:
  """``report.md``."""
  s = report['settings']
  cfg = report['config']
  low, high = report['bounds']
  out = [f'# Evaluation `{report["tag"]}` of `{report["workdir"]}`', '',
         f'Checkpoint step {report["checkpoint_step"]}; {cfg["dataset"]} '
         f'`{s["split"]}` split, {report["num_examples"]} examples; model '
         f'`{cfg["model"]}`; method {", ".join(cfg["method"])}. Robust accuracy in % '
         f'(correct on x and at the attack\'s point in the {report["norm"]}-norm ball of '
         f'radius eps, pixels in [{low:g}, {high:g}]); the worst case is per example over '
         f'the attacks. Clean accuracy {_pct(report["clean_accuracy"])}%.', '',
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
            format_certified(cert)]
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


def plot(path: str, xs, curves: dict, *, xlabel: str, title: str) -> None:
  """Accuracy curves ``{label: (ys, style)}`` against ``xs``, as a PNG at ``path``."""
  fig = figure.Figure(figsize=(5, 3.5))  # no pyplot: the user's backend is left alone
  ax = fig.subplots()
  for label, (ys, style) in curves.items():
    ax.plot(xs, ys, style, label=label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('accuracy')
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, format='png', dpi=120)


def _accuracy_curves(report: dict):
  eps = np.asarray(report['eps'])
  order = np.argsort(eps)
  xs = eps[order]
  with_zero = 0.0 not in report['eps']
  if with_zero:
    xs = np.concatenate([[0.0], xs])

  def ys_of(values):
    ys = np.asarray(values)[order]
    return np.concatenate([[report['clean_accuracy']], ys]) if with_zero else ys

  curves = {a: (ys_of(report['robust_accuracy'][a]), 'o-') for a in report['attacks']}
  if len(report['attacks']) > 1:
    curves['worst case'] = (ys_of(report['worst_case_accuracy']), 'k--')
  return xs, curves


def write_report(out_dir: str, report: dict, per_example: dict) -> None:
  """Writes every report file to a temporary name, then renames, report.json last."""
  staged = []

  def stage(name, data: bytes | None = None):
    tmp = os.path.join(out_dir, f'.{name}.tmp{os.getpid()}')
    if data is not None:
      with open(tmp, 'wb') as f:
        f.write(data)
    staged.append((tmp, os.path.join(out_dir, name)))
    return tmp

  stage('per_example.npz', units.npz_bytes(per_example))
  xs, curves = _accuracy_curves(report)
  plot(stage('accuracy_vs_eps.png'), xs, curves,
       xlabel=f'eps ({_norm_label(report["norm"])})',
       title=f'{report["config"]["dataset"]} {", ".join(report["config"]["method"])}, '
       f'step {report["checkpoint_step"]}')
  cert = report.get('certification')
  if cert:
    radii = [r['radius'] for r in cert['curve']]
    plot(stage('certified_accuracy.png'), radii, {
        f'certified ({cert["method"]})': ([r['certified_accuracy'] for r in cert['curve']],
                                          'o-'),
        f'empirical ({cert["empirical_attack"]})':
            ([r['empirical_accuracy'] for r in cert['curve']], 's--')},
         xlabel='L2 radius', title=f'{report["config"]["dataset"]}: certified vs '
         'empirical robust accuracy')
  stage('report.md', markdown(report).encode('utf-8'))
  stage('report.json', units.json_bytes(report))
  for tmp, final in staged:
    os.replace(tmp, final)
