"""Standard training of the 4-layer CNN on MNIST (baseline for at_mnist / trades_mnist).

  python -m robustjax.main --config=configs/standard_mnist.py --workdir=/tmp/standard_mnist
"""

from configs import base


def get_config():
  return base.mnist(model='cnn')
