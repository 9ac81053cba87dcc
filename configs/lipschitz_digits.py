"""Stochastic Lipschitz regularization with adaptive psi, HHReLU and half-half L2,min
adversarial training (Woods et al. Sec. III) on the embedded digits.

Loss: CE on a half-half batch (even positions moved to their L2,min points, radius
eps_RMSE 0.1 x sqrt(64) = 0.8) + psi * L_adv,z=2 (K = 1 output) evaluated on that
half-adversarial batch (the authors' choice) + output zeroing k_out = 0.01 (not scaled by
psi); psi by the integrating controller of eq. 15 fed the CE of the half-adversarial
batch (k_psi,0 scaled down to 1 for a run of 600 steps).

  python -m robustjax.main --config=configs/lipschitz_digits.py --workdir=/tmp/lipschitz_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.model.kwargs.activation = 'hhrelu'
  base.woods_lipschitz(c, l2min_eps=0.8, target_loss=0.3, initial_psi=1.0)
  return c
