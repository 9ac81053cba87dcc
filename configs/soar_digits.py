"""SOAR on the digits, fine-tuning a standard model as in the SOAR paper (app. C).

Objective l(x') + lambda R(x'; z, h) with x' one PGD step from a random start (PGD1
init), lambda = 0.5, alpha = eps, value clip 10 and the regularizer's gradient clipped
to norm 30. First train the standard model, then fine-tune it:

  python -m robustjax.main --config=configs/standard_digits.py --workdir=/tmp/standard_digits
  python -m robustjax.main --config=configs/soar_digits.py --workdir=/tmp/soar_digits

(--config.init_from='' trains from scratch instead.)
"""

from configs import base


def get_config():
  c = base.digits()
  c.init_from = '/tmp/standard_digits'
  c.optimizer.lr = 0.01  # fine-tuning: a fifth of the standard lr, as SOAR (0.002 / 0.01)
  c.nominal_weight = 0.0
  c.regularizers.soar = base.term('soar', weight=0.5, grad_clip=30.0,
                                  aux_loss='loss_at_start', eps=0.1, alpha=0.1,
                                  init='pgd1', num_directions=1, value_clip=10.0)
  return c
