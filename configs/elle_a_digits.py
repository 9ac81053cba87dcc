"""FGSM + ELLE-A (Abad Rocamora et al. 2024, adaptive lambda) on the embedded digits.

As configs/elle_digits.py, with the ELLE term's lambda set by the ELLE-A controller
(robustjax.regularizers.controllers.elle_a) fed the term's mean linearity error: lambda
starts at 0, jumps to lambda_max when the error exceeds mean + 2 std of the earlier
errors, and otherwise decays by 0.99 per step (the authors' rule, decay and sensitivity).
lambda_max = 1000, the constant lambda of configs/elle_digits.py: the authors' CIFAR-10
lambda_max = 4000 made this MLP's SGD diverge (non-finite gradient at step 66).

  python -m robustjax.main --config=configs/elle_a_digits.py --workdir=/tmp/elle_a_digits
"""

from configs import base
from configs import elle_digits


def get_config():
  return base.elle_a(elle_digits.get_config(), lam_max=1000.0)
