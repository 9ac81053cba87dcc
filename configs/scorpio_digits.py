"""SCORPIO (Frank-Wolfe on the quadratic model, forward-Euler HVPs) on the digits.

CE + r * (l(x + v_Q) - l(x)), N = 3 FW steps, Linf eps = 0.1, forward Euler with
(h, r) = (1.05, 1.05) as SCORPIO's CIFAR-10 Linf FE(3) setting.

  python -m robustjax.main --config=configs/scorpio_digits.py --workdir=/tmp/scorpio_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.regularizers.scorpio = base.term('scorpio', weight=1.05, eps=0.1, p=base.INF, steps=3,
                                     h=1.05, scheme='forward')
  return c
