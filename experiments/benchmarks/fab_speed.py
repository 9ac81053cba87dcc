"""Per-step cost of FAB-T and FAB as a ratio to one input gradient, and its compile time.

Run: ``python experiments/benchmarks/fab_speed.py [--steps 10] [--repeats 5]``.

For the MLP and SOAR's 4-layer CNN of ``attack_speed.py`` (batch 128 of 32x32x3
inputs, 10 classes) it times in one process, after a warm-up and with
``block_until_ready`` (each ratio is the median over interleaved pairs, so load drift
on a shared machine cancels):

- one jitted input gradient of the summed cross-entropy (the unit);
- ``robustjax.attacks.fab_targeted`` with one target (so the batch stays 128), Linf,
  ``steps`` steps, per ``unroll`` setting: its time / the time of ``steps`` gradients.
  A step is one backward pass of ``z_t − z_y`` plus the forward pass that checks the new
  iterate, so ~1.3 gradients is the floor; the clean forward pass before the loop is
  spread over the steps;
- ``robustjax.attacks.fab`` (untargeted: the Jacobian of the K logits, as K backward
  passes through ``vmap`` over one shared forward pass) per step, in gradients;
- the two ways to get those Jacobians, at a smaller batch (``--jac-batch``):
  ``vmap`` of the VJP over the K cotangents (what ``fab`` uses) against ``jax.jacfwd``
  per example (one JVP per input dimension, 3072 here), in gradients of that batch.
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from robustjax import attacks
from robustjax import losses

try:
  from experiments.benchmarks import attack_speed as common
  from experiments.benchmarks import timing
except ImportError:  # run as a script from the repository root
  import attack_speed as common  # pylint: disable=g-import-not-at-top
  import timing  # pylint: disable=g-import-not-at-top


def _row(model, variant, ratio, seconds, compile_s=None):
  comp = '' if compile_s is None else f'{compile_s:9.2f}'
  print(f'{model:5} | {variant:40} | {ratio:7.3f} | {seconds:8.4f} | {comp}', flush=True)


def _gradient(logits_fn, params, x, y):
  loss = lambda p, xx, yy: jnp.sum(losses.cross_entropy(logits_fn(p, xx), yy))
  return timing.compiled(jax.grad(loss, argnums=1), params, x, y)


def bench_model(name, logits_fn, params, x, y, *, steps, repeats, unrolls, jac_batch):
  key = jax.random.PRNGKey(0)
  grad_fn, t_compile = _gradient(logits_fn, params, x, y)
  t_grad = timing.median_time(grad_fn, params, x, y, repeats=repeats)
  _row(name, 'one input gradient (unit)', 1.0, t_grad, t_compile)
  runs = [('fab-t (1 target)', attacks.fab_targeted, dict(num_targets=1), u) for u in unrolls]
  runs.append(('fab (untargeted, K=10)', attacks.fab, {}, 'auto'))
  for label, attack, extra, unroll in runs:
    run = lambda p, xx, yy, k, a=attack, e=extra, u=unroll: a(
        logits_fn, p, (xx, yy), rng=k, eps=common.EPS, p=math.inf, steps=steps, unroll=u,
        **e)
    fn, t_compile = timing.compiled(run, params, x, y, key)
    ratio, t_attack, _ = timing.paired(fn, (params, x, y, key), grad_fn, (params, x, y),
                                       repeats=repeats, calls_b=steps)
    _row(name, f'{label} unroll={unroll}: step / grad', ratio, t_attack, t_compile)

  xs, ys = x[:jac_batch], y[:jac_batch]
  small_grad, _ = _gradient(logits_fn, params, xs, ys)

  def jac_vjp(p, xx):
    z, vjp = jax.vjp(lambda v: logits_fn(p, v), xx)
    return jax.vmap(vjp)(jnp.broadcast_to(jnp.eye(z.shape[1])[:, None], (z.shape[1],) + z.shape))

  def jac_fwd(p, xx):
    one = lambda v: logits_fn(p, v[None])[0]
    return jax.vmap(jax.jacfwd(one))(xx)

  for label, jac in (('vmap(vjp) over K classes', jac_vjp), ('jacfwd per example', jac_fwd)):
    fn, t_compile = timing.compiled(jac, params, xs)
    ratio, t_jac, _ = timing.paired(fn, (params, xs), small_grad, (params, xs, ys),
                                    repeats=repeats)
    _row(name, f'Jacobian, batch {jac_batch}: {label}', ratio, t_jac, t_compile)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--models', default='mlp,cnn')
  parser.add_argument('--unrolls', default='auto,True,1',
                      help='comma list: auto (the default), True, ints')
  parser.add_argument('--jac-batch', type=int, default=8)
  args = parser.parse_args()
  unrolls = [u if u == 'auto' else True if u == 'True' else int(u)
             for u in args.unrolls.split(',')]
  key = jax.random.PRNGKey(0)
  x = jax.random.uniform(jax.random.fold_in(key, 1), (common.BATCH,) + common.SHAPE)
  models = {'mlp': (common.mlp, common.init_mlp(key)),
            'cnn': (common.cnn, common.init_cnn(key))}
  print(f'backend={jax.default_backend()} devices={jax.device_count()} '
        f'batch={common.BATCH} input={common.SHAPE} steps={args.steps} '
        f'repeats={args.repeats}')
  print(f'{"model":5} | {"variant":40} | {"ratio":>7} | {"time s":>8} | {"compile s":>9}')
  print('-' * 82)
  for name in args.models.split(','):
    logits_fn, params = models[name]
    # Labels = predictions, so every example is attacked (none is misclassified clean).
    y = jnp.argmax(logits_fn(params, x), axis=1).astype(jnp.int32)
    bench_model(name, logits_fn, params, x, y, steps=args.steps, repeats=args.repeats,
                unrolls=unrolls, jac_batch=args.jac_batch)


if __name__ == '__main__':
  main()
