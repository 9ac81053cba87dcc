"""Noise samples per second of ``robustjax.certify.certify`` against a PyTorch CERTIFY.

Run: ``python experiments/benchmarks/smoothing_speed.py [--repeats 3] [--models mlp,cnn]``
(needs PyTorch: ``pip install torch`` or the ``bench`` extra; a CPU wheel is enough).

The PyTorch side is Cohen, Rosenfeld & Kolter's CERTIFY (ICML 2019) as their reference
implementation runs it, written here: one example at a time, ``ceil(n / batch_size)``
forward passes of ``batch_size`` copies of x plus ``torch.randn`` noise, the argmax
votes counted (``torch.bincount``), ``n0`` selection votes then ``n`` estimation votes,
the Clopper-Pearson bound from ``scipy.stats.beta.ppf`` and ``σ Φ⁻¹(p_A_lower)``. The
model is ported from the JAX weights (checked to give the same logits), and both run on
the same CPU: XLA with its default thread pool, PyTorch once with one thread and once with
every core (``torch.set_num_threads``; on a loaded machine its OpenMP threads can be
much slower than one), and the speed-up is against the faster of the two.

Models: ``mlp``, the MLP 64-64 of configs/smoothing_digits.py on 8x8x1 digits (n0 = 100,
n = 100,000, the paper's setting, 20 examples); ``cnn``, SOAR's 4-layer CNN (3x3 convs
32-32-64-64, max-pool after 2 and 4) on 32x32x3 inputs (n = 2,000, 2 examples: the CPU
spends ~2 s per 1,000 forward passes). Both use ``batch_size = 1000`` and σ = 0.25.

Every row is one process's measurement after a warm-up (compilation excluded and
reported separately); the two implementations alternate within each repeat so load
drift on a shared machine hits both, and the table reports medians and the median of
the per-repeat ratios. Target (issue 11): robustjax at least 2x faster.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from robustjax.certify import smoothing

# The models are attack_speed's (MLP and SOAR's CNN), with nonzero biases.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack_speed  # pylint: disable=g-import-not-at-top,wrong-import-position

SIGMA, ALPHA, BATCH_SIZE, CLASSES = 0.25, 0.001, 1000, 10
SETTINGS = {  # model: (input shape, examples, n0, n)
    'mlp': ((8, 8, 1), 20, 100, 100_000),
    'cnn': ((32, 32, 3), 2, 100, 2_000),
}


# --------------------------------------------------------------------------- JAX models


def init_mlp(key, shape):
  """The MLP 64-64 of configs/smoothing_digits.py, biases drawn nonzero."""
  return attack_speed.init_mlp(key, (64, 64), shape=shape, bias_scale=0.1)


def init_cnn(key, shape):
  return attack_speed.init_cnn(key, shape=shape, bias_scale=0.1)


mlp, cnn = attack_speed.mlp, attack_speed.cnn


# ----------------------------------------------------------------------- PyTorch ports


def torch_model(name, params):
  """The same network in PyTorch (NHWC inputs, as the JAX one), with the same weights."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  tensor = lambda a: torch.from_numpy(np.asarray(a, np.float32).copy())

  if name == 'mlp':
    layers = []
    for i, (w, b) in enumerate(params):
      linear = nn.Linear(w.shape[0], w.shape[1])
      linear.weight.data, linear.bias.data = tensor(np.asarray(w).T), tensor(b)
      layers += [linear] + ([nn.ReLU()] if i < len(params) - 1 else [])
    body = nn.Sequential(nn.Flatten(), *layers)
    return body.eval()

  convs_p, (w, b) = params

  class Net(nn.Module):

    def __init__(self):
      super().__init__()
      self.convs = nn.ModuleList()
      for kernel, bias in convs_p:
        conv = nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1)
        conv.weight.data = tensor(np.transpose(np.asarray(kernel), (3, 2, 0, 1)))
        conv.bias.data = tensor(bias)
        self.convs.append(conv)
      self.head = nn.Linear(w.shape[0], w.shape[1])
      self.head.weight.data, self.head.bias.data = tensor(np.asarray(w).T), tensor(b)

    def forward(self, x):  # x [N, H, W, C]
      x = x.permute(0, 3, 1, 2)
      for i, conv in enumerate(self.convs):
        x = torch.relu(conv(x))
        if i in (1, 3):
          x = torch.nn.functional.max_pool2d(x, 2)
      return self.head(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))

  return Net().eval()


