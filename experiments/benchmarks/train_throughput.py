r"""Training throughput of every method's step, as a ratio to a plain cross-entropy step.

For each method the objective is taken from its config file (``configs/<method>_digits.py``
for the digits model, ``configs/<method>_cifar.py`` for the CIFAR-shaped model) and the
full jitted, sharded train step of :mod:`robustjax.training` is timed: value and
gradient of the whole objective, optimizer update, metrics. Models: the digits MLP of
the digits configs (batch 64, 8x8x1), SOAR's 4-layer CNN (batch 128, 32x32x3, the
method's activation) and the Fashion-MNIST model of ``configs/<method>_fashion_mnist.py``
(each config's own model: Wong & Kolter's small CNN, or the CRT rows' 784-1024-10
softplus MLP; batch 128, 28x28x1). For the Fashion-MNIST model the plain step is also
timed in PyTorch (the same small CNN, CE, SGD with momentum, one thread per core or
``--torch_threads``, on the same CPU) when torch is installed: ``x torch`` is robustjax's time over PyTorch's.
Medians over timed steps after one warm-up step, one run.
``--unshared`` times the step with the nominal cross-entropy from its own clean pass
(``make_train_step(share_nominal=False)``) instead of the penalty's clean loss, the
behaviour before the two were shared.

  python experiments/benchmarks/train_throughput.py [--models=digits,cifar] [--steps=30] [--cifar_steps=3]
  python experiments/benchmarks/train_throughput.py --models=fashion_mnist [--fashion_steps=10] [--torch_threads=1]
  python experiments/benchmarks/train_throughput.py --models=cifar --methods=standard,gradnorm --unshared
  python experiments/benchmarks/train_throughput.py --models=digits,fashion_mnist --methods=standard,llr,at,fgsm,n_fgsm,gradalign,elle,elle_a --steps=40 --fashion_steps=40
  python experiments/benchmarks/train_throughput.py --models=cifar --conv_impl=xla  # before conv.py
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from robustjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position
from robustjax.training import optim  # pylint: disable=g-import-not-at-top,wrong-import-position
from robustjax.training import step as step_lib  # pylint: disable=g-import-not-at-top,wrong-import-position

METHODS = ('standard', 'at', 'trades', 'gradnorm', 'cure', 'scorpio', 'soar', 'llr',
           'lipschitz', 'crt', 'fgsm', 'n_fgsm', 'gradalign', 'elle', 'elle_a')


def load_config(name):
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  if not os.path.exists(path):
    return None
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def build(config, kind, conv_impl='auto'):
  """(model, input_shape, batch_size) for the benchmark model of ``kind``."""
  if kind == 'fashion_mnist':
    from robustjax.training import feed  # pylint: disable=g-import-not-at-top
    from robustjax.training import train  # pylint: disable=g-import-not-at-top
    info = feed.info(config.dataset)
    return train.build_model(config, info), info.input_shape, 128
  kwargs = dict(config.model.kwargs)
  activation = kwargs.get('activation', 'relu')
  if kind == 'digits':
    model = models.create('mlp', num_classes=10, widths=tuple(kwargs.get('widths', (64, 64))),
                          activation=activation, mean=kwargs.get('mean', 0.3),
                          std=kwargs.get('std', 0.38))
    return model, (8, 8, 1), 64
  model = models.create('cnn', num_classes=10, activation=activation, conv_impl=conv_impl)
  return model, (32, 32, 3), 128


def time_method(config, kind, steps, mesh, share_nominal=True, conv_impl='auto'):
  """Median seconds per train step of ``config``'s objective on the ``kind`` model."""
  model, shape, batch = build(config, kind, conv_impl)
  batch = batch - batch % mesh.size
  tx, schedule = optim.make_optimizer(config.optimizer, 1000)
  controller = step_lib.controller_from_config(config.controller)
  train_step = step_lib.jit_train_step(step_lib.train_step_from_config(
      config, model, tx, schedule, controller=controller, share_nominal=share_nominal),
      mesh)
  state = step_lib.init_state(model, tx, rng=jax.random.PRNGKey(0), input_shape=shape,
                              mesh=mesh, controller=controller)
  rng = np.random.default_rng(0)
  x = rng.random((batch, *shape), dtype=np.float32)
  y = rng.integers(0, 10, batch).astype(np.int32)
  data = step_lib.global_batch((x, y), mesh)
  state, metrics = train_step(state, data)  # compile + warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = train_step(state, data)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return statistics.median(times), batch


