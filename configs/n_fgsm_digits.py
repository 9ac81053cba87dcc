"""N-FGSM (de Jorge et al. 2022) on the embedded digits.

The objective is the loss at x + eta + eps sign(grad l(x + eta)), eta ~ U([-2 eps, 2 eps]^d)
(k = 2), Linf eps = 0.1, no projection back to the eps-ball (clipped to the pixel box
only), nominal weight 0. FGSM and PGD accuracy are monitored every 50 steps.

  python -m robustjax.main --config=configs/n_fgsm_digits.py --workdir=/tmp/n_fgsm_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.nominal_weight = 0.0
  c.regularizers.n_fgsm = base.term('n_fgsm', weight=1.0, eps=0.1, noise=2.0, p=base.INF)
  c.eval.monitor_every_steps = 50
  return c
