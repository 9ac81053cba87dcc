"""Stochastic Lipschitz regularization with adaptive psi, HHReLU and half-half L2,min
adversarial training (Woods et al. 2019, Sec. III) on Fashion-MNIST: an L2 method.

Woods et al.'s recipe (``base.woods_lipschitz``): CE on a half-half batch (even positions
moved to their L2,min points at eps_RMSE = 0.1, the radius of their CIFAR-10 Table II
rows: L2 radius 0.1 sqrt(784) = 2.8) + psi L_adv,z=2 (K = 1) on that half-adversarial
batch + output zeroing k_out = 0.01, psi by the eq.-15 controller fed the CE of the
half-adversarial batch, L_target = 0.5 (between their CIFAR-10 1.5 and the digits' 0.3:
a standard small CNN reaches about 0.25 on Fashion-MNIST) and k_psi,0 = 1 (their 220 is
for 200 epochs; this run is a few epochs, as the digits config). HHReLU activations in
the small CNN. Evaluated with L2 PGD at 1.0.

  python -m robustjax.main --config=configs/lipschitz_fashion_mnist.py --workdir=/tmp/lipschitz_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.model.kwargs.activation = 'hhrelu'
  base.woods_lipschitz(c, l2min_eps=0.1 * 784 ** 0.5, target_loss=0.5, initial_psi=1.0)
  c.eval.p = 2.0
  c.eval.eps = 1.0
  return c
