"""Robustness metrics: accuracy under attack, accuracy-vs-eps, ARA, gradient masking."""

from robustjax.metrics.ara import accuracy_at
from robustjax.metrics.ara import ara
from robustjax.metrics.ara import ara_from_distances
from robustjax.metrics.ara import attack_ara
from robustjax.metrics.ara import btr_ara
from robustjax.metrics.ara import min_norm_distances
from robustjax.metrics.ara import naive_accuracy
from robustjax.metrics.ara import rmse
from robustjax.metrics.masking import classification_margin
from robustjax.metrics.masking import local_linearity
from robustjax.metrics.masking import mean_confidence
from robustjax.metrics.masking import simba_vs_pgd
from robustjax.metrics.masking import transfer_accuracy
from robustjax.metrics.robustness import accuracy
from robustjax.metrics.robustness import accuracy_vs_eps
from robustjax.metrics.robustness import as_batches
from robustjax.metrics.robustness import correct
from robustjax.metrics.robustness import iter_batches
from robustjax.metrics.robustness import pad_batches
from robustjax.metrics.robustness import robust_accuracy
from robustjax.metrics.robustness import robust_correct
from robustjax.metrics.robustness import scorpio_attack_accuracies
