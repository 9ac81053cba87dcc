"""SCORPIO on Fashion-MNIST, its Linf FE(3) setting at eps = 0.1.

CE + r (l(x + v_Q) - l(x)), v_Q by N = 3 Frank-Wolfe steps on the quadratic model in the
Linf ball, forward-Euler HVPs, (h, r) = (1.05, 1.05): SCORPIO's CIFAR-10 Linf FE(3)
hyperparameters (supplement), with CROWN-IBP's Fashion-MNIST radius eps = 0.1 in place of
8/255. Small CNN and schedule of ``configs/standard_fashion_mnist.py``.

  python -m robustjax.main --config=configs/scorpio_fashion_mnist.py --workdir=/tmp/scorpio_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.regularizers.scorpio = base.term('scorpio', weight=1.05, eps=0.1, p=base.INF, steps=3,
                                     h=1.05, scheme='forward')
  return c
