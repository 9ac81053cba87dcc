"""Gaussian noise training for randomized smoothing on CIFAR-10 as Cohen, Rosenfeld &
Kolter (ICML 2019, and their code's CIFAR runs): the cross-entropy at x + N(0, σ² I)
only (nominal weight 0), σ ∈ {0.12, 0.25, 0.5, 1.0} (default 0.25); ResNet-110; SGD
lr 0.1, momentum 0.9, weight decay 1e-4, batch 400, lr / 10 every 30 epochs of 90;
random crop + flip.

The model is robustjax's pre-activation ResNet with 18 basic blocks per stage
(16-32-64 channels, 6·18 + 2 = 110 layers): the depth and widths of the paper's
ResNet-110, in He et al.'s pre-activation form with zero-initialised residual branches
(the paper's is the original post-activation ResNet). With BatchNorm, the noisy pass
normalises with the clean batch's statistics (the training step's policy), so the
running averages used at evaluation are the ones the network was trained with.
Pick σ after the file name, then certify with the same σ:

  python -m robustjax.main --config=configs/smoothing_cifar.py:0.50 --workdir=/tmp/smoothing_cifar_050
  python -m robustjax.evaluate --workdir=/tmp/smoothing_cifar_050 --certify=smoothing --sigma=0.50
"""

from configs import base

SIGMAS = (0.12, 0.25, 0.5, 1.0)
RESNET110_STAGE_SIZES = (18, 18, 18)


def get_config(sigma: str = '0.25'):
  """The run for one of the paper's noise levels ``sigma`` (a string from the command)."""
  try:
    value = float(sigma)
  except (TypeError, ValueError):
    value = None
  if value not in SIGMAS:
    raise ValueError(f'sigma must be one of the paper\'s noise levels {SIGMAS}, got '
                     f'{sigma!r} (e.g. --config=configs/smoothing_cifar.py:0.50)')
  c = base.cifar10(model='resnet44', batch_size=400, num_epochs=90)
  c.model.kwargs = {'stage_sizes': RESNET110_STAGE_SIZES}
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = 'piecewise'
  c.optimizer.boundaries = (30 / 90, 60 / 90)
  c.optimizer.decay_factor = 0.1
  c.nominal_weight = 0.0
  c.regularizers.gaussian = base.term('gaussian_augmentation', weight=1.0, sigma=value)
  c.eval.p = 2.0
  c.eval.eps = 0.5
  return c
