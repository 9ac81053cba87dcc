"""IBP certified training (Gowal et al. 2018) of Wong & Kolter's small CNN on
Fashion-MNIST at L∞ ε = 0.1 (CROWN-IBP's Fashion-MNIST radius).

Gowal et al.'s schedule scaled to 20 epochs: one clean epoch, then ε ramps 0 -> 0.1 and
κ 1 -> 0.5 over 10 epochs; Adam 5e-4 (Zhang et al. 2020's MNIST optimizer), batch 128.
The papers train 100-200 epochs; this is the budget of a 2-core machine.

  python -m robustjax.main --config=configs/ibp_fashion_mnist.py --workdir=/tmp/ibp_fmnist
"""

from configs import base
from configs import ibp_digits

EPOCHS = 20


def ramp():
  return {'begin': base.epochs(1, 'fashion_mnist', 128),
          'steps': base.epochs(10, 'fashion_mnist', 128)}


def preset():
  """Fashion-MNIST, small_cnn (ReLU, pixel space), Adam 5e-4, nominal weight 0."""
  c = base.fashion_mnist(model='small_cnn', num_epochs=EPOCHS)
  c.model.kwargs = {'activation': 'relu', 'mean': None, 'std': None}
  c.optimizer.name = 'adam'
  c.optimizer.lr = 5e-4
  c.optimizer.momentum = 0.0
  c.nominal_weight = 0.0
  c.eval.eps = 0.1
  return c


def get_config():
  c = preset()
  c.regularizers.ibp = ibp_digits.certified_term('ibp', eps=0.1, kappa=0.5, ramp=ramp(),
                                                 model='small_cnn')
  return c
