"""Per-iteration cost of APGD as a ratio to one input gradient, and its compile time.

Run: ``python experiments/benchmarks/apgd_speed.py [--steps 100] [--repeats 5]``.

For robustjax's MLP (``models.create('mlp')``, 3072-128-128-10), the papers' wider MLP
(``mlp_wide``: two hidden layers of 1024, as in SOAR's and CRT's experiments) and SOAR's
4-layer CNN (``models.create('cnn')``) at batch 128 of 32x32x3 inputs, it times in one
process, after a warm-up and with ``block_until_ready``:

- one jitted input gradient of the summed cross-entropy (the unit);
- ``robustjax.attacks.apgd`` (Linf, eps 8/255, CE, ``steps`` iterations, one restart:
  ``steps + 1`` gradients) for several ``unroll`` settings, reported as its time /
  the time of ``steps + 1`` back-to-back gradients (the per-iteration cost in
  gradients; each ratio is the median over interleaved pairs, so load drift on a shared
  machine cancels), with the compile time of each setting.

Target (issue 7): one APGD iteration costs at most ~1.15 input gradients. The state
update (next point, best and adversarial points) is memory traffic over ``[B, 3072]``
arrays whatever the model, so the ratio is highest where the gradient is cheapest: the
128-wide MLP (docs/design.md, "APGD's loop").
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from robustjax import attacks
from robustjax import losses
from robustjax import models

try:
  from experiments.benchmarks import timing
except ImportError:  # run as a script from the repository root
  import timing  # pylint: disable=g-import-not-at-top

BATCH, SHAPE, CLASSES, EPS = 128, (32, 32, 3), 10, 8 / 255


def row(model, variant, ratio, seconds, compile_s):
  ratio_s = '' if ratio is None else f'{ratio:7.3f}'
  sec_s = '' if seconds is None else f'{seconds:8.4f}'
  print(f'{model:5} | {variant:30} | {ratio_s:>7} | {sec_s:>8} | {compile_s:9.2f}', flush=True)


def bench(name, logits_fn, params, x, y, *, steps, repeats, unrolls):
  loss = lambda p, xx, yy: jnp.sum(losses.cross_entropy(logits_fn(p, xx), yy))
  grad_fn, t_compile = timing.compiled(jax.grad(loss, argnums=1), params, x, y)
  jax.block_until_ready(grad_fn(params, x, y))
  t_grad = timing.median_time(grad_fn, params, x, y, repeats=repeats)
  row(name, 'one input gradient (unit)', 1.0, t_grad, t_compile)
  key = jax.random.PRNGKey(0)
  for unroll in unrolls:
    attack = lambda p, xx, yy, k, u=unroll: attacks.apgd(
        logits_fn, p, (xx, yy), rng=k, eps=EPS, p=math.inf, steps=steps, unroll=u)
    fn, t_compile = timing.compiled(attack, params, x, y, key)
    ratio, t_attack, _ = timing.paired(fn, (params, x, y, key), grad_fn, (params, x, y),
                                       repeats=repeats, calls_b=steps + 1)
    row(name, f'apgd unroll={unroll}: iter/grad', ratio, t_attack, t_compile)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=100)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--models', default='mlp,mlp_wide,cnn',
                      help='comma list of mlp, mlp_wide (2x1024 hidden), cnn')
  parser.add_argument('--unrolls', default='auto,True,1,10',
                      help='comma list: auto (the default of apgd), chunked, True, ints')
  args = parser.parse_args()
  unrolls = [u if u in ('auto', 'chunked') else True if u == 'True' else int(u)
             for u in args.unrolls.split(',')]
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (BATCH,) + SHAPE)
  y = jax.random.randint(jax.random.fold_in(key, 2), (BATCH,), 0, CLASSES).astype(jnp.int32)
  print(f'backend={jax.default_backend()} devices={jax.device_count()} batch={BATCH} '
        f'input={SHAPE} steps={args.steps} repeats={args.repeats}')
  print(f'{"model":5} | {"variant":30} | {"ratio":>7} | {"time s":>8} | {"compile s":>9}')
  print('-' * 72)
  for name in args.models.split(','):
    if name == 'mlp_wide':
      model = models.create('mlp', num_classes=CLASSES, widths=(1024, 1024))
    else:
      model = models.create(name, num_classes=CLASSES)
    variables = models.init(model, jax.random.fold_in(key, 3), SHAPE)
    params, rest = models.split_variables(variables)
    logits_fn = models.logits_fn_for(model, rest)
    bench(name, logits_fn, params, x, y, steps=args.steps, repeats=args.repeats,
          unrolls=unrolls)


if __name__ == '__main__':
  main()
