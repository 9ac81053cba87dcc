"""CRT on MNIST, the "2x[1024], softplus" row of the certified-accuracy table of Singla &
Feizi, "Second-Order Provable Defenses against Adversarial Attacks" (ICML 2020).

The paper's "Lx[1024]" networks have L linear layers (the authors' ``Net(num_layers=L)``):
2x[1024] is 784-1024-10, one hidden layer of 1024 softplus units. CRT with gamma = 0.01,
L2 radius rho = 1.58 (the table's CRT, 0.01: 98.68% standard, 69.79% certified);
evaluated with L2 PGD at 1.58. No optimizer is given there: Adam 1e-3, 30 epochs here.
The 3x and 4x rows: configs/crt_mnist_3x1024.py, configs/crt_mnist_4x1024.py.

  python -m robustjax.main --config=configs/crt_mnist.py --workdir=/tmp/crt_mnist
"""

from configs import base

# The table's CRT rows: linear layers -> gamma.
GAMMAS = {2: 0.01, 3: 0.05, 4: 0.07}


def crt_mnist(num_layers: int):
  """The paper's ``num_layers`` x [1024] softplus MLP trained by CRT at its gamma."""
  c = base.mnist(model='mlp', num_epochs=30)
  # The curvature bound reads the Dense layers in pixel space: no standardisation layer.
  c.model.kwargs = {'widths': (1024,) * (num_layers - 1), 'activation': 'softplus',
                    'mean': None, 'std': None}
  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.momentum = 0.0
  c.nominal_weight = 0.0
  c.regularizers.crt = base.term('crt', weight=1.0, gamma=GAMMAS[num_layers], eps=1.58,
                                 activation='softplus')
  c.eval.p = 2.0
  c.eval.eps = 1.58
  c.eval.step_size = 0.0
  return c


def get_config():
  return crt_mnist(2)
