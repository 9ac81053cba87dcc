"""CRT (curvature-based robust training) of a smooth MLP on the embedded digits.

CE at the curvature attack's points + gamma K(theta), gamma = 0.01 (Singla & Feizi 2020's MNIST setting), L2
radius rho = 0.5, softplus MLP 64-64. Evaluated against L2 PGD at eps = 0.5.

  python -m robustjax.main --config=configs/crt_digits.py --workdir=/tmp/crt_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.model.kwargs.activation = 'softplus'
  # The curvature bound reads the Dense layers in pixel space: no standardisation layer.
  c.model.kwargs.mean = None
  c.model.kwargs.std = None
  c.nominal_weight = 0.0
  c.regularizers.crt = base.term('crt', weight=1.0, gamma=0.01, eps=0.5,
                                 activation='softplus')
  c.eval.p = 2.0
  c.eval.eps = 0.5
  return c
