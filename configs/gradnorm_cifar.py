"""Input-gradient regularization ("Gradient Reg" of SCORPIO Fig. 2 / Table 2) on
CIFAR-10: ResNet-18, SCORPIO's CIFAR schedule (lr 0.01, 0.001 after epoch 50, 60
epochs). SCORPIO tuned the weight "as large as possible while nearly matching the clean
accuracy of AT" without publishing it; the default here is a starting point.

  python -m robustjax.main --config=configs/gradnorm_cifar.py --workdir=/tmp/gradnorm_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='resnet18', batch_size=128, num_epochs=60)
  c.optimizer.boundaries = (50 / 60,)
  c.regularizers.gradient_norm = base.term('gradient_norm', weight=1.0, q=2.0)
  return c
