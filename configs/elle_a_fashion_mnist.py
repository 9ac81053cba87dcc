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


def get_config():
  c = base.fashion_mnist()
  c.nominal_weight = 0.0
  c.regularizers.fgsm = base.term('fgsm', weight=1.0, eps=0.1, p=base.INF, init='zero',
                                  step_size=0.1)
  c.regularizers.elle = base.term('elle', weight=1.0, eps=0.1, p=base.INF)
  c.controller.name = 'elle_a'
  c.controller.term = 'elle'
  c.controller.loss = 'elle'
  c.controller.lam_max = 4000.0
  c.controller.lam_min = 0.0
  c.controller.decay = 0.99
  c.controller.sensitivity = 2.0
  c.controller.min_history = 3
  c.eval.monitor_every_steps = base.epochs(1, 'fashion_mnist', c.batch_size)
  return c
