"""robustjax's AutoAttack against the official code on the same weights and test points.

Run (after ``pip install -e '.[bench]'`` with a CPU build of PyTorch)::

  python experiments/benchmarks/autoattack_vs_official.py [--num_examples 360] \
      [--eps 0.1] [--norm inf] [--root /tmp/robustjax_aa_bench]
  python experiments/benchmarks/autoattack_vs_official.py --norm 1 --eps 1.0 \
      --num_examples 200  # the L1 version (L1-APGD with the 3ε/2ε/ε schedule, L1 Square)

The official AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks"; the PyPI package
``pyautoattack``, PyTorch) attacks a PyTorch port of each model; robustjax's
:func:`robustjax.attacks.autoattack` attacks the JAX original. Models: the digits MLP of
``configs/standard_digits.py`` and a small CNN (SOAR's 4-layer CNN on 8x8 digits), each
trained once with standard training and with PGD adversarial training
(``configs/at_digits.py``) into ``--root`` (reused when present), and ``random_cnn32``,
the same CNN on 32x32x3 inputs (random weights, synthetic images labelled by the model:
:func:`image32_model`), where Square's window schedule and the conv costs differ from 8x8.
``--workdirs`` adds trained robustjax runs (ReLU MLP, CNN or SmallCNN), e.g. the
Fashion-MNIST study's standard SmallCNN at 28x28::

  python experiments/benchmarks/autoattack_vs_official.py --models= --norm 2 --eps 0.5 \
      --num_examples 1000 --workdirs=<study out>/runs/standard/seed0

The port's logits are checked against the JAX logits before anything is attacked.
Smoke run: ``--models random_cnn32 --num_examples 16 --eps 0.01``.

Printed per model: clean accuracy, robust accuracy of each implementation (the
``standard`` version, same eps and norm), the points only one of them broke, wall time of
each (robustjax with compilation, and warm: a second call with another seed), and the
ratios. Targets (issue 7): robustjax's robust accuracy at most 1 point above the
official one on every model; wall time at most 0.5x the official code's.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks
from robustjax import training
from robustjax.training import feed
from robustjax.training import train as train_lib

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from configs import at_digits  # pylint: disable=g-import-not-at-top,wrong-import-position
from configs import standard_digits  # pylint: disable=g-import-not-at-top,wrong-import-position

CNN_KWARGS = {'channels': (16, 16, 32, 32), 'hidden': ()}


def _configs():
  """name -> training config of the four benchmarked models."""
  out = {}
  for method, module in (('standard', standard_digits), ('at', at_digits)):
    for arch in ('mlp', 'cnn'):
      config = module.get_config()
      if arch == 'cnn':
        config.model.name = 'cnn'
        config.model.kwargs = dict(CNN_KWARGS)
      out[f'{method}_{arch}'] = config
  return out


def train_models(root: str) -> dict[str, str]:
  """Trains (or reuses) each model; returns name -> workdir."""
  workdirs = {}
  for name, config in _configs().items():
    workdir = os.path.join(root, name)
    if not os.path.exists(os.path.join(workdir, 'final_metrics.json')):
      print(f'training {name} into {workdir} ...', flush=True)
      training.train_and_evaluate(config, workdir)
    workdirs[name] = workdir
  return workdirs


def torch_port(config, params):
  """A PyTorch module computing the same logits as the Flax MLP / CNN (NHWC inputs)."""
  module = train_lib.build_model(config, feed.info(config.dataset))
  return port_module(module, config.model.name, params)


def port_module(module, arch, params):
  """The PyTorch port of a Flax ``models.create('mlp' | 'cnn' | 'small_cnn')`` module."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  mean = None if module.mean is None else torch.tensor(np.asarray(module.mean, np.float32))
  std = None if module.std is None else torch.tensor(np.asarray(module.std, np.float32))
  if getattr(module, 'activation', 'relu') != 'relu':
    raise ValueError('the port supports ReLU models only')

  def dense(p):
    layer = nn.Linear(*np.asarray(p['kernel']).shape)
    layer.weight.data = torch.tensor(np.asarray(p['kernel']).T.copy())
    layer.bias.data = torch.tensor(np.asarray(p['bias']).copy())
    return layer

  def conv(p):
    kernel = np.asarray(p['kernel'])  # [kh, kw, in, out]
    if arch == 'small_cnn':  # 4x4, stride 2, padding 1 (SmallCNN)
      layer = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], stride=2,
                        padding=1)
    else:
      layer = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], padding='same')
    layer.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
    layer.bias.data = torch.tensor(np.asarray(p['bias']).copy())
    return layer

  denses = [dense(params[k]) for k in sorted((k for k in params if k.startswith('Dense')),
                                             key=lambda k: int(k.split('_')[1]))]
  convs = [conv(params[k]) for k in sorted((k for k in params if k.startswith('Conv')),
                                           key=lambda k: int(k.split('_')[1]))]

  class Port(nn.Module):
    """Inputs NHWC in [0, 1], as the JAX model."""

    def __init__(self):
      super().__init__()
      self.denses = nn.ModuleList(denses)
      self.convs = nn.ModuleList(convs)

    def forward(self, x):
      if mean is not None:
        x = x - mean
      if std is not None:
        x = x / std
      if self.convs:
        h = x.permute(0, 3, 1, 2)
        for i, layer in enumerate(self.convs):
          h = torch.relu(layer(h))
          if arch == 'cnn' and i in (1, 3):
            h = nn.functional.max_pool2d(h, 2, 2)
        x = h.permute(0, 2, 3, 1)  # flatten in Flax's (H, W, C) order
      x = x.reshape(x.shape[0], -1)
      for layer in self.denses[:-1]:
        x = torch.relu(layer(x))
      return self.denses[-1](x)

  return Port().eval()


