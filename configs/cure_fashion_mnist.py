"""CURE (Moosavi-Dezfooli et al. 2019) on Fashion-MNIST, the curvature baseline of SCORPIO.

CE + 4 ||grad l(x + h z) - grad l(x)||^2, z the normalised sign of the gradient, h = 1.5
and weight (CURE's gamma) 4: CURE's CIFAR-10 setting, as ``configs/cure_cifar.py``. In
L2 the step h z has norm 1.5, about 0.054 per pixel of 28x28: the scale of the study's
Linf eps = 0.1 ball. Small CNN and schedule of ``configs/standard_fashion_mnist.py``.

  python -m robustjax.main --config=configs/cure_fashion_mnist.py --workdir=/tmp/cure_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.regularizers.cure = base.term('cure', weight=4.0, h=1.5)
  return c
