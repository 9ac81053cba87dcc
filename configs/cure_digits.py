"""CURE (curvature regularization by finite differences of gradients) on the digits.

CE + weight * ||grad l(x + h z) - grad l(x)||^2, z the normalised sign of the gradient.

  python -m robustjax.main --config=configs/cure_digits.py --workdir=/tmp/cure_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.regularizers.cure = base.term('cure', weight=1.0, h=1.5)
  return c
