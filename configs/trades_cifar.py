"""TRADES on CIFAR-10 as the LLR supplement's recreated baseline (Table F2): Wide-ResNet-
28-8 with softplus, beta = 6, x' by 10 PGD steps (step 2/255) on the KL in the Linf
ball 8/255; LLR's CIFAR schedule (lr 0.1, / 10 after epochs 100 and 105, 110 epochs,
momentum 0.9, weight decay 2e-4, batch 256).

  python -m robustjax.main --config=configs/trades_cifar.py --workdir=/tmp/trades_cifar
"""

from configs import base


def get_config():
  c = base.cifar10(model='wrn28_8', batch_size=256, num_epochs=110)
  c.model.kwargs = {'activation': 'softplus'}
  c.optimizer.lr = 0.1
  c.optimizer.boundaries = (100 / 110, 105 / 110)
  c.regularizers.trades = base.term('trades', weight=1.0, beta=6.0, eps=8 / 255,
                                    p=base.INF, steps=10, step_size=2 / 255)
  return c
