"""LLR (local linearity regularizer) on the embedded digits.

2 CE(x) + lambda g(delta*) + mu |delta*^T grad l(x)| with lambda = 4, mu = 3, nominal
weight 2 (LLR supplement F, CIFAR-10), delta* by Adam steps (step 0.1) in the Linf ball,
eps ramped linearly from 0 over the first third of training.

  python -m robustjax.main --config=configs/llr_digits.py --workdir=/tmp/llr_digits
"""

from configs import base


def get_config():
  c = base.digits()
  c.nominal_weight = 2.0
  c.regularizers.llr = base.term('llr', weight=1.0, schedules={'eps': {'steps': 200}},
                                 eps=0.1, p=base.INF, steps=5, lam=4.0, mu=3.0,
                                 step_size=0.1)
  return c
