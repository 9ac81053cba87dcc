"""CROWN-IBP certified training (Zhang et al., ICLR 2020) of Wong & Kolter's small CNN on
Fashion-MNIST at L∞ ε = 0.1 (the paper's Fashion-MNIST radius).

κ 1 -> 0 and β 1 -> 0 while ε ramps 0 -> 0.1 (the paper's schedules), scaled to 20
epochs: one clean epoch, a 10-epoch ramp; Adam 5e-4, batch 128.

  python -m robustjax.main --config=configs/crown_ibp_fashion_mnist.py --workdir=/tmp/crown_ibp_fmnist
"""

from configs import ibp_digits
from configs import ibp_fashion_mnist


def get_config():
  c = ibp_fashion_mnist.preset()
  c.regularizers.crown_ibp = ibp_digits.certified_term(
      'crown_ibp', eps=0.1, kappa=0.0, beta=0.0, ramp=ibp_fashion_mnist.ramp(),
      model='small_cnn')
  return c
