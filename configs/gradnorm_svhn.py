"""Input-gradient regularization on SVHN ("Gradient Reg" of SCORPIO Table 7), ResNet-18,
SCORPIO's SVHN schedule. The weight is not published (tuned to AT's clean accuracy).

  python -m robustjax.main --config=configs/gradnorm_svhn.py --workdir=/tmp/gradnorm_svhn
"""

from configs import base


def get_config():
  c = base.svhn(model='resnet18')
  c.regularizers.gradient_norm = base.term('gradient_norm', weight=1.0, q=2.0)
  return c
