r"""Evaluate a trained run: AutoAttack / PGD robust accuracy and certified accuracy.

  python -m robustjax.evaluate --workdir=/tmp/robustjax/llr_digits --eps=0.05,0.1 \
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
refused, naming the flags that differ, and so is one made for other parameters (a
retrained checkpoint), other data or another robustjax version
(:func:`robustjax.evaluation.identity`). Nothing outside ``eval/<tag>/`` is written.
With ``--compilation_cache_dir`` (default ``$ROBUSTJAX_CACHE/jax`` or
``~/.cache/robustjax/jax``; empty turns it off) a repeated evaluation of the same model
compiles nothing.

Certification (``--certify``): ``crc`` (L2) runs the curvature-based certificate
(Singla & Feizi 2020, "Second-Order Provable Defenses against Adversarial Attacks") on
smooth MLPs (:func:`robustjax.certify.crc_mlp`, every target class, exact curvature
bounds); ``ibp`` and ``crown`` (``--norm=inf``, the default, or ``2``) bound every
margin over the ball ∩ box by interval bound propagation (Gowal et al. 2018) or CROWN
(Zhang et al. 2018) on MLPs and the small CNN, with a certified radius per example by
bisection (:func:`robustjax.certify.bound_certified_radius`); ``smoothing`` (L2) runs randomized smoothing's CERTIFY (Cohen, Rosenfeld & Kolter
2019, "Certified Adversarial Robustness via Randomized Smoothing"). The
certified-accuracy curve at ``--radii`` is reported next to the empirical robust
accuracy of the same classifier under the requested attacks (default PGD-20 and
AutoAttack, L2) at the same radii. A certified example that an attack breaks within
its certified radius would be a bug: it is counted in the report's ``violations`` and
a warning is printed. Every table describes one classifier, named in its heading. For
smoothing it is the smoothed classifier: its clean accuracy is PREDICT's at x; the
attacks run on the log of the base model's softmax averaged over fixed Gaussian draws
(a differentiable surrogate; the base model alone is a different classifier, whose
empirical curve may lie below a sound certified one); a point counts as broken when
PREDICT returns another class at an attack's point (abstaining there is not a break),
and a point PREDICT gets wrong or abstains on at x is non-robust at every radius.

One process: PGD and the certificates shard each batch over this host's devices;
AutoAttack is a host-level loop over its compiled attacks (it re-batches the points
still robust between attacks) and runs on the default device.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging

from robustjax import _cli
from robustjax import evaluation

_RESTORE_CACHE = evaluation.RestoreCache()  # one per process: see RestoreCache


def run(workdir: str, *, eps: Sequence[float] | float | None = None, norm=None,
        attacks: Sequence[str] | str = evaluation.DEFAULT_ATTACKS,
        version: str = 'standard', num_examples: int = 0, split: str = 'test',
        batch_size: int = 0, tag: str | None = None, seed: int = 0, certify: str = '',
        sigma: float = 0.25, num_samples: int = 100_000, num_selection: int = 100,
        alpha: float = 0.001, radii: Sequence[float] | None = None,
        progress: bool | None = None,
        on_unit: Callable[[str], None] | None = None) -> dict:
  """Evaluates a trained run and writes ``workdir/eval/<tag>/``; returns the report.

  Args:
    workdir: a training run's directory (``config.json`` and ``checkpoints/``).
    eps: radii (default: the run's ``config.eval.eps``); ``0`` is clean accuracy.
    norm: ``'inf'``, ``'2'`` or ``'1'`` (or the numbers); default the run's
      ``config.eval.p``.
    attacks: names from :data:`robustjax.evaluation.ATTACKS`: ``'autoattack'`` (the
      ensemble of ``version``), one of its attacks alone (``'apgd-ce'``, ``'apgd-dlr'``,
      ``'apgd-t'``, ``'fab'``, ``'fab-t'``, ``'square'``, each through
      :func:`robustjax.attacks.autoattack` with ``attacks=[name]``), or ``'pgd'``
      (PGD-20, one restart, CE: training's end-of-run evaluation).
    version: AutoAttack version, ``'standard'``, ``'plus'`` or ``'rand'``.
    num_examples: the first that many examples of the split (0 = all).
    split: ``'test'`` or ``'train'``.
    batch_size: examples per attacked batch (0 = the run's ``config.eval.batch_size``;
      at most the number of examples), rounded up to a multiple of the local device
      count. The last batch is padded and masked for PGD and the certificates (one
      compilation); AutoAttack gets its real examples only.
    tag: name of the output directory under ``workdir/eval/`` (default ``l<norm>``,
      or ``certify-<method>``).
    seed: seed of every attack (see :func:`robustjax.evaluation.attack_key`) and
      certificate.
    certify: ``''`` (attacks only) or a name of
      :data:`robustjax.evaluation.CERTIFICATES` (``'crc'``, ``'smoothing'``; L2, see
      the module docstring); then the attacks run at ``radii`` with ``norm=2``.
    sigma, num_samples, num_selection, alpha: randomized smoothing's noise level, the
      Monte-Carlo samples of its estimation and selection steps and its failure
      probability.
    radii: L2 radii of the certified-accuracy curve (default
      :data:`robustjax.evaluation.DEFAULT_RADII`).
    progress: show a progress bar (default: when stdout is a terminal).
    on_unit: called with each finished unit's file name after it is saved (tests use
      it to interrupt an evaluation).

  Returns:
    The report (what ``report.json`` holds).

  Raises:
    ValueError: a bad argument or workdir, naming the command-line flag (``--eps:
      ...``), before anything compiles and before anything is written.
  """
  return evaluation.evaluate(
      workdir, restore_cache=_RESTORE_CACHE, progress=progress, on_unit=on_unit, tag=tag,
      eps=eps, norm=norm, attacks=attacks, version=version, num_examples=num_examples,
      split=split, batch_size=batch_size, seed=seed, certify=certify, sigma=sigma,
      num_samples=num_samples, num_selection=num_selection, alpha=alpha, radii=radii)


# ------------------------------------------------------------------------ CLI


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A training run\'s directory.')
  flags.DEFINE_list('eps', None, 'Attack radii (default: the run\'s config.eval.eps).')
  flags.DEFINE_string('norm', None, 'inf, 2 or 1 (default: the run\'s config.eval.p).')
  flags.DEFINE_list('attacks', list(evaluation.DEFAULT_ATTACKS),
                    f'Attacks, from: {", ".join(evaluation.ATTACKS)}.')
  flags.DEFINE_string('version', 'standard', 'AutoAttack version: standard, plus, rand.')
  flags.DEFINE_integer('num_examples', 0, 'First examples of the split (0 = all).')
  flags.DEFINE_string('split', 'test', 'test or train.')
  flags.DEFINE_integer('batch_size', 0, 'Examples per batch (0 = config.eval.batch_size).')
  flags.DEFINE_string('tag', None, 'Output directory under WORKDIR/eval/ (default: l<norm> '
                      'or certify-<method>).')
  flags.DEFINE_integer('seed', 0, 'Seed of the attacks and certificates.')
  flags.DEFINE_string('certify', '', f'{" or ".join(evaluation.CERTIFICATES)}: certified '
                      'accuracy at --radii.')
  flags.DEFINE_list('radii', None, 'Radii of the certified curve (with --certify), in '
                    '--norm (L2, or Linf for ibp/crown).')
  flags.DEFINE_float('sigma', 0.25, 'Randomized smoothing noise level.')
  flags.DEFINE_integer('num_samples', 100_000, 'Smoothing: Monte-Carlo samples (n).')
  flags.DEFINE_integer('num_selection', 100, 'Smoothing: selection samples (n0).')
  flags.DEFINE_float('alpha', 0.001, 'Smoothing: failure probability.')
  _cli.define_cache_flag(flags)
  flags.mark_flag_as_required('workdir')
  return flags.FLAGS


def main(argv, FLAGS=None):  # pylint: disable=invalid-name
  """The command line: ``run`` with the flags, a table on stdout, errors in one line."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_cli.show_record)
  _cli.enable_compilation_cache(FLAGS.compilation_cache_dir,
                                explicit=FLAGS['compilation_cache_dir'].present)
  try:
    report = run(FLAGS.workdir, eps=FLAGS.eps, norm=FLAGS.norm, attacks=FLAGS.attacks,
                 version=FLAGS.version, num_examples=FLAGS.num_examples, split=FLAGS.split,
                 batch_size=FLAGS.batch_size, tag=FLAGS.tag, seed=FLAGS.seed,
                 certify=FLAGS.certify, sigma=FLAGS.sigma, num_samples=FLAGS.num_samples,
                 num_selection=FLAGS.num_selection, alpha=FLAGS.alpha, radii=FLAGS.radii)
  except ValueError as e:
    if not str(e).startswith('--'):
      raise
    _cli.exit_with_error(e)
  print(evaluation.format_table(report))
  cert = report.get('certification')
  if cert:
    print(evaluation.format_certified(cert))
  print(f'wrote {os.path.join(report["workdir"], evaluation.EVAL_DIR, report["tag"])}'
        '/report.json')


if __name__ == '__main__':
  _FLAGS = _define_flags()
  app.run(lambda argv: main(argv, _FLAGS))
