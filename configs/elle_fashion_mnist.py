"""FGSM + ELLE (Abad Rocamora et al. 2024) on Fashion-MNIST.

CE at one FGSM step from x (zero start, step eps, Linf eps = 0.1; nominal weight 0) plus
lambda |l(x_c) - alpha l(x_a) - (1 - alpha) l(x_b)|^2 with x_a, x_b uniform in the ball,
x_c = alpha x_a + (1 - alpha) x_b, lambda = 1000 (the authors' CIFAR-10 value for eps <=
8/255). FGSM and PGD accuracy are monitored every epoch on 512 test images. Model, data
and schedule: base.fashion_mnist() (Wong & Kolter's small CNN, batch 128,
base.FASHION_EPOCHS epochs, eps 0.1 as CROWN-IBP's Fashion-MNIST radius).

  python -m robustjax.main --config=configs/elle_fashion_mnist.py --workdir=/tmp/elle_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.nominal_weight = 0.0
  c.regularizers.fgsm = base.term('fgsm', weight=1.0, eps=0.1, p=base.INF, init='zero',
                                  step_size=0.1)
  c.regularizers.elle = base.term('elle', weight=1000.0, eps=0.1, p=base.INF)
  c.eval.monitor_every_steps = base.epochs(1, 'fashion_mnist', c.batch_size)
  return c
