"""Cost of one training step with each registered regularizer, against its floor.

For each method at its paper defaults, one full jitted training step (the value and the
param-gradient of ``nominal + weight · mean(penalty)``) on the 4-layer CNN of SOAR app. C
(batch 128, 32x32x3, 10 classes) is timed as a ratio to a plain cross-entropy step. Next
to it stands the method's *floor*: the sum of the primitives the method cannot avoid,
each timed in the same run (see ``FLOORS``). ``step/floor`` near 1 means the
implementation adds no avoidable work; the target is within 1.10. Because a shared
2-core machine is noisy, the table also gives the ratio of minimum times and of XLA's
flop estimates (``compiled.cost_analysis()``), which does not depend on load.

Methods are looked up in the registry; those not registered (or not applicable to a
CNN, e.g. CRT's smooth-MLP bound) are listed as skipped. Timings are medians over
interleaved repeats after warm-up (interleaving spreads machine-load drift evenly).

    python experiments/benchmarks/regularizer_cost.py            # full run
    python experiments/benchmarks/regularizer_cost.py --quick    # fewer repeats
    python experiments/benchmarks/regularizer_cost.py --methods=scorpio_fe3,llr
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import curvature
from robustjax import losses
from robustjax.regularizers import registry

# Regularizer modules; importing registers them. A missing module is skipped.
MODULES = ('scorpio', 'soar', 'llr', 'cure', 'gradient_norm', 'lipschitz', 'crt',
           'adversarial', 'trades')

BATCH, IMAGE, CLASSES = 128, (32, 32, 3), 10


# ----------------------------------------------------------------------------- model


def init_cnn(rng, *, channels=(32, 32, 64, 64), classes=CLASSES):
  """4-layer CNN of SOAR app. C: 3x3 convs [32, 32, 64, 64], ReLU, max-pool after 2 and 4."""
  params, c_in = [], IMAGE[-1]
  keys = jax.random.split(rng, len(channels) + 1)
  for key, c_out in zip(keys, channels):
    w = jax.random.normal(key, (3, 3, c_in, c_out)) * math.sqrt(2.0 / (9 * c_in))
    params.append((w, jnp.zeros((c_out,))))
    c_in = c_out
  features = (IMAGE[0] // 4) * (IMAGE[1] // 4) * c_in
  head = jax.random.normal(keys[-1], (features, classes)) / math.sqrt(features)
  return {'convs': params, 'head': (head, jnp.zeros((classes,)))}


def cnn_logits(params, inputs):
  """``inputs [B, 32, 32, 3]`` in [0, 1] -> logits ``[B, 10]`` (normalisation inside)."""
  x = (inputs - 0.5) / 0.25
  for i, (w, b) in enumerate(params['convs']):
    x = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b
    x = jax.nn.relu(x)
    if i in (1, 3):
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                'VALID')
  w, b = params['head']
  return x.reshape(x.shape[0], -1) @ w + b


cnn_loss = losses.cross_entropy_loss_fn(cnn_logits)


# ------------------------------------------------------------------------ primitives


def _double(x, y):
  return jnp.concatenate([x, x]), jnp.concatenate([y, y])


def ce_step(params, x, y, rng):
  """Plain training step: value and param-gradient of the mean cross-entropy."""
  del rng
  return jax.value_and_grad(lambda p: jnp.mean(cnn_loss(p, x, y)))(params)


def _grad_norm_objective(p, x, y):
  """CE plus the squared input-gradient norm: one double-backprop step's objective."""
  losses_, grads = curvature.value_and_input_grad(cnn_loss, p, x, y)
  return jnp.mean(losses_) + jnp.mean(jnp.sum(grads ** 2, axis=(1, 2, 3)))


PRIMITIVES: dict[str, Callable] = {
    # A training pass (forward + backward w.r.t. params) over B or 2B points.
    'train_B': ce_step,
    'train_2B': lambda p, x, y, r: ce_step(p, *_double(x, y), r),
    # One per-example input gradient (forward + backward w.r.t. inputs) over B points.
    'grad_B': lambda p, x, y, r: curvature.value_and_input_grad(cnn_loss, p, x, y),
    # One exact input HVP (forward-over-reverse, primal gradient included).
    'hvp_B': lambda p, x, y, r: curvature.hvp(cnn_loss, p, x, y, jnp.sign(x - 0.5)),
    # One double-backprop step: param-gradient of CE + ‖∇ₓℓ‖² over B or 2B points.
    'dbl_B': lambda p, x, y, r: jax.value_and_grad(_grad_norm_objective)(p, x, y),
    'dbl_2B': lambda p, x, y, r: jax.value_and_grad(_grad_norm_objective)(
        p, *_double(x, y)),
}


