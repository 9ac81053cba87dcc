"""Square Attack throughput (queries/s) for several loop layouts, against bare forward passes.

Run: ``python experiments/benchmarks/square_speed.py [--queries 60] [--repeats 3]
[--model cnn] [--shape 32,32,3] [--layouts 1:10:u,10:20:u,10:20:s]``.

For SOAR's 4-layer CNN (``robustjax.models.CNN``, random weights), batch 128, it times in
one process (after a warm-up call that compiles; ``block_until_ready``) Linf Square with
eps = 0.5/255, so nearly every example stays robust and each iteration costs a full
batch. A layout ``chunk:sync:mode`` runs ``chunk`` iterations per compiled call
(``u``: unrolled straight-line steps, ``s``: a rolled ``lax.scan``) and compacts the
still-robust examples every ``sync`` iterations. For each it prints

- queries/s (forward passes on attacked points per second, summed over the batch) and
  the ratio of one Square iteration to one bare jitted forward pass of the batch (the
  unit: the model's own cost), each the median over interleaved repeats;
- the first call's extra time (compilation).

``robustjax.attacks.square`` picks its default layout from these numbers (quoted in its
docstring; on XLA:CPU every layout cost about one forward pass per iteration, and one
step per call compiles fastest).
"""

from __future__ import annotations

import argparse
import importlib
import math
import statistics

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import models

try:
  from experiments.benchmarks import timing
except ImportError:  # run as a script from the repository root
  import timing  # pylint: disable=g-import-not-at-top

square_lib = importlib.import_module('robustjax.attacks.square')

BATCH, EPS = 128, 0.5 / 255


def _parse_layout(text):
  chunk, sync, mode = text.split(':')
  return int(chunk), int(sync), mode == 'u'


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--queries', type=int, default=60)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--model', default='cnn')
  parser.add_argument('--shape', default='32,32,3')
  parser.add_argument('--norm', default='inf', choices=('inf', '2'))
  parser.add_argument('--layouts', default='1:10:u,1:50:u,5:10:u,10:20:u,10:20:s,20:20:s')
  args = parser.parse_args()
  shape = tuple(int(d) for d in args.shape.split(','))
  norm = math.inf if args.norm == 'inf' else 2.0

  model = models.create(args.model, num_classes=10)
  variables = models.init(model, jax.random.PRNGKey(0), shape)
  params, rest = models.split_variables(variables)
  logits_fn = models.logits_fn_for(model, rest)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(BATCH,) + shape), jnp.float32)
  y = jnp.argmax(logits_fn(params, x), -1).astype(jnp.int32)

  forward = jax.jit(logits_fn)
  forward_s = statistics.median(
      timing.timed(lambda: forward(params, x))[0] for _ in range(max(args.repeats, 5) * 4))
  print(f'backend {jax.default_backend()}, model {args.model} {shape}, batch {BATCH}, '
        f'L{args.norm}, {args.queries} iterations')
  print(f'bare forward pass: {forward_s * 1e3:.2f} ms = {BATCH / forward_s:,.0f} queries/s')
  print(f'{"layout":>10} {"queries/s":>11} {"iter/forward":>13} {"compile s":>10} '
        f'{"robust":>7}')

  layouts = [_parse_layout(t) for t in args.layouts.split(',')]
  runs = {}
  for layout in layouts:
    def run(layout=layout):
      return square_lib._square(logits_fn, params, (x, y), rng=jax.random.PRNGKey(1),
                                eps=EPS, p=norm, queries=args.queries, chunking=layout)
    first, _ = timing.timed(run)
    runs[layout] = (run, first)

  times = {layout: [] for layout in layouts}
  results = {}
  for _ in range(args.repeats):  # interleaved, so load drift hits every layout alike
    for layout in layouts:
      seconds, results[layout] = timing.timed(runs[layout][0])
      times[layout].append(seconds)
  for layout in layouts:
    result = results[layout]
    seconds = statistics.median(times[layout])
    spent = int(np.sum(np.asarray(result.queries)))
    per_iter = seconds / (args.queries + 1)
    robust = int(np.sum(np.asarray(result.margin) > 0))
    chunk, sync, unroll = layout
    name = f'{chunk}:{sync}:{"u" if unroll else "s"}'
    print(f'{name:>10} {spent / seconds:>11,.0f} {per_iter / forward_s:>13.2f} '
          f'{runs[layout][1] - seconds:>10.1f} {robust:>7}')


if __name__ == '__main__':
  main()
