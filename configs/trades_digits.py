"""TRADES on the embedded digits: CE(x) + beta KL(f(x) || f(x')), beta = 6 (TRADES'
CIFAR-10 value), x' by 7 PGD steps on the KL in the Linf ball eps = 0.1.

  python -m robustjax.main --config=configs/trades_digits.py --workdir=/tmp/trades_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.regularizers.trades = base.term('trades', weight=1.0, beta=6.0, eps=0.1, p=base.INF,
                                    steps=7, step_size=2.5 * 0.1 / 7)
  return c
