"""CRT on MNIST, the "3x[1024], softplus" row of Singla & Feizi's certified-accuracy
table ("Second-Order Provable Defenses against Adversarial Attacks", ICML 2020):
784-1024-1024-10, two hidden layers of 1024 softplus units, gamma = 0.05, L2 radius rho = 1.58
(settings as configs/crt_mnist.py).

  python -m robustjax.main --config=configs/crt_mnist_3x1024.py --workdir=/tmp/crt_mnist_3x
"""

from configs import crt_mnist


def get_config():
  return crt_mnist.crt_mnist(3)
