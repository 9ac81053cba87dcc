"""Stochastic Lipschitz regularization with adaptive psi, HHReLU and half-half L2,min
adversarial training (Woods et al. Sec. III) on the embedded digits.

Loss: CE on a half-half batch (even positions moved to their L2,min points, radius
eps_RMSE 0.1 x sqrt(64) = 0.8) + psi * L_adv,z=2 (K = 1 output, output zeroing
k_out = 0.01), psi by the integrating controller of eq. 15 (k_psi,0 and k_psi scaled
down for a run of 600 steps).

  python -m robustjax.main --config=configs/lipschitz_digits.py --workdir=/tmp/lipschitz_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.model.kwargs.activation = 'hhrelu'
  c.nominal_weight = 0.0
  c.regularizers.l2min = base.term('adversarial_l2min', weight=1.0, eps=0.8, steps=7,
                                   half_half=True)
  c.regularizers.lipschitz = base.term('lipschitz', weight=1.0, psi=1.0, num_outputs=1,
                                       power=2.0, output_zeroing=0.01)
  c.controller.name = 'adaptive_psi'
  c.controller.term = 'lipschitz'
  c.controller.target_loss = 0.3
  c.controller.k0 = 1.0
  c.controller.k = 0.02
  c.controller.eps_better = 1.0
  c.controller.eps_worse = 0.01
  return c
