"""robustjax's FAB against the official FAB code (``pyautoattack``, CPU PyTorch).

Run: ``python experiments/benchmarks/fab_vs_official.py`` (needs the ``bench`` extra).

1. The hyperplane ∩ box projections on the same random instances (200 rows of 50
   coordinates, a fifth of the normal's entries zero): ratio of the Lp norms of
   robustjax's step to the official one, and each one's largest residual
   ``|<w, t + d> − b|``.
2. The minimal adversarial norms of FAB (untargeted) and FAB-T (9 targets), 100 steps, no
   restarts, on the same tanh MLP (64-32-10, weights shared by a PyTorch port) at 64
   random inputs labelled by the model: per example, robustjax's norm / the official one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks
from robustjax.attacks._src import fab as fab_lib



def compare_projections(rng, rows=200, dim=50):
  import torch  # pylint: disable=g-import-not-at-top
  from pyautoattack import fab_projections  # pylint: disable=g-import-not-at-top
  t = rng.uniform(0, 1, (rows, dim)).astype(np.float32)
  w = rng.normal(size=(rows, dim)).astype(np.float32)
  w[rng.uniform(size=(rows, dim)) < 0.2] = 0
  b = np.sum(w * rng.uniform(0, 1, (rows, dim)), 1).astype(np.float32)
  official = {math.inf: fab_projections.projection_linf, 2.0: fab_projections.projection_l2,
              1.0: fab_projections.projection_l1}
  print('projection | norm ratio median [min, max] | max residual ours | official')
  for p, project in official.items():
    d_off = project(torch.tensor(t), torch.tensor(w), torch.tensor(b)).numpy()
    d_ours = np.asarray(fab_lib.project_hyperplane_box(jnp.asarray(t), jnp.asarray(w),
                                                       jnp.asarray(b), p))
    ratio = np.linalg.norm(d_ours, ord=p, axis=1) / np.linalg.norm(d_off, ord=p, axis=1)
    residual = lambda d: np.abs(np.sum(w * (t + d), 1) - b).max()
    print(f'p={p:<4} | {np.median(ratio):.6f} [{ratio.min():.6f}, {ratio.max():.6f}] | '
          f'{residual(d_ours):.1e} | {residual(d_off):.1e}')


def compare_attacks(rng, dim=64, hidden=32, classes=10, batch=64, steps=100):
  import torch  # pylint: disable=g-import-not-at-top
  from pyautoattack.fab_pt import FABAttack_PT  # pylint: disable=g-import-not-at-top
  w1 = rng.normal(size=(dim, hidden)).astype(np.float32) / math.sqrt(dim)
  b1 = np.zeros(hidden, np.float32)
  w2 = rng.normal(size=(hidden, classes)).astype(np.float32)
  b2 = 0.1 * rng.normal(size=classes).astype(np.float32)
  params = tuple(map(jnp.asarray, (w1, b1, w2, b2)))
  mlp = lambda p, x: jnp.tanh(x @ p[0] + p[1]) @ p[2] + p[3]
  torch_weights = [torch.tensor(a) for a in (w1, b1, w2, b2)]
  torch_mlp = lambda x: (torch.tanh(x @ torch_weights[0] + torch_weights[1]) @ torch_weights[2]
                         + torch_weights[3])
  x = rng.uniform(0, 1, (batch, dim)).astype(np.float32)
  y = np.argmax(np.asarray(mlp(params, x)), 1).astype(np.int32)
  print('attack            | found ours / official | median norm ours / official | '
        'per-example ratio median [min, max]')
  for norm, p in (('Linf', math.inf), ('L2', 2.0)):
    for targeted in (False, True):
      official = FABAttack_PT(torch_mlp, norm=norm, n_restarts=1, n_iter=steps, eps=10.0,
                              device='cpu', n_target_classes=9)
      best = np.full(batch, np.inf)
      for target in (range(2, 11) if targeted else [None]):
        official.target_class = target
        with torch.no_grad():
          adv = official.attack_single_run(torch.tensor(x), torch.tensor(y, dtype=torch.long),
                                           use_rand_start=False,
                                           is_targeted=targeted).numpy()
          fooled = np.argmax(torch_mlp(torch.tensor(adv)).numpy(), 1) != y
        best = np.where(fooled, np.minimum(best, np.linalg.norm(adv - x, ord=p, axis=1)),
                        best)
      _, ours = attacks.fab_min_norm(mlp, params, (jnp.asarray(x), jnp.asarray(y)),
                                     rng=jax.random.PRNGKey(0), eps=10.0, p=p, steps=steps,
                                     targeted=targeted)
      ours = np.asarray(ours)
      both = np.isfinite(best) & np.isfinite(ours)
      ratio = ours[both] / best[both]
      name = f'{"FAB-T" if targeted else "FAB"} {norm}'
      print(f'{name:17} | {np.isfinite(ours).sum():3d} / {np.isfinite(best).sum():3d} of '
            f'{batch} | {np.median(ours[both]):.4f} / {np.median(best[both]):.4f} | '
            f'{np.median(ratio):.4f} [{ratio.min():.4f}, {ratio.max():.4f}]')


def main():
  rng = np.random.default_rng(0)
  compare_projections(rng)
  compare_attacks(rng)


if __name__ == '__main__':
  main()
