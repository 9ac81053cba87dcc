"""Input-gradient norm regularization (Ros & Doshi-Velez 2018) on Fashion-MNIST.

CE + weight * ||grad_x CE||_2^2 (q = 2), weight 1: the baseline of SCORPIO's Table 2,
whose CIFAR-10 weight ``configs/gradnorm_cifar.py`` uses (the digits config's 0.3 is for
64 pixels; a 784-pixel gradient has a larger norm at the same per-pixel size, and the
penalty must bite at the study's Linf eps = 0.1). Small CNN and schedule of
``configs/standard_fashion_mnist.py``.

  python -m robustjax.main --config=configs/gradnorm_fashion_mnist.py --workdir=/tmp/gradnorm_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.regularizers.gradient_norm = base.term('gradient_norm', weight=1.0, q=2.0)
  return c
