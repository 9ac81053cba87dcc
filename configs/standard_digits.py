"""Standard (clean cross-entropy) training on the embedded digits: the baseline.

  python -m robustjax.main --config=configs/standard_digits.py --workdir=/tmp/standard_digits
"""

from configs import base


def get_config():
  return base.digits()
