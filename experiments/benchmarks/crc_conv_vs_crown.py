"""CRC on a one-conv-hidden-layer tanh network against CROWN (CNN-Cert's bounds), digits.

Singla & Feizi (ICML 2020, "Second-Order Provable Defenses against Adversarial
Attacks") extend CRC to a network with a single convolutional hidden layer and tanh and
compare its certified L2 radii with CNN-Cert (Boopathy et al., AAAI 2019). CNN-Cert
propagates the linear bounds of CROWN (Zhang et al. 2018: adaptive ReLU slopes,
tangent/chord bounds of sigmoid and tanh) through convolutions, which is what
``robustjax.certify.bound_propagation`` does on a conv layer list, so its CROWN stands in
for CNN-Cert on the same weights.

The network (conv 16 3x3 stride 1 - tanh - flatten - dense 10 on 8x8x1 digits) is
trained here with Adam on cross-entropy. On the first ``--n`` test digits it reports per
certificate the mean certified radius (0 where misclassified), the certified accuracy at
a few radii, the time per example (jitted, warm) and a soundness check: PGD-L2 (50
steps, 2 restarts, margin loss) at 0.999 x each certified radius must break none.
CRC certifies in all of R^n; CROWN and IBP are run both over the L2 ball alone (as
CNN-Cert, comparable with CRC) and over the ball intersected with the [0, 1] box
(what ``evaluate --certify=crown`` reports).

  python experiments/benchmarks/crc_conv_vs_crown.py [--n=200] [--steps=600]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from robustjax import attacks  # pylint: disable=wrong-import-position
from robustjax import certify  # pylint: disable=wrong-import-position
from robustjax import data  # pylint: disable=wrong-import-position
from robustjax import losses  # pylint: disable=wrong-import-position
from robustjax.certify import bound_propagation as bp  # pylint: disable=wrong-import-position

RADII = (0.1, 0.2, 0.3, 0.5)


def conv_tanh_net(key, channels: int = 16):
  """``conv(channels, 3x3) - tanh - flatten - dense(10)`` for ``[B, 8, 8, 1]`` inputs."""
  k1, k2 = jax.random.split(key)
  w1 = jax.random.normal(k1, (3, 3, 1, channels)) / 3.0
  w2 = jax.random.normal(k2, (6 * 6 * channels, 10)) / np.sqrt(6 * 6 * channels)
  return (bp.conv(w1, jnp.zeros(channels)), bp.activation('tanh'), bp.flatten(),
          bp.dense(w2, jnp.zeros(10)))


def train(net, x, y, *, steps: int, lr: float = 1e-2):
  """Adam on the mean cross-entropy of the whole training split, ``steps`` steps."""
  loss_fn = lambda n: jnp.mean(losses.cross_entropy(bp.apply(n, x), y))
  opt = optax.adam(lr)

  @jax.jit
  def step(n, state):
    loss, grads = jax.value_and_grad(loss_fn)(n)
    updates, state = opt.update(grads, state, n)
    return optax.apply_updates(n, updates), state, loss

  state = opt.init(net)
  for _ in range(steps):
    net, state, loss = step(net, state)
  return net, float(loss)


def timed(fn):
  """``(result, seconds)`` of the second call (the first compiles)."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def broken(net, x, y, radius) -> int:
  """Points that PGD-L2 misclassifies within 0.999 x their certified radius (must be 0)."""
  keep = np.asarray(radius) > 0
  if not keep.any():
    return 0
  xs, ys, r = x[keep], y[keep], 0.999 * jnp.asarray(radius)[keep]
  x_adv = attacks.pgd(lambda n, v: bp.apply(n, v), net, (xs, ys),
                      rng=jax.random.PRNGKey(0), eps=r, p=2.0, steps=50, restarts=2,
                      objective='margin', bounds=None)
  return int(np.sum(np.asarray(jnp.argmax(bp.apply(net, x_adv), -1)) != np.asarray(ys)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--n', type=int, default=200, help='test digits certified')
  parser.add_argument('--steps', type=int, default=600, help='Adam steps of training')
  args = parser.parse_args()
  x_train, y_train = data.load('digits', 'train')
  x, y = data.load('digits', 'test', num_examples=args.n)
  x, y = jnp.asarray(x), jnp.asarray(y)
  net, loss = train(conv_tanh_net(jax.random.PRNGKey(0)), jnp.asarray(x_train),
                    jnp.asarray(y_train), steps=args.steps)
  correct = np.asarray(jnp.argmax(bp.apply(net, x), -1) == y)
  print(f'backend={jax.default_backend()} n={args.n} train loss {loss:.4f} clean accuracy '
        f'{correct.mean():.3f}; network conv16 3x3 - tanh - dense 10 on 8x8x1')
  rows = []
  crc_fn = jax.jit(lambda xs, ys: certify.crc_conv(net, xs, ys).radius)
  radius, seconds = timed(lambda: crc_fn(x, y))
  rows.append(('CRC (closed-form conv curvature bound)', radius, seconds))
  for method in ('crown', 'ibp'):
    for box, name in ((None, 'L2 ball'), ((0.0, 1.0), 'L2 ball and [0, 1] box')):
      fn = jax.jit(lambda xs, ys, m=method, b=box: bp.certified_radius(
          net, xs, ys, p=2.0, method=m, bounds=b, max_eps=2.0, steps=14))
      radius, seconds = timed(lambda f=fn: f(x, y))
      rows.append((f'{method.upper()} ({name})', radius, seconds))
  print(f'| certificate | mean radius | ' + ' | '.join(f'cert. acc. {r:g}' for r in RADII)
        + ' | ms / example | broken by PGD |')
  print('| --- ' * (len(RADII) + 4) + '|')
  for name, radius, seconds in rows:
    radius = np.where(correct, np.asarray(radius), 0.0)
    accs = ' | '.join(f'{100 * np.mean(radius > r):.1f}' for r in RADII)
    print(f'| {name} | {radius.mean():.4f} | {accs} | {1e3 * seconds / args.n:.2f} | '
          f'{broken(net, x, y, radius)} |', flush=True)


if __name__ == '__main__':
  main()
