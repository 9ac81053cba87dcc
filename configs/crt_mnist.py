"""CRT on MNIST as in the CRT table of Singla & Feizi, "Second-Order Provable Defenses
against Adversarial Attacks" (ICML 2020): 2 x [1024] sigmoid MLP, gamma = 0.01, L2
radius rho = 1.58; evaluated with L2 PGD at 1.58. No optimizer is given there: Adam
1e-3, 30 epochs here.

  python -m robustjax.main --config=configs/crt_mnist.py --workdir=/tmp/crt_mnist
"""

from configs import base


def get_config():
  c = base.mnist(model='mlp', num_epochs=30)
  # The curvature bound reads the Dense layers in pixel space: no standardisation layer.
  c.model.kwargs = {'widths': (1024, 1024), 'activation': 'softplus', 'mean': None,
                    'std': None}
  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.momentum = 0.0
  c.nominal_weight = 0.0
  c.regularizers.crt = base.term('crt', weight=1.0, gamma=0.01, eps=1.58,
                                 activation='softplus')
  c.eval.p = 2.0
  c.eval.eps = 1.58
  c.eval.step_size = 0.0
  return c
