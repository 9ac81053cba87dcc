"""SOAR on Fashion-MNIST, fine-tuning the standard small CNN as SOAR's appendix C does.

Objective l(x') + lambda R(x'; z, h), x' one PGD step from a random start (PGD1 init),
lambda = 0.5, alpha = eps = 0.1 (CROWN-IBP's Fashion-MNIST radius in place of 8/255),
value clip 10, the regularizer's gradient clipped to norm 30 (appendix C). SOAR
fine-tunes with a fifth of the standard learning rate (0.002 against 0.01): 0.01 here
against the standard row's 0.05, for as many epochs as the standard row (the study's
budget, not SOAR's 150). First train the standard model, then fine-tune it:

  python -m robustjax.main --config=configs/standard_fashion_mnist.py --workdir=/tmp/standard_fashion_mnist
  python -m robustjax.main --config=configs/soar_fashion_mnist.py --workdir=/tmp/soar_fashion_mnist

(--config.init_from='' trains from scratch instead.)
"""

from configs import base


def get_config():
  c = base.fashion_mnist()
  c.init_from = '/tmp/standard_fashion_mnist'
  c.optimizer.lr = 0.01
  c.nominal_weight = 0.0
  c.regularizers.soar = base.term('soar', weight=0.5, grad_clip=30.0,
                                  aux_loss='loss_at_start', eps=0.1, alpha=0.1,
                                  init='pgd1', num_directions=1, value_clip=10.0)
  return c
