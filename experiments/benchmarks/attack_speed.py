"""Per-step cost of PGD as a ratio to one input gradient, and against foolbox's LinfPGD.

Run: ``python experiments/benchmarks/attack_speed.py [--steps 10] [--repeats 5]``.

For an MLP and SOAR's 4-layer CNN (appendix C; written inline in ``lax.conv`` so the
benchmark does not depend on the models package), batch 128 of 32x32x3 inputs, it times
in one process (after a warm-up, ``block_until_ready``; every ratio is the median over
repeats of interleaved pairs, so load drift on a shared machine cancels):

- one jitted input gradient of the summed cross-entropy (the unit);
- ``robustjax.attacks.pgd`` (Linf, eps 8/255, ``steps`` steps, uniform start) for several
  ``unroll`` settings, reported as its time / the time of ``steps`` gradients (the
  per-step cost in gradients), with compile time;
- the compile time of fully unrolled PGD with more steps (``--compile-steps``);
- foolbox 3's ``LinfPGD`` (same steps, step size and random start) on the same JAX
  model, reported as foolbox time / robustjax time.

Target (issue 2): per-step cost within 1.15x of one input gradient.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks
from robustjax import losses

try:
  from experiments.benchmarks import timing
except ImportError:  # run as a script from the repository root
  import timing  # pylint: disable=g-import-not-at-top

BATCH, SHAPE, CLASSES, EPS = 128, (32, 32, 3), 10, 8 / 255


def init_mlp(key, widths=(1024, 1024)):
  dims = (int(np.prod(SHAPE)),) + widths + (CLASSES,)
  keys = jax.random.split(key, len(dims) - 1)
  return [(jax.random.normal(k, (a, b)) * math.sqrt(2.0 / a), jnp.zeros(b))
          for k, a, b in zip(keys, dims[:-1], dims[1:])]


def mlp(params, x):
  h = jnp.reshape(x, (x.shape[0], -1))
  for i, (w, b) in enumerate(params):
    h = h @ w + b
    if i < len(params) - 1:
      h = jax.nn.relu(h)
  return h


def init_cnn(key, channels=(32, 32, 64, 64)):
  keys = jax.random.split(key, len(channels) + 1)
  convs, c_in = [], SHAPE[-1]
  for k, c_out in zip(keys, channels):
    convs.append((jax.random.normal(k, (3, 3, c_in, c_out)) * math.sqrt(2.0 / (9 * c_in)),
                  jnp.zeros(c_out)))
    c_in = c_out
  flat = (SHAPE[0] // 4) * (SHAPE[1] // 4) * channels[-1]
  head = (jax.random.normal(keys[-1], (flat, CLASSES)) / math.sqrt(flat), jnp.zeros(CLASSES))
  return convs, head


def cnn(params, x):
  """SOAR app. C: 3x3 convs 32-32-64-64, stride 1, ReLU, 2x2 max-pool after 2 and 4."""
  convs, (w, b) = params
  for i, (kernel, bias) in enumerate(convs):
    x = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = jax.nn.relu(x + bias)
    if i in (1, 3):
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
  return jnp.reshape(x, (x.shape[0], -1)) @ w + b


def foolbox_attack(logits_fn, params, steps):
  """``(x, y) -> x_adv`` with foolbox 3's LinfPGD on the same JAX model, or None."""
  try:
    import foolbox as fb  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  model = jax.jit(lambda inputs: logits_fn(params, inputs))
  fmodel = fb.JAXModel(model, bounds=(0.0, 1.0))
  attack = fb.attacks.LinfPGD(abs_stepsize=2.5 * EPS / steps, steps=steps,
                              random_start=True)
  return lambda x, y: attack.run(fmodel, x, y, epsilon=EPS)


def print_row(model, variant, ratio, seconds, compile_s=None):
  comp = '' if compile_s is None else f'{compile_s:9.2f}'
  print(f'{model:5} | {variant:34} | {ratio:7.3f} | {seconds:8.4f} | {comp}', flush=True)


