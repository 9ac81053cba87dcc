"""CRT (Singla & Feizi, "Second-Order Provable Defenses against Adversarial Attacks",
ICML 2020) on Fashion-MNIST: the paper's "2x[1024]" softplus MLP, an L2 method.

CRT and its CRC certificate need a smooth MLP, so this row cannot use the small CNN. The
paper's 2x[1024] network is, in the authors' code (``Net(num_layers=2)``), two linear
layers with one hidden layer of 1024: 784-1024-10 with softplus. CE at the curvature
attack's points + gamma K(theta), gamma = 0.01 and L2 radius rho = 1.58 (the paper's
MNIST setting; 1.58 is also one of the study's certified radii), Adam 1e-3 as
``configs/crt_mnist.py`` (the paper gives no optimizer), the study's base.FASHION_EPOCHS epochs. The
curvature attack that finds the CE's points runs 6 bisection steps on eta with 4
majorise-minimise steps each instead of the reference code's 30 x 10: on this MLP the
full attack costs ~7.6 s a step on 2 CPU cores (~0.36 s with 6 x 4), more than the rest
of the study; the certificate (CRC) at evaluation keeps its full settings. No
standardisation layer: the curvature bound reads the Dense layers in pixel space.
Evaluated with L2 PGD at 1.58.

  python -m robustjax.main --config=configs/crt_fashion_mnist.py --workdir=/tmp/crt_fashion_mnist
"""

from configs import base


def get_config():
  c = base.fashion_mnist(model='mlp')
  c.model.kwargs = {'widths': (1024,), 'activation': 'softplus', 'mean': None,
                    'std': None}
  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.momentum = 0.0
  c.nominal_weight = 0.0
  c.regularizers.crt = base.term('crt', weight=1.0, gamma=0.01, eps=1.58,
                                 activation='softplus', bisection_steps=6, inner_steps=4)
  c.eval.p = 2.0
  c.eval.eps = 1.58
  return c
