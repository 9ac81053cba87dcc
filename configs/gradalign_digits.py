"""FGSM + GradAlign (Andriushchenko & Flammarion 2020) on the embedded digits.

CE at one FGSM step from x (zero start, step eps, Linf eps = 0.1; nominal weight 0) plus
lambda (1 - cos(grad l(x), grad l(x + eta))), eta ~ U([-eps, eps]^d), lambda = 0.2 (the
paper's CIFAR-10 value at 8/255). FGSM and PGD accuracy are monitored every 50 steps.

  python -m robustjax.main --config=configs/gradalign_digits.py --workdir=/tmp/gradalign_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.nominal_weight = 0.0
  c.regularizers.fgsm = base.term('fgsm', weight=1.0, eps=0.1, p=base.INF, init='zero',
                                  step_size=0.1)
  c.regularizers.gradalign = base.term('gradalign', weight=0.2, eps=0.1, p=base.INF)
  c.eval.monitor_every_steps = 50
  return c
