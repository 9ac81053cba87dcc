"""PGD-10 adversarial training of ResNet-18 on SVHN: the "Adv Train (PGD-10)" row of
SCORPIO Table 7 (Linf eps 8/255, step 2/255), SCORPIO's SVHN schedule.

  python -m robustjax.main --config=configs/at_svhn.py --workdir=/tmp/at_svhn
"""

from configs import base


def get_config():
  c = base.svhn(model='resnet18')
  c.nominal_weight = 0.0
  c.regularizers.adversarial = base.term('adversarial', weight=1.0, eps=8 / 255,
                                         p=base.INF, steps=10, step_size=2 / 255)
  return c