# --------------------------------------------------------------------------- methods


@dataclasses.dataclass(frozen=True)
class Method:
  """A table row: a registered penalty at given hyperparameters, and its floor."""
  label: str
  name: str  # registry name
  hparams: dict[str, Any]
  floor: dict[str, float]  # primitive -> count
  floor_doc: str
  nominal: str = 'ce'  # 'ce': CE(x); 'soar': ℓ(x') from aux (see nominal_loss)


METHODS = (
    # SCORPIO FE(N): N+1 input gradients (x recycled) + a training pass over x and x+v.
    Method('scorpio_fe3', 'scorpio', dict(steps=3, scheme='forward', h=1.05),
           {'grad_B': 4, 'train_2B': 1}, '4 grad + train(2B)'),
    Method('scorpio_fe1', 'scorpio', dict(steps=1, scheme='forward', h=0.95),
           {'grad_B': 2, 'train_2B': 1}, '2 grad + train(2B)'),
    # SCORPIO CD(N): 2N+1 input gradients + a training pass over x and x+v.
    Method('scorpio_cd3', 'scorpio', dict(steps=3, scheme='central', h=0.95),
           {'grad_B': 7, 'train_2B': 1}, '7 grad + train(2B)'),
    # SCORPIO exact(N): the gradient at x, N exact HVPs, a training pass over x and x+v.
    Method('scorpio_exact3', 'scorpio', dict(steps=3, scheme='exact'),
           {'grad_B': 1, 'hvp_B': 3, 'train_2B': 1}, 'grad + 3 hvp + train(2B)'),
    # SOAR (PGD1, m=1): one gradient for the PGD1 step, then gradients at x' and
    # x'+hz̃ differentiated w.r.t. params: a double-backprop step over 2B points (which
    # also trains ℓ(x')).
    Method('soar', 'soar', dict(), {'grad_B': 1, 'dbl_2B': 1}, 'grad + dbl(2B)',
           nominal='soar'),
    # LLR (M=10): M inner gradients, the gradient at x differentiated w.r.t. params (a
    # double-backprop step at x, which also trains CE(x)), a training pass at x+δ.
    Method('llr', 'llr', dict(), {'grad_B': 10, 'dbl_B': 1, 'train_B': 1},
           '10 grad + dbl(B) + train(B)'),
    # CURE: the gradients at x and at x+hz (z needs the first) both differentiated
    # w.r.t. params: two double-backprop steps over B points.
    Method('cure', 'cure', dict(), {'dbl_B': 2}, '2 dbl(B)'),
    # Gradient norm: one double-backprop step.
    Method('gradient_norm', 'gradient_norm', dict(), {'dbl_B': 1}, 'dbl(B)'),
    # Stochastic Lipschitz (K=1): one VJP of a logit per example, double-backpropagated.
    Method('lipschitz', 'lipschitz', dict(), {'dbl_B': 1}, 'dbl(B)'),
    # Madry PGD-7: 7 input gradients + a training pass over x and x_adv.
    Method('adversarial', 'adversarial', dict(), {'grad_B': 7, 'train_2B': 1},
           '7 grad + train(2B)'),
    # TRADES (10 steps): 10 input gradients of the KL + a training pass over x and x'.
    Method('trades', 'trades', dict(), {'grad_B': 10, 'train_2B': 1},
           '10 grad + train(2B)'),
    # CRT: its curvature bound is for smooth MLPs (no CNN); listed to say so.
    Method('crt', 'crt', dict(), {}, 'n/a'),
)

NOT_FOR_CNN = {'crt': 'smooth-MLP bound (SOAR CNN has ReLU convs)'}


def nominal_loss(method: Method, aux, params, x, y):
  """The nominal term, reusing the penalty's own pass where it offers one.

  A penalty that already evaluated ``ℓ(x)`` returns it (with its param dependence) as
  ``aux['loss']``, one that evaluated the clean logits as ``aux['logits']``; XLA does not
  merge a second, separate forward pass with the one inside the penalty, so reusing them
  saves a full forward and backward pass. SOAR trains ``ℓ(x')`` (eq. 12).
  """
  if method.nominal == 'soar':
    return aux['loss_at_start']
  if 'loss' in aux:
    return aux['loss']
  if 'logits' in aux:
    return losses.cross_entropy(aux['logits'], y)
  return cnn_loss(params, x, y)


def method_step(method: Method) -> Callable:
  """The jitted-to-be training step ``(params, x, y, rng) -> (loss, grads)``."""
  penalty = registry.get(method.name)
  fn = cnn_loss if penalty.takes == 'loss_fn' else cnn_logits

  def objective(params, x, y, rng):
    values, aux = penalty(fn, params, (x, y), rng=rng, **method.hparams)
    nominal = jnp.mean(nominal_loss(method, aux, params, x, y))
    return nominal + jnp.mean(values)

  def step(params, x, y, rng):
    return jax.value_and_grad(objective)(params, x, y, rng)

  return step


