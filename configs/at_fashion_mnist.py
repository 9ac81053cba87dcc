"""PGD-7 adversarial training (Madry et al. 2018) on Fashion-MNIST, Linf eps = 0.1.

eps = 0.1 is the Fashion-MNIST radius of CROWN-IBP (Zhang et al., "Towards Stable and
Efficient Training of Verifiably Robust Neural Networks", ICLR 2020). The whole objective
is the loss at PGD-7 points (nominal weight 0), step 2.5 eps / 7, uniform random start:
Madry et al.'s recipe with 7 steps (their CIFAR-10 count) rather than MNIST's 40, which
would make this row alone cost as much as the rest of the study on 2 CPU cores; same
small CNN and schedule as ``configs/standard_fashion_mnist.py``.

  python -m robustjax.main --config=configs/at_fashion_mnist.py --workdir=/tmp/at_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.nominal_weight = 0.0
  c.regularizers.adversarial = base.term('adversarial', weight=1.0, eps=0.1, p=base.INF,
                                         steps=7, step_size=2.5 * 0.1 / 7)
  return c