def time_torch_small_cnn(steps: int, batch: int = 128, threads: int = 0):
  """Median seconds of PyTorch's plain step on the same small CNN (None: no torch).

  ``threads``: PyTorch's intra-op threads (0 = one per core). On a loaded machine its
  spinning OpenMP threads slow it down far more than XLA; benchmark on a quiet one.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  torch.set_num_threads(threads or os.cpu_count() or 1)
  net = torch.nn.Sequential(
      torch.nn.Conv2d(1, 16, 4, stride=2, padding=1), torch.nn.ReLU(),
      torch.nn.Conv2d(16, 32, 4, stride=2, padding=1), torch.nn.ReLU(),
      torch.nn.Flatten(), torch.nn.Linear(32 * 7 * 7, 100), torch.nn.ReLU(),
      torch.nn.Linear(100, 10))
  opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
  rng = np.random.default_rng(0)
  x = torch.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32))
  y = torch.from_numpy(rng.integers(0, 10, batch))
  mean, std = 0.2860, 0.3530  # standardisation inside the model, as robustjax's

  def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net((x - mean) / std), y)
    loss.backward()
    opt.step()
    return loss.detach().item()

  for _ in range(3):  # warm-up: oneDNN picks its kernels on the first calls
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='digits,cifar')
  parser.add_argument('--steps', type=int, default=30, help='timed steps, digits model')
  parser.add_argument('--cifar_steps', type=int, default=3, help='timed steps, CNN')
  parser.add_argument('--fashion_steps', type=int, default=10,
                      help='timed steps, Fashion-MNIST model')
  parser.add_argument('--torch_threads', type=int, default=0,
                      help="PyTorch's threads for its plain step (0 = one per core)")
  parser.add_argument('--methods', default=','.join(METHODS))
  parser.add_argument('--unshared', action='store_true',
                      help='nominal CE from a separate clean pass (the old step)')
  parser.add_argument('--conv_impl', default='auto', choices=('auto', 'xla', 'patches'),
                      help="the CNN's conv_impl (robustjax.models.conv)")
  args = parser.parse_args()
  mesh = step_lib.make_mesh()
  print(f'devices: {len(jax.devices())} x {jax.devices()[0].platform}; medians of '
        f'{args.steps} (digits) / {args.cifar_steps} (CNN) steps after one warm-up step; '
        f'nominal CE {"from its own clean pass" if args.unshared else "shared"}')
  for kind in args.models.split(','):
    rows = []
    plain = None
    for method in args.methods.split(','):
      suffix = {'digits': 'digits', 'fashion_mnist': 'fashion_mnist'}.get(kind, 'cifar')
      config = load_config(f'{method}_{suffix}')
      if config is None:
        rows.append((method, None, None, 'no config for this model'))
        continue
      steps = {'digits': args.steps, 'fashion_mnist': args.fashion_steps}.get(
          kind, args.cifar_steps)
      seconds, batch = time_method(config, kind, steps, mesh,
                                   share_nominal=not args.unshared,
                                   conv_impl=args.conv_impl)
      if method == 'standard':
        plain = seconds
      terms = ', '.join(f'{t.name}' for t in step_lib.resolve_terms(config)) or 'CE'
      rows.append((method, seconds, batch / seconds, terms))
      print(f'  {kind} {method}: {1e3 * seconds:.1f} ms/step', file=sys.stderr, flush=True)
    title = {'digits': 'digits MLP 64-64, batch 64, 8x8x1',
             'fashion_mnist': 'Fashion-MNIST: small CNN 16-32-100 (CRT: MLP 784-1024-10), '
                              'batch 128, 28x28x1'}.get(
                 kind, f'SOAR CNN 32-32-64-64, batch 128, 32x32x3, '
                       f'conv_impl={args.conv_impl}')
    print(f'\n{title}')
    print(f'| method | ms/step | images/s | x plain step | objective |')
    print('| --- | ---: | ---: | ---: | --- |')
    for method, seconds, ips, terms in rows:
      if seconds is None:
        print(f'| {method} | - | - | - | {terms} |')
        continue
      ratio = seconds / plain if plain else float('nan')
      print(f'| {method} | {1e3 * seconds:.1f} | {ips:.0f} | {ratio:.2f} | {terms} |')
    if kind == 'fashion_mnist' and plain:
      torch_seconds = time_torch_small_cnn(args.fashion_steps,
                                           threads=args.torch_threads)
      if torch_seconds is None:
        print('PyTorch: not installed, no comparison')
      else:
        print(f'| standard, PyTorch {__import__("torch").__version__} (same small CNN, '
              f'{__import__("torch").get_num_threads()} threads) | '
              f'{1e3 * torch_seconds:.1f} | {128 / torch_seconds:.0f} | '
              f'{torch_seconds / plain:.2f} | CE |')
        print(f'robustjax plain step / PyTorch plain step: {plain / torch_seconds:.2f}x')


if __name__ == '__main__':
  main()
