"""PGD-40 adversarial training on MNIST as Madry et al. (Linf eps 0.3, step 0.01, random
start), on the 4-layer CNN.

  python -m robustjax.main --config=configs/at_mnist.py --workdir=/tmp/at_mnist
"""

from configs import base


def get_config():
  c = base.mnist(model='cnn')
  c.nominal_weight = 0.0
  c.regularizers.adversarial = base.term('adversarial', weight=1.0, eps=0.3, p=base.INF,
                                         steps=40, step_size=0.01)
  return c