class TorchSmooth:
  """Cohen et al.'s CERTIFY, one example at a time, as their reference code runs it."""

  def __init__(self, model, num_classes, sigma):
    self.model, self.num_classes, self.sigma = model, num_classes, sigma

  def _sample_noise(self, x, num, batch_size):
    import torch  # pylint: disable=g-import-not-at-top
    counts = torch.zeros(self.num_classes, dtype=torch.long)
    with torch.no_grad():
      for _ in range(math.ceil(num / batch_size)):
        this = min(batch_size, num)
        num -= this
        batch = x.unsqueeze(0).repeat((this,) + (1,) * x.dim())
        noise = torch.randn_like(batch) * self.sigma
        predictions = self.model(batch + noise).argmax(1)
        counts += torch.bincount(predictions, minlength=self.num_classes)
    return counts.numpy()

  def certify(self, x, n0, n, alpha, batch_size):
    guess = int(self._sample_noise(x, n0, batch_size).argmax())
    n_a = int(self._sample_noise(x, n, batch_size)[guess])
    p_a_lower = stats.beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
    if p_a_lower < 0.5:
      return -1, 0.0
    return guess, self.sigma * stats.norm.ppf(p_a_lower)


# ------------------------------------------------------------------------------- timing


def run(name, repeats):
  import torch  # pylint: disable=g-import-not-at-top
  shape, examples, n0, n = SETTINGS[name]
  init, apply = (init_mlp, mlp) if name == 'mlp' else (init_cnn, cnn)
  params = init(jax.random.key(0), shape)
  x = np.array(jax.random.uniform(jax.random.key(1), (examples,) + shape), np.float32)
  port = torch_model(name, params)
  with torch.no_grad():
    gap = np.max(np.abs(port(torch.from_numpy(x)).numpy() - np.asarray(apply(params, x))))
  assert gap < 1e-3, f'the PyTorch port differs from the JAX model by {gap}'
  smooth = TorchSmooth(port, CLASSES, SIGMA)
  xs = [torch.from_numpy(x[i]) for i in range(examples)]

  def jax_certify(key):
    return jax.block_until_ready(smoothing.certify(
        apply, params, x, rng=key, sigma=SIGMA, num_selection=n0, num_estimation=n,
        alpha=ALPHA, batch_size=BATCH_SIZE))

  def torch_certify():
    return [smooth.certify(xi, n0, n, ALPHA, BATCH_SIZE) for xi in xs]

  start = time.perf_counter()
  jax_certify(jax.random.key(2))
  compile_s = time.perf_counter() - start
  threads = sorted({1, os.cpu_count()})
  for t in threads:  # warm-up (allocator, oneDNN primitives)
    torch.set_num_threads(t)
    torch_certify()
  samples = examples * (n0 + n)
  jax_s, torch_s, ratios = [], {t: [] for t in threads}, []
  for r in range(repeats):
    start = time.perf_counter()
    jax_certify(jax.random.key(3 + r))
    jax_s.append(time.perf_counter() - start)
    for t in threads:
      torch.set_num_threads(t)
      start = time.perf_counter()
      torch_certify()
      torch_s[t].append(time.perf_counter() - start)
    ratios.append(min(v[-1] for v in torch_s.values()) / jax_s[-1])
  return {
      'model': name, 'samples': samples, 'compile_s': compile_s,
      'jax_rate': samples / statistics.median(jax_s),
      'torch_rates': {t: samples / statistics.median(v) for t, v in torch_s.items()},
      'ratio': statistics.median(ratios), 'ratios': ratios,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--models', default='mlp,cnn')
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  print(f'jax {jax.__version__} ({jax.default_backend()}, {len(jax.devices())} device), '
        f'torch {torch.__version__}, {os.cpu_count()} CPU cores, batch_size {BATCH_SIZE}, '
        f'sigma {SIGMA}, alpha {ALPHA}, {args.repeats} interleaved repeats')
  print('| model | noisy passes / run | robustjax samples/s | PyTorch samples/s '
        '(threads: rate) | speed-up vs the faster PyTorch (median of ratios) | '
        'per-repeat ratios | robustjax compile |')
  print('| --- | --- | --- | --- | --- | --- | --- |')
  for name in args.models.split(','):
    r = run(name, args.repeats)
    torch_rates = ', '.join(f'{t}: {v:,.0f}' for t, v in r['torch_rates'].items())
    print(f"| {r['model']} | {r['samples']:,} | {r['jax_rate']:,.0f} | {torch_rates} "
          f"| {r['ratio']:.2f}x | {', '.join(f'{v:.2f}' for v in r['ratios'])} "
          f"| {r['compile_s']:.1f} s |", flush=True)


if __name__ == '__main__':
  main()