def bench_model(name, logits_fn, params, x, y, *, steps, repeats, unrolls, with_foolbox,
                compile_steps=()):
  """Prints the gradient unit, PGD per-step ratios per unroll, and foolbox's ratio."""
  loss = lambda p, xx, yy: jnp.sum(losses.cross_entropy(logits_fn(p, xx), yy))
  grad_fn, t_compile = timing.compiled(jax.grad(loss, argnums=1), params, x, y)
  t_grad = timing.median_time(grad_fn, params, x, y, repeats=repeats)
  print_row(name, 'one input gradient (unit)', 1.0, t_grad, t_compile)
  key = jax.random.PRNGKey(0)
  best = None
  for unroll in unrolls:
    attack = lambda p, xx, yy, k, u=unroll: attacks.pgd(
        logits_fn, p, (xx, yy), rng=k, eps=EPS, p=math.inf, steps=steps, unroll=u)
    fn, t_compile = timing.compiled(attack, params, x, y, key)
    # PGD-`steps` against `steps` back-to-back gradients, interleaved.
    ratio, t_attack, _ = timing.paired(fn, (params, x, y, key), grad_fn, (params, x, y),
                                repeats=repeats, calls_b=steps)
    if best is None or t_attack < best[0] or unroll == 'auto':
      best = (-math.inf if unroll == 'auto' else t_attack, fn)  # foolbox meets the default
    print_row(name, f'pgd unroll={unroll}: step / gradient', ratio, t_attack, t_compile)
  for more_steps in compile_steps:
    attack = lambda p, xx, yy, k, n=more_steps: attacks.pgd(
        logits_fn, p, (xx, yy), rng=k, eps=EPS, p=math.inf, steps=n, unroll=True)
    _, t_compile = timing.compiled(attack, params, x, y, key)
    print(f'{name:5} | {f"compile only: unroll=True, {more_steps} steps":34} | '
          f'{"":7} | {"":8} | {t_compile:9.2f}', flush=True)
  if with_foolbox:
    fb_attack = foolbox_attack(logits_fn, params, steps)
    if fb_attack is not None:
      ratio, t_fb, _ = timing.paired(fb_attack, (x, y), best[1], (params, x, y, key),
                              repeats=repeats)
      label = 'auto' if 'auto' in unrolls else 'fastest'
      print_row(name, f'foolbox LinfPGD / robustjax {label}', ratio, t_fb)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--models', default='mlp,cnn')
  parser.add_argument('--unrolls', default='auto,True,1',
                      help='comma list: auto (the default of pgd), True, ints')
  parser.add_argument('--no-foolbox', action='store_true')
  parser.add_argument('--compile-steps', default='20',
                      help='comma list of step counts whose fully unrolled compile time '
                      'is measured (empty: none)')
  args = parser.parse_args()
  unrolls = [u if u == 'auto' else True if u == 'True' else int(u)
             for u in args.unrolls.split(',')]
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (BATCH,) + SHAPE)
  y = jax.random.randint(jax.random.fold_in(key, 2), (BATCH,), 0, CLASSES).astype(jnp.int32)
  models = {'mlp': (mlp, init_mlp(key)), 'cnn': (cnn, init_cnn(key))}
  print(f'backend={jax.default_backend()} devices={jax.device_count()} batch={BATCH} '
        f'input={SHAPE} steps={args.steps} repeats={args.repeats}')
  print(f'{"model":5} | {"variant":34} | {"ratio":>7} | {"time s":>8} | {"compile s":>9}')
  print('-' * 76)
  for name in args.models.split(','):
    logits_fn, params = models[name]
    bench_model(name, logits_fn, params, x, y, steps=args.steps, repeats=args.repeats,
                unrolls=unrolls, with_foolbox=not args.no_foolbox,
                compile_steps=[int(n) for n in args.compile_steps.split(',') if n])


if __name__ == '__main__':
  main()
