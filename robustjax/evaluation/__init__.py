"""Evaluation of trained runs: the one evaluator that ``robustjax.evaluate`` builds on.

- :mod:`~robustjax.evaluation.settings`: the flags, checked once, and the frozen
  :class:`Settings`;
- :mod:`~robustjax.evaluation.units`: work units, their atomic store, resume and the
  identity (parameters, data, version) a resumed evaluation must share;
- :mod:`~robustjax.evaluation.classifiers`: the per-batch attacked and certified
  classifiers (PGD, AutoAttack, the smoothed surrogate, :data:`CERTIFICATES`) and the
  :class:`RestoreCache`;
- :mod:`~robustjax.evaluation.report`: assembly of ``report.json`` and the per-example
  arrays; :mod:`~robustjax.evaluation.render`: Markdown, tables, plots, report files;
- :mod:`~robustjax.evaluation.runner`: :func:`evaluate`, one evaluation end to end.
"""

from robustjax.evaluation.classifiers import ABSTAIN
from robustjax.evaluation.classifiers import attack_hparams
from robustjax.evaluation.classifiers import attack_key
from robustjax.evaluation.classifiers import autoattack_fn
from robustjax.evaluation.classifiers import BOUNDS
from robustjax.evaluation.classifiers import Certificate
from robustjax.evaluation.classifiers import CERTIFICATES
from robustjax.evaluation.classifiers import CertifyContext
from robustjax.evaluation.classifiers import CLEAN_MISCLASSIFIED
from robustjax.evaluation.classifiers import crc_layers
from robustjax.evaluation.classifiers import PGD_HPARAMS
from robustjax.evaluation.classifiers import pgd_fn
from robustjax.evaluation.classifiers import RestoreCache
from robustjax.evaluation.classifiers import ROBUST
from robustjax.evaluation.classifiers import smoothed_logits_fn
from robustjax.evaluation.classifiers import SMOOTHING_ATTACK_SAMPLES
from robustjax.evaluation.classifiers import SMOOTHING_PREDICT_SAMPLES
from robustjax.evaluation.render import format_certified
from robustjax.evaluation.render import format_table
from robustjax.evaluation.render import markdown
from robustjax.evaluation.render import REPORT_FILES
from robustjax.evaluation.render import write_report
from robustjax.evaluation.report import assemble
from robustjax.evaluation.runner import evaluate
from robustjax.evaluation.settings import ATTACKS
from robustjax.evaluation.settings import DEFAULT_ATTACKS
from robustjax.evaluation.settings import DEFAULT_RADII
from robustjax.evaluation.settings import NORMS
from robustjax.evaluation.settings import Settings
from robustjax.evaluation.units import EVAL_DIR
from robustjax.evaluation.units import identity
from robustjax.evaluation.units import params_fingerprint
from robustjax.evaluation.units import Unit
from robustjax.evaluation.units import UnitStore
from robustjax.evaluation import units
