"""FGSM training with a random start (Wong et al. 2020, FGSM-RS) on Fashion-MNIST.

The catastrophic-overfitting baseline of the single-step methods: the whole objective is
the loss at one FGSM step (nominal weight 0), Linf eps = 0.1, uniform start in the ball,
step 1.25 eps, projected back onto the ball. The run monitors FGSM and PGD accuracy
every 50 steps and flags catastrophic overfitting (robustjax.training.monitor). Model,
data and schedule: base.fashion_mnist() (Wong & Kolter's small CNN, batch 128, 10
epochs, eps 0.1 as CROWN-IBP's Fashion-MNIST radius).

  python -m robustjax.main --config=configs/fgsm_fashion_mnist.py --workdir=/tmp/fgsm_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.nominal_weight = 0.0
  c.regularizers.fgsm = base.term('fgsm', weight=1.0, eps=0.1, p=base.INF, init='uniform',
                                  step_size=1.25 * 0.1)
  c.eval.monitor_every_steps = base.epochs(1, 'fashion_mnist', c.batch_size)
  return c