IMAGE32 = 'random_cnn32'


def image32_model(num_examples, seed):
  """A 32x32x3 model: SOAR's 4-layer CNN (``CNN_KWARGS``) at its random initialisation,
  on smooth random images (a 4x4 grid of colours, bilinearly upsampled, plus pixel noise),
  labelled by its own predictions. No CIFAR-10 here: the point is the input size, where
  Square's windows and the attacks' costs differ from 8x8 digits.

  Returns ``(module, params, logits_fn, x [N, 32, 32, 3], y [N])``.
  """
  from robustjax import models  # pylint: disable=g-import-not-at-top
  key = jax.random.PRNGKey(seed)
  module = models.create('cnn', num_classes=10, **CNN_KWARGS)
  params, rest = models.split_variables(models.init(module, key, (32, 32, 3)))
  logits_fn = models.logits_fn_for(module, rest)
  coarse = jax.random.uniform(jax.random.fold_in(key, 1), (num_examples, 4, 4, 3))
  x = jax.image.resize(coarse, (num_examples, 32, 32, 3), 'bilinear')
  x = jnp.clip(x + 0.05 * jax.random.normal(jax.random.fold_in(key, 2), x.shape), 0, 1)
  x = np.asarray(x, np.float32)
  y = np.asarray(jnp.argmax(logits_fn(params, x), -1)).astype(np.int32)
  return module, params, logits_fn, x, y


def run_official(model, x, y, *, eps, norm, seed):
  """Adversarial points from the official AutoAttack ('standard'), and its wall time."""
  import torch  # pylint: disable=g-import-not-at-top
  from pyautoattack import AutoAttack  # pylint: disable=g-import-not-at-top
  logging.getLogger('auto-attack').setLevel(logging.WARNING)
  adversary = AutoAttack(model, norm={math.inf: 'Linf', 2.0: 'L2', 1.0: 'L1'}[norm], eps=eps,
                         version='standard', seed=seed, device='cpu')
  adversary.verbose = False
  xt, yt = torch.tensor(x), torch.tensor(y.astype(np.int64))
  start = time.perf_counter()
  x_adv, _ = adversary.run_standard_evaluation(xt, yt, batch_size=len(x))
  elapsed = time.perf_counter() - start
  with torch.no_grad():
    robust = (model(x_adv).argmax(1) == yt).numpy()
  return robust, x_adv.numpy(), elapsed


def run_robustjax(logits_fn, params, x, y, *, eps, norm, seed):
  """``(robust [N] bool, x_adv, wall seconds)`` of robustjax's AutoAttack."""
  start = time.perf_counter()
  result = attacks.autoattack(logits_fn, params, (jnp.asarray(x), jnp.asarray(y)),
                              rng=jax.random.PRNGKey(seed), eps=eps, p=norm)
  robust = np.asarray(result.robust)
  return robust, np.asarray(result.inputs), time.perf_counter() - start


