"""PGD-7 adversarial training (Madry et al.) of SOAR's CNN on CIFAR-10: the "Adv7"
baseline of SOAR Table 1 (Linf eps 8/255, step 2/255, training only on PGD points,
the same schedule as the standard model, app. C).

  python -m robustjax.main --config=configs/at_cifar.py --workdir=/tmp/at_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='cnn', batch_size=128, num_epochs=200)
  c.nominal_weight = 0.0
  c.regularizers.adversarial = base.term('adversarial', weight=1.0, eps=8 / 255,
                                         p=base.INF, steps=7, step_size=2 / 255)
  return c
