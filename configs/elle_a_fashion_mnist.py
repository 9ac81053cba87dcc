"""FGSM + ELLE-A (Abad Rocamora et al. 2024, adaptive lambda) on Fashion-MNIST.

As configs/elle_fashion_mnist.py, with the ELLE term's lambda set by the ELLE-A
controller (robustjax.regularizers.controllers.elle_a) fed the term's mean linearity
error: lambda starts at 0, jumps to lambda_max = 4000 when the error exceeds mean + 2
std of the earlier errors, and otherwise decays by 0.99 per step (the authors'
defaults). Model, data and schedule: base.fashion_mnist() (Wong & Kolter's small CNN,
batch 128, base.FASHION_EPOCHS epochs, eps 0.1 as CROWN-IBP's Fashion-MNIST radius).

  python -m robustjax.main --config=configs/elle_a_fashion_mnist.py --workdir=/tmp/elle_a_fashion_mnist
"""

from configs import base
from configs import elle_fashion_mnist


def get_config():
  return base.elle_a(elle_fashion_mnist.get_config(), lam_max=4000.0)
