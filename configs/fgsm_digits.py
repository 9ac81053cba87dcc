"""FGSM training with a random start (Wong et al. 2020, FGSM-RS) on the embedded digits.

The catastrophic-overfitting baseline of the single-step methods: the whole objective is
the loss at one FGSM step (nominal weight 0), Linf eps = 0.1, uniform start in the ball,
step 1.25 eps, projected back onto the ball. The run monitors FGSM and PGD accuracy every
50 steps and flags catastrophic overfitting (robustjax.training.monitor).

  python -m robustjax.main --config=configs/fgsm_digits.py --workdir=/tmp/fgsm_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.nominal_weight = 0.0
  c.regularizers.fgsm = base.term('fgsm', weight=1.0, eps=0.1, p=base.INF, init='uniform',
                                  step_size=1.25 * 0.1)
  c.eval.monitor_every_steps = 50
  return c
