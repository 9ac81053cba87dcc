"""SCORPIO on CIFAR-10, Linf FE(3) (supplement "Hyperparameters"): eps 8/255, N = 3
Frank-Wolfe steps, forward Euler, (h, r) = (1.05, 1.05); ResNet-18, lr 0.01 decayed to
0.001 after 50 epochs, 60 epochs. Evaluated with PGD at 8/255 (Table 2b).

  python -m robustjax.main --config=configs/scorpio_cifar.py --workdir=/tmp/scorpio_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='resnet18', batch_size=128, num_epochs=60)
  c.optimizer.boundaries = (50 / 60,)
  c.regularizers.scorpio = base.term('scorpio', weight=1.05, eps=8 / 255, p=base.INF,
                                     steps=3, h=1.05, scheme='forward')
  c.eval.steps = 10
  return c
