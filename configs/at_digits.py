"""PGD-k adversarial training (Madry et al.) on the embedded digits.

The whole objective is the loss at PGD-7 points (nominal weight 0), Linf eps = 0.1,
step 2.5 eps / 7, uniform random start, as Madry et al.

  python -m robustjax.main --config=configs/at_digits.py --workdir=/tmp/at_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.nominal_weight = 0.0
  c.regularizers.adversarial = base.term('adversarial', weight=1.0, eps=0.1, p=base.INF,
                                         steps=7, step_size=2.5 * 0.1 / 7)
  return c
