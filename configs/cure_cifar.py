"""CURE on CIFAR-10 (the CURE baseline of SCORPIO Fig. 2 / Table 2): ResNet-18, h = 1.5
(CURE's CIFAR-10 step for inputs in [0, 1]), weight 4 (CURE's gamma), SCORPIO's CIFAR
schedule (lr 0.01, 0.001 after epoch 50, 60 epochs).

  python -m robustjax.main --config=configs/cure_cifar.py --workdir=/tmp/cure_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='resnet18', batch_size=128, num_epochs=60)
  c.optimizer.boundaries = (50 / 60,)
  c.regularizers.cure = base.term('cure', weight=4.0, h=1.5)
  return c
