r"""Minimal reproduction: XLA:CPU's 3x3 convolutions against PyTorch's, layer by layer.

Times one convolution (batch 128, 3x3 kernel, 'SAME', NHWC) in its three passes, the
output, the input gradient and the kernel gradient, for each of the four layers of
SOAR's CNN on 32x32x3 inputs, in JAX (``lax.conv_general_dilated`` and its ``jax.vjp``,
jitted) and in PyTorch (``conv2d``, ``conv2d_input``, ``conv2d_weight``, eager). Two more
JAX columns show that the GEMM is not what is slow: the kernel gradient written as one
GEMM over materialised input patches (``robustjax.models.conv.patches``), and that GEMM
alone on ready-made operands of the same shape ``[kh·kw·C, M] @ [M, O]``.

  python experiments/benchmarks/conv_layers_xla.py [--reps=7] [--batch=128]

Every repetition runs every (layer, pass) once, interleaved; the table shows medians in
ms and each JAX time as a multiple of PyTorch's. Issue 12's note quotes it: on the
2-core AMD EPYC machines the gap sits in XLA:CPU's convolution kernels (openxla/xla#34273,
jax-ml/jax#31662), not in how robustjax calls them.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from robustjax.models import conv as conv_lib

LAYERS = ((32, 3, 32), (32, 32, 32), (16, 32, 64), (16, 64, 64))  # (H = W, C_in, C_out)
NHWC = ('NHWC', 'HWIO', 'NHWC')
PADS = ((1, 1), (1, 1))
COLUMNS = ('forward', 'input grad', 'kernel grad', 'kernel grad as patch GEMM',
           'that GEMM alone')


def jax_passes(x, w, g):
  """{column: jitted zero-argument callable} for one layer."""
  conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC)
  kh, kw, c_in, c_out = w.shape
  depth = kh * kw * c_in

  def patch_gemm(x, g):
    cols = conv_lib.patches(x, (kh, kw), (1, 1), PADS, (1, 1)).reshape(-1, depth)
    return (cols.T @ g.reshape(-1, c_out)).reshape(w.shape)

  a = jnp.ones((depth, g.size // c_out), jnp.float32)
  b = jnp.ones((g.size // c_out, c_out), jnp.float32)
  fns = {
      'forward': (jax.jit(conv), (x, w)),
      'input grad': (jax.jit(lambda x, w, g: jax.vjp(lambda v: conv(v, w), x)[1](g)[0]),
                     (x, w, g)),
      'kernel grad': (jax.jit(lambda x, w, g: jax.vjp(lambda v: conv(x, v), w)[1](g)[0]),
                      (x, w, g)),
      'kernel grad as patch GEMM': (jax.jit(patch_gemm), (x, g)),
      'that GEMM alone': (jax.jit(jnp.matmul), (a, b)),
  }
  reference = fns['kernel grad'][0](x, w, g)
  gemm = fns['kernel grad as patch GEMM'][0](x, g)
  scale = float(jnp.max(jnp.abs(reference)))
  assert float(jnp.max(jnp.abs(gemm - reference))) <= 1e-4 * scale, 'patch GEMM differs'
  return {k: (lambda f=f, a=a: jax.block_until_ready(f(*a))) for k, (f, a) in fns.items()}


def torch_passes(x, w, g):
  import torch  # pylint: disable=g-import-not-at-top
  tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  tw = torch.from_numpy(np.asarray(w).transpose(3, 2, 0, 1).copy())
  tg = torch.from_numpy(np.asarray(g).transpose(0, 3, 1, 2).copy())
  fwd = torch.nn.functional.conv2d
  grad = torch.nn.grad

  def run(f):
    def call():
      with torch.no_grad():
        return f()
    return call

  return {
      'forward': run(lambda: fwd(tx, tw, padding=1)),
      'input grad': run(lambda: grad.conv2d_input(tx.shape, tw, tg, padding=1)),
      'kernel grad': run(lambda: grad.conv2d_weight(tx, tw.shape, tg, padding=1)),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--reps', type=int, default=7)
  parser.add_argument('--batch', type=int, default=128)
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  print(f'jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} '
        f'({torch.get_num_threads()} threads); batch {args.batch}; medians of {args.reps} '
        f'interleaved repetitions; ms (x PyTorch)')
  rows = []
  for hw, c_in, c_out in LAYERS:
    keys = jax.random.split(jax.random.key(hw * 1000 + c_in), 3)
    x = jax.random.normal(keys[0], (args.batch, hw, hw, c_in))
    w = 0.1 * jax.random.normal(keys[1], (3, 3, c_in, c_out))
    g = jax.random.normal(keys[2], (args.batch, hw, hw, c_out))
    rows.append((f'{hw}x{hw}x{c_in} -> {c_out}', jax_passes(x, w, g), torch_passes(x, w, g)))
  times = {(name, side, col): [] for name, _, _ in rows
           for side in ('jax', 'torch') for col in COLUMNS}
  for name, jax_fns, torch_fns in rows:  # warm-up: compilation, allocators
    for f in list(jax_fns.values()) + list(torch_fns.values()):
      f()
  for _ in range(args.reps):
    for name, jax_fns, torch_fns in rows:
      for side, fns in (('jax', jax_fns), ('torch', torch_fns)):
        for col, f in fns.items():
          start = time.perf_counter()
          f()
          times[(name, side, col)].append(1e3 * (time.perf_counter() - start))
  print('| layer | pass | JAX (XLA:CPU) | PyTorch (oneDNN) |')
  print('| --- | --- | ---: | ---: |')
  for name, _, torch_fns in rows:
    for col in COLUMNS:
      jax_ms = statistics.median(times[(name, 'jax', col)])
      # The GEMM columns compute the kernel gradient: compared with PyTorch's.
      ref = statistics.median(times[(name, 'torch', col if col in torch_fns
                                     else 'kernel grad')])
      torch_cell = f'{ref:.1f}' if col in torch_fns else f'(kernel grad {ref:.1f})'
      print(f'| {name} | {col} | {jax_ms:.1f} ({jax_ms / ref:.2f}x) | {torch_cell} |')


if __name__ == '__main__':
  main()
