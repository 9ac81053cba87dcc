"""CURE on SVHN (SCORPIO Table 7 baseline): ResNet-18, h = 1.5, weight 4, SCORPIO's SVHN
schedule.

  python -m robustjax.main --config=configs/cure_svhn.py --workdir=/tmp/cure_svhn
"""

from configs import base


def get_config():
  c = base.svhn(model='resnet18')
  c.regularizers.cure = base.term('cure', weight=4.0, h=1.5)
  return c
