"""Stochastic Lipschitz regularization on CIFAR-10 as Woods et al. (Sec. III-I1, IV-B):
pre-activation ResNet-44 with HHReLU, adaptive psi (eq. 15, L_target 1.007, k_psi,0 220,
k_psi 0.02, eps_better 1, eps_worse 0.01), L_adv,z=2 with K = 1, output zeroing 0.01,
half-half L2,min adversarial training at eps_RMSE 0.1 (L2 0.1 sqrt(3072)); SGD momentum
0.9, L2 1e-4, batch 256, lr 0.02 -> 0.2 over 10 epochs, 0.02 at 170 and 0.002 at 195,
200 epochs. Evaluated with L2 PGD at 0.5.

  python -m robustjax.main --config=configs/lipschitz_cifar.py --workdir=/tmp/lipschitz_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='resnet44', batch_size=256, num_epochs=200)
  c.model.kwargs = {'activation': 'hhrelu'}
  c.optimizer.lr = 0.2
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_steps = base.epochs(10, 'cifar10', 256)
  c.optimizer.warmup_init = 0.1
  c.optimizer.boundaries = (170 / 200, 195 / 200)
  base.woods_lipschitz(c, l2min_eps=0.1 * 3072 ** 0.5, target_loss=1.007,
                       initial_psi=220.0)
  c.eval.p = 2.0
  c.eval.eps = 0.5
  return c
