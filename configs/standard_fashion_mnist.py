"""Standard (clean cross-entropy) training on Fashion-MNIST: the study's baseline.

Wong & Kolter's small CNN (conv 16 4x4/2, conv 32 4x4/2, dense 100; ``'small_cnn'``),
the model of the certified-training papers' Fashion-MNIST tables (CROWN-IBP, Zhang et al.
2020), so one architecture serves every row that allows it. Batch 128, SGD 0.05 with
momentum 0.9, cosine schedule, 1 epoch (``base.FASHION_EPOCHS``, every Fashion-MNIST
config: the study's training is then ~2.5 CPU-hours for 3 seeds of its 12 rows; the
estimate, and why AutoAttack at every radius does not fit 2.5 h on 2 cores, are in the
suite's comment in ``experiments/reproduce.py``). Evaluated with Linf PGD-20 at eps = 0.1
on the first 1,000 test images.

  python -m robustjax.main --config=configs/standard_fashion_mnist.py --workdir=/tmp/standard_fashion_mnist
"""

from configs import base


def get_config():
  return base.fashion_mnist()
