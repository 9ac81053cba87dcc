"""SCORPIO on SVHN, Linf FE(3) (supplement): h = 1.5, r = 1.25, eps 8/255, 40 epochs, lr
0.01 divided by 10 every 8 epochs (Table 7 "SCORPIO (FE, N=3)").

  python -m robustjax.main --config=configs/scorpio_svhn.py --workdir=/tmp/scorpio_svhn
"""

from configs import base


def get_config():
  c = base.svhn(model='resnet18')
  c.regularizers.scorpio = base.term('scorpio', weight=1.25, eps=8 / 255, p=base.INF,
                                     steps=3, h=1.5, scheme='forward')
  c.eval.steps = 10
  return c
