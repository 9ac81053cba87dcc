"""Standard (clean cross-entropy) training on Fashion-MNIST: the study's baseline.

Wong & Kolter's small CNN (conv 16 4x4/2, conv 32 4x4/2, dense 100; ``'small_cnn'``),
the model of the certified-training papers' Fashion-MNIST tables (CROWN-IBP, Zhang et al.
2020), so one architecture serves every row that allows it. Batch 128, SGD 0.05 with
momentum 0.9, cosine schedule, ``base.FASHION_EPOCHS`` epochs (sized so the 3-seed study
fits 2.5 h on 2 CPU cores, see ``experiments/reproduce.py``). Evaluated with Linf PGD-20
at eps = 0.1.

  python -m robustjax.main --config=configs/standard_fashion_mnist.py --workdir=/tmp/standard_fashion_mnist
"""

from configs import base


def get_config():
  return base.fashion_mnist()
