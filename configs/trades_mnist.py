"""TRADES on MNIST (Zhang et al.'s MNIST setting: beta = 1, Linf eps 0.3, 40 KL-PGD steps
of 0.01) on the 4-layer CNN.

  python -m robustjax.main --config=configs/trades_mnist.py --workdir=/tmp/trades_mnist
"""

from configs import base


def get_config():
  c = base.mnist(model='cnn')
  c.regularizers.trades = base.term('trades', weight=1.0, beta=1.0, eps=0.3, p=base.INF,
                                    steps=40, step_size=0.01)
  return c
