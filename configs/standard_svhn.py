"""Standard training of ResNet-18 on SVHN with SCORPIO's SVHN schedule (supplement:
40 epochs, lr 0.01 divided by 10 every 8 epochs); the "Standard" row of Table 7.

  python -m robustjax.main --config=configs/standard_svhn.py --workdir=/tmp/standard_svhn
"""

from configs import base


def get_config():
  return base.svhn(model='resnet18')