# --------------------------------------------------------------------------- timing


def _flops(compiled) -> float:
  """XLA's own estimate of the floating-point operations of a compiled program."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return float('nan')
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', float('nan')))


def time_all(fns: dict[str, Callable], args, *, repeats: int, warmup: int = 1):
  """Median and min seconds per call, and XLA flops, of each fn (jitted), interleaved."""
  compiled, flops = {}, {}
  for name, fn in fns.items():
    start = time.perf_counter()
    compiled[name] = jax.jit(fn).lower(*args).compile()
    flops[name] = _flops(compiled[name])
    for _ in range(warmup):
      jax.block_until_ready(compiled[name](*args))
    print(f'  compiled {name:16s} {time.perf_counter() - start:6.1f} s', file=sys.stderr,
          flush=True)
  samples = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in compiled.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(*args))
      samples[name].append(time.perf_counter() - start)
  median = {name: statistics.median(s) for name, s in samples.items()}
  best = {name: min(s) for name, s in samples.items()}
  return median, best, flops


def available_methods(selected):
  for module in MODULES:
    try:
      importlib.import_module(f'robustjax.regularizers.{module}')
    except ImportError as e:  # not written yet
      print(f'  (module {module} not importable: {e})', file=sys.stderr)
  rows, skipped = [], []
  for method in METHODS:
    if selected and method.label not in selected and method.name not in selected:
      continue
    if method.name not in registry.names():
      skipped.append((method.label, 'not registered'))
    elif method.name in NOT_FOR_CNN:
      skipped.append((method.label, NOT_FOR_CNN[method.name]))
    else:
      rows.append(method)
  return rows, skipped


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='3 repeats instead of 7')
  parser.add_argument('--repeats', type=int, default=None)
  parser.add_argument('--methods', default='',
                      help='comma-separated table labels or registry names')
  args = parser.parse_args(argv)
  repeats = args.repeats or (3 if args.quick else 7)
  selected = {m for m in args.methods.split(',') if m}

  rows, skipped = available_methods(selected)
  rng = jax.random.PRNGKey(0)
  params = init_cnn(rng)
  x = jax.random.uniform(jax.random.PRNGKey(1), (BATCH,) + IMAGE)
  y = jax.random.randint(jax.random.PRNGKey(2), (BATCH,), 0, CLASSES)
  needed = {'train_B'} | {k for m in rows for k in m.floor}
  fns = {k: PRIMITIVES[k] for k in PRIMITIVES if k in needed}
  fns.update({m.label: method_step(m) for m in rows})
  print(f'devices: {jax.devices()}; batch {BATCH}x{IMAGE}; repeats {repeats}',
        file=sys.stderr)
  times, best, flops = time_all(fns, (params, x, y, jax.random.PRNGKey(3)),
                                repeats=repeats)

  base = times['train_B']
  print(f'\nplain CE step (batch {BATCH}, 32x32x3, SOAR CNN): {base * 1e3:.0f} ms median, '
        f'{best["train_B"] * 1e3:.0f} ms min')
  print('primitives, x CE step (median time | min time | XLA flops): ' + ', '.join(
      f'{k} {times[k] / base:.2f}|{best[k] / best["train_B"]:.2f}|'
      f'{flops[k] / flops["train_B"]:.2f}' for k in PRIMITIVES if k in times))
  print()
  header = (f"| {'method':15s} | {'step ms':>8s} | {'x CE step':>9s} | {'floor':>6s} | "
            f"{'step/floor':>10s} | {'(min)':>6s} | {'(flops)':>7s} | floor = {'':20s}|")
  print(header)
  print('|' + '|'.join('-' * (len(c)) for c in header.split('|')[1:-1]) + '|')
  for m in rows:
    floor = sum(n * times[k] for k, n in m.floor.items())
    floor_best = sum(n * best[k] for k, n in m.floor.items())
    floor_flops = sum(n * flops[k] for k, n in m.floor.items())
    t = times[m.label]
    print(f'| {m.label:15s} | {t * 1e3:8.0f} | {t / base:9.2f} | {floor / base:6.2f} | '
          f'{t / floor:10.2f} | {best[m.label] / floor_best:6.2f} | '
          f'{flops[m.label] / floor_flops:7.2f} | {m.floor_doc:28s}|')
  for label, why in skipped:
    print(f'| {label:15s} | skipped: {why}')
  return times


if __name__ == '__main__':
  main()
