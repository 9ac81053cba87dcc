"""Standard training of SOAR's 4-layer CNN on CIFAR-10 (SOAR app. C, the "Standard" row
of Table 1): 200 epochs, SGD lr 0.01 / 10 at epochs 100 and 150, momentum 0.9, weight
decay 2e-4, batch 128, random crop + flip. Also the starting point of soar_cifar.

  python -m robustjax.main --config=configs/standard_cifar.py --workdir=/tmp/standard_cifar
"""

from configs import base


def get_config():
  return base.cifar10(model='cnn', batch_size=128, num_epochs=200)
