"""SOAR on CIFAR-10 (app. C): fine-tunes the standard CNN for 150 epochs, lr 0.002 / 10
at epochs 90 and 100, momentum 0.9, weight decay 2e-4, batch 128; objective
l(x') + lambda R(x'), lambda = 0.5, alpha = 8/255, PGD1 start, value clip 10 and the
regularizer's gradient clipped to L2 norm 30. Evaluated as SOAR sec. 5: Linf PGD-20 at
eps = 8/255 with steps of 2/255 (not the 2.5 eps / steps = 1/255 default). Train the
standard model first:

  python -m robustjax.main --config=configs/standard_cifar.py --workdir=/tmp/standard_cifar
  python -m robustjax.main --config=configs/soar_cifar.py --workdir=/tmp/soar_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='cnn', batch_size=128, num_epochs=150)
  c.init_from = '/tmp/standard_cifar'
  c.optimizer.lr = 0.002
  c.optimizer.boundaries = (90 / 150, 100 / 150)
  c.nominal_weight = 0.0
  c.regularizers.soar = base.term('soar', weight=0.5, grad_clip=30.0,
                                  aux_loss='loss_at_start', eps=8 / 255, alpha=8 / 255,
                                  init='pgd1', num_directions=1, value_clip=10.0)
  c.eval.eps = 8 / 255
  c.eval.steps = 20
  c.eval.step_size = 2 / 255
  return c
