"""TRADES (Zhang et al. 2019) on Fashion-MNIST: CE(x) + beta KL(f(x) || f(x')), Linf
eps = 0.1 (CROWN-IBP's Fashion-MNIST radius), x' by 7 KL-PGD steps of 2.5 eps / 7.

beta = 6, TRADES' CIFAR-10 value, not its MNIST one (beta = 1): at eps = 0.1
Fashion-MNIST, like CIFAR-10 and unlike MNIST, loses clean accuracy to robustness, the
trade-off beta sets. 7 steps as the AT row. Small CNN and schedule of
``configs/standard_fashion_mnist.py``.

  python -m robustjax.main --config=configs/trades_fashion_mnist.py --workdir=/tmp/trades_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.regularizers.trades = base.term('trades', weight=1.0, beta=6.0, eps=0.1, p=base.INF,
                                    steps=7, step_size=2.5 * 0.1 / 7)
  return c
