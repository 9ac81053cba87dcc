"""Input-gradient norm regularization (Ros & Doshi-Velez) on the embedded digits.

CE + weight * ||grad_x CE||_2^2 (q = 2, as Ros & Doshi-Velez).

  python -m robustjax.main --config=configs/gradnorm_digits.py --workdir=/tmp/gradnorm_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.regularizers.gradient_norm = base.term('gradient_norm', weight=0.3, q=2.0)
  return c
