r"""Convolution nets' passes on this machine: JAX with conv_impl 'xla' and 'patches' vs PyTorch.

For each model, times the forward pass, the input gradient, the parameter gradient and a
plain training step (cross-entropy gradient plus an SGD-momentum update), jitted in JAX
and eager in PyTorch (``torch.nn`` on NCHW tensors, the same architecture), all in
train mode (BatchNorm on the batch's statistics). Every repetition runs every
(model, implementation, pass) once, interleaved, so that load on the machine hits them
alike; the table shows medians and each JAX time as a multiple of PyTorch's. Models:
SOAR's 4-layer CNN (batch 128, 32x32x3), pre-activation ResNet-18 (CIFAR stem, batch
128, 32x32x3) and the same 4-layer CNN on digits (batch 64, 8x8x1).

  python experiments/benchmarks/conv_speed.py [--models=cnn,resnet18,digits] [--reps=5]
  python experiments/benchmarks/conv_speed.py --models=cnn --impls=xla,patches --reps=3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from robustjax import models  # pylint: disable=g-import-not-at-top,wrong-import-position

PASSES = ('forward', 'input grad', 'params grad', 'train step')
SHAPES = {'cnn': ((32, 32, 3), 128), 'resnet18': ((32, 32, 3), 128),
          'digits': ((8, 8, 1), 64)}


def jax_passes(name, impl, x, y):
  """{pass: zero-argument callable that runs it and blocks} for the JAX model."""
  kind = 'resnet18' if name == 'resnet18' else 'cnn'
  model = models.create(kind, num_classes=10, conv_impl=impl)
  variables = models.init(model, jax.random.PRNGKey(0), x.shape[1:])
  params, rest = models.split_variables(variables)
  logits_fn = models.logits_fn_for(model, rest, train=True)
  labels = jnp.asarray(y)

  def loss(p, inputs):
    logp = jax.nn.log_softmax(logits_fn(p, inputs))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

  tx = optax.sgd(0.01, momentum=0.9)
  state = {'params': params, 'opt': tx.init(params)}

  @jax.jit
  def train_step(params, opt):
    grads = jax.grad(loss)(params, x)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  forward = jax.jit(logits_fn)
  input_grad = jax.jit(jax.grad(loss, argnums=1))
  params_grad = jax.jit(jax.grad(loss))

  def step():
    state['params'], state['opt'] = jax.block_until_ready(
        train_step(state['params'], state['opt']))

  return {'forward': lambda: jax.block_until_ready(forward(params, x)),
          'input grad': lambda: jax.block_until_ready(input_grad(params, x)),
          'params grad': lambda: jax.block_until_ready(params_grad(params, x)),
          'train step': step}


def torch_model(name, channels_in):
  """The same architecture in ``torch.nn`` (NCHW)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  if name in ('cnn', 'digits'):
    size = 32 if name == 'cnn' else 8
    return nn.Sequential(
        nn.Conv2d(channels_in, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (size // 4) ** 2, 10))

  class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
      super().__init__()
      self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
      self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
      self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
      self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                       if stride != 1 or c_in != c_out else None)

    def forward(self, x):
      pre = torch.relu(self.bn1(x))
      short = x if self.shortcut is None else self.shortcut(pre)
      return short + self.conv2(torch.relu(self.bn2(self.conv1(pre))))

  blocks, c_in = [], 64
  for i, width in enumerate((64, 128, 256, 512)):
    for j in range(2):
      blocks.append(Block(c_in, width, 2 if i > 0 and j == 0 else 1))
      c_in = width
  return nn.Sequential(nn.Conv2d(channels_in, 64, 3, 1, 1, bias=False), *blocks,
                       nn.BatchNorm2d(512), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten(), nn.Linear(512, 10))


def torch_passes(name, x, y):
  """{pass: zero-argument callable} for the PyTorch model."""
  import torch  # pylint: disable=g-import-not-at-top

  model = torch_model(name, x.shape[-1]).train()
  inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  labels = torch.from_numpy(y.astype(np.int64))
  params = list(model.parameters())
  opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
  loss_fn = torch.nn.functional.cross_entropy

  def forward():
    with torch.no_grad():
      model(inputs)

  def input_grad():
    leaf = inputs.clone().requires_grad_(True)
    torch.autograd.grad(loss_fn(model(leaf), labels), leaf)

  def params_grad():
    torch.autograd.grad(loss_fn(model(inputs), labels), params)

  def step():
    opt.zero_grad()
    loss_fn(model(inputs), labels).backward()
    opt.step()

  return {'forward': forward, 'input grad': input_grad, 'params grad': params_grad,
          'train step': step}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='cnn,resnet18,digits')
  parser.add_argument('--impls', default='xla,patches')
  parser.add_argument('--reps', type=int, default=5, help='timed repetitions')
  parser.add_argument('--no_torch', action='store_true')
  parser.add_argument('--torch_threads', type=int, default=0,
                      help="PyTorch's intra-op threads (0: its default, one per core)")
  args = parser.parse_args()
  if args.torch_threads and not args.no_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(args.torch_threads)
  names, impls = args.models.split(','), args.impls.split(',')
  runners = {}
  rng = np.random.default_rng(0)
  for name in names:
    shape, batch = SHAPES[name]
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch).astype(np.int32)
    for impl in impls:
      runners[name, impl] = jax_passes(name, impl, jnp.asarray(x), y)
    if not args.no_torch:
      runners[name, 'torch'] = torch_passes(name, x, y)
  for fns in runners.values():  # compile and warm up
    for fn in fns.values():
      fn()
  times = {(key, p): [] for key in runners for p in PASSES}
  for rep in range(args.reps):
    for key, fns in runners.items():
      for p, fn in fns.items():
        start = time.perf_counter()
        fn()
        times[key, p].append(time.perf_counter() - start)
    print(f'  repetition {rep + 1}/{args.reps} done', file=sys.stderr, flush=True)
  if not args.no_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch_note = f'torch {torch.__version__} ({torch.get_num_threads()} threads)'
  else:
    torch_note = 'no torch'
  print(f'jax {jax.__version__} on {jax.devices()[0].platform}, {torch_note}, '
        f'{os.cpu_count()} CPUs; medians of {args.reps} interleaved repetitions; ms '
        '(x PyTorch)')
  for name in names:
    shape, batch = SHAPES[name]
    print(f'\n{name}, batch {batch}, {"x".join(map(str, shape))}')
    cols = impls + ([] if args.no_torch else ['torch'])
    print('| pass | ' + ' | '.join(cols) + ' |')
    print('| --- |' + ' ---: |' * len(cols))
    for p in PASSES:
      ref = None if args.no_torch else statistics.median(times[(name, 'torch'), p])
      cells = []
      for impl in cols:
        t = statistics.median(times[(name, impl), p])
        ratio = f' ({t / ref:.2f}x)' if ref and impl != 'torch' else ''
        cells.append(f'{1e3 * t:.1f}{ratio}')
      print(f'| {p} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main()
