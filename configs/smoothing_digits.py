"""Gaussian noise training for randomized smoothing (Cohen et al. 2019) on the embedded
digits: the whole objective is the cross-entropy at x + N(0, σ² I), σ = 0.25 (nominal
weight 0), one fresh draw per example and step; the digits preset otherwise (MLP 64-64,
600 steps, about a minute on 2 cores). Certify the smoothed classifier with the same σ:

  python -m robustjax.main --config=configs/smoothing_digits.py --workdir=/tmp/smoothing_digits
  python -m robustjax.evaluate --workdir=/tmp/smoothing_digits --certify=smoothing --sigma=0.25

or from Python, ``robustjax.certify.certify(logits_fn, params, x, rng=..., sigma=0.25)``.
"""

from configs import base

SIGMA = 0.25


def get_config():
  c = base.digits()
  c.nominal_weight = 0.0
  c.regularizers.gaussian = base.term('gaussian_augmentation', weight=1.0, sigma=SIGMA)
  return c