def _check_ball(x_adv, x, eps, norm) -> float:
  """Largest violation of the eps-ball and the [0, 1] box (0 when inside)."""
  delta = (x_adv - x).reshape(len(x), -1)
  norms = np.linalg.norm(delta, ord=norm, axis=1)
  # + 0.0: -np.min of an all-zero image is -0.0, which printed as '-0.00e+00'
  return float(max(np.max(norms) - eps, -np.min(x_adv), np.max(x_adv) - 1.0, 0.0)) + 0.0


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--root', default='/tmp/robustjax_aa_bench')
  parser.add_argument('--num_examples', type=int, default=360)
  parser.add_argument('--eps', type=float, default=0.1)
  parser.add_argument('--norm', type=float, default=math.inf)
  parser.add_argument('--models', default='standard_mlp,standard_cnn,at_mlp,at_cnn,'
                      + IMAGE32, help=f'comma list; {IMAGE32} is the 32x32x3 model')
  parser.add_argument('--workdirs', default='',
                      help='comma list of further robustjax run directories (MLP, CNN or '
                      'SmallCNN with ReLU, e.g. a Fashion-MNIST run), attacked on their '
                      'own test set')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)

  names = [n for n in args.models.split(',') if n]
  workdirs = train_models(args.root) if set(names) - {IMAGE32} else {}
  for path in filter(None, args.workdirs.split(',')):
    names.append(path)
    workdirs[path] = path
  rows = []
  for name in names:
    if name == IMAGE32:
      module, params, logits_fn, x, y = image32_model(args.num_examples, args.seed)
      port = port_module(module, 'cnn', jax.device_get(params))
    else:
      config, logits_fn, params = training.restore(workdirs[name])
      x, y = feed.eval_arrays(config.dataset, split='test', num_examples=args.num_examples)
      port = torch_port(config, jax.device_get(params))
    with torch.no_grad():
      gap = np.max(np.abs(port(torch.tensor(x)).numpy() - np.asarray(logits_fn(params, x))))
    if gap > 1e-3:
      raise RuntimeError(f'{name}: the PyTorch port differs from the JAX model by {gap}')
    clean = float(np.mean(np.argmax(np.asarray(logits_fn(params, x)), 1) == y))
    rob_off, adv_off, t_off = run_official(port, x, y, eps=args.eps, norm=args.norm,
                                           seed=args.seed)
    rob_rj, adv_rj, t_cold = run_robustjax(logits_fn, params, x, y, eps=args.eps,
                                           norm=args.norm, seed=args.seed)
    _, _, t_warm = run_robustjax(logits_fn, params, x, y, eps=args.eps, norm=args.norm,
                                 seed=args.seed + 1)
    row = dict(model=name, clean=clean, official=float(rob_off.mean()),
               robustjax=float(rob_rj.mean()),
               only_official=int(np.sum(~rob_off & rob_rj)),
               only_robustjax=int(np.sum(rob_off & ~rob_rj)), t_official=t_off,
               t_cold=t_cold, t_warm=t_warm,
               ball_violation=max(_check_ball(adv_rj, x, args.eps, args.norm),
                                  _check_ball(adv_off, x, args.eps, args.norm)))
    rows.append(row)
    print(f'{name}: done ({t_off:.1f} s official, {t_cold:.1f} s robustjax)', flush=True)

  norm_name = 'Linf' if math.isinf(args.norm) else f'L{args.norm:g}'
  print(f'\nAutoAttack standard, {norm_name} eps={args.eps:g}, {args.num_examples} test '
        f'points of each model\'s data (the digits models: digits; {IMAGE32}: synthetic '
        f'32x32x3 images; a run directory: its own dataset), CPU ({os.cpu_count()} cores), '
        f'jax {jax.__version__}, torch {torch.__version__}')
  print('| model | clean | robust (official) | robust (robustjax) | broken only by official '
        '| broken only by robustjax | official s | robustjax s (cold / warm) '
        '| time ratio cold / warm |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for r in rows:
    print(f"| {r['model']} | {r['clean']:.3f} | {r['official']:.3f} | {r['robustjax']:.3f} "
          f"| {r['only_official']} | {r['only_robustjax']} | {r['t_official']:.1f} "
          f"| {r['t_cold']:.1f} / {r['t_warm']:.1f} "
          f"| {r['t_cold'] / r['t_official']:.2f} / {r['t_warm'] / r['t_official']:.2f} |")
  worst = max(r['robustjax'] - r['official'] for r in rows)
  print(f'\nlargest (robustjax - official) robust accuracy: {100 * worst:+.1f} points '
        f'(target <= +1.0); largest ball/box violation: '
        f'{max(r["ball_violation"] for r in rows):.2e}')


if __name__ == '__main__':
  main()
