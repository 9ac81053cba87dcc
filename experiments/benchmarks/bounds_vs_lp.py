"""Bound propagation against independent solvers on the same weights: LP and MILP.

For small ReLU MLPs and L∞ balls ∩ [0, 1], robustjax's IBP, CROWN-IBP and CROWN
margin bounds are compared with (a) the LP of the triangle relaxation (Ehlers 2017;
Wong & Kolter 2018) over the same pre-activation intervals as CROWN, solved by
``scipy.optimize.linprog`` (HiGHS), which must lie between CROWN's bound and the true
minimum, and (b) on tiny nets the exact minimum, a big-M MILP over the ReLU activation
patterns (``scipy.optimize.milp``). Reported: mean bound gap to the exact minimum per
method, ordering violations (must be 0) and time per certified example (all K−1
margins), robustjax (jitted, warm) against the LP.

  PYTHONPATH=. python experiments/benchmarks/bounds_vs_lp.py [--widths=16,16] [--n=20]
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize

from robustjax.certify import bound_propagation as bp


def relu_mlp(key, widths, scale=1.0):
  """A random ReLU MLP as a plain layer list (flatten, dense, relu, ..., dense)."""
  keys = jax.random.split(key, 2 * len(widths))
  layers = [bp.flatten()]
  for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
    w = scale * jax.random.normal(keys[2 * i], (a, b)) / math.sqrt(a)
    layers.append(bp.dense(w, 0.1 * jax.random.normal(keys[2 * i + 1], (b,))))
    if i < len(widths) - 2:
      layers.append(bp.activation('relu'))
  return tuple(layers)


def _dense_weights(network):
  return [(np.asarray(l.arrays[0], np.float64), np.asarray(l.arrays[1], np.float64))
          for l in network if l.kind == 'dense']


def relu_program(network, x0, lower_in, upper_in, intervals, label, target, *,
                 exact=False):
  """Minimum of ``z_y − z_t`` over the box ``[lower_in, upper_in]``: the triangle LP, or
  with ``exact`` the MILP of the ReLU network (big-M from ``intervals``).

  Args:
    network: ReLU layer list (flatten, dense, relu, ..., dense).
    x0: unused except for its size ``[d]``.
    lower_in, upper_in: ``[d]`` input interval (the L∞ ball ∩ box).
    intervals: per hidden layer ``(l [n], u [n])`` pre-activation bounds (valid ones).
    label, target: classes y, t.
    exact: MILP instead of the LP relaxation.

  Returns:
    The optimal value (float).
  """
  weights = _dense_weights(network)
  d = x0.size
  hidden = [w.shape[1] for w, _ in weights[:-1]]
  # Variables: x, then per hidden layer z_i, a_i, and (exact) binaries δ_i.
  offsets, size = [], d
  for n in hidden:
    offsets.append(size)
    size += (3 if exact else 2) * n
  a_eq, b_eq, a_ub, b_ub = [], [], [], []
  lo_var = list(lower_in) + []
  hi_var = list(upper_in) + []
  integrality = [0] * d
  prev_slice = slice(0, d)
  for i, n in enumerate(hidden):
    w, b = weights[i]
    l, u = (np.asarray(v, np.float64).reshape(-1) for v in intervals[i])
    z0, a0 = offsets[i], offsets[i] + n
    for j in range(n):
      row = np.zeros(size)
      row[z0 + j] = 1.0
      row[prev_slice] = -w[:, j]
      a_eq.append(row)
      b_eq.append(b[j])
    lo_var += list(l) + [0.0] * n
    hi_var += list(u) + list(np.maximum(u, 0.0))
    integrality += [0] * (2 * n)
    if exact:
      lo_var += [0.0] * n
      hi_var += [1.0] * n
      integrality += [1] * n
    for j in range(n):
      zj, aj = z0 + j, a0 + j
      if l[j] >= 0:  # active: a = z
        row = np.zeros(size); row[aj] = 1.0; row[zj] = -1.0
        a_eq.append(row); b_eq.append(0.0)
      elif u[j] <= 0:  # inactive: a = 0
        row = np.zeros(size); row[aj] = 1.0
        a_eq.append(row); b_eq.append(0.0)
      else:
        row = np.zeros(size); row[zj] = 1.0; row[aj] = -1.0  # z - a <= 0
        a_ub.append(row); b_ub.append(0.0)
        if exact:
          dj = a0 + n + j
          row = np.zeros(size); row[aj] = 1.0; row[zj] = -1.0; row[dj] = -l[j]
          a_ub.append(row); b_ub.append(-l[j])  # a <= z − l (1 − δ)
          row = np.zeros(size); row[aj] = 1.0; row[dj] = -u[j]
          a_ub.append(row); b_ub.append(0.0)  # a <= u δ
        else:
          slope = u[j] / (u[j] - l[j])
          row = np.zeros(size); row[aj] = 1.0; row[zj] = -slope
          a_ub.append(row); b_ub.append(-slope * l[j])  # a <= s (z − l)
    prev_slice = slice(a0, a0 + n)
  w, b = weights[-1]
  cost = np.zeros(size)
  cost[prev_slice] = w[:, label] - w[:, target]
  const = b[label] - b[target]
  bounds = list(zip(lo_var, hi_var))
  if exact:
    cons = [optimize.LinearConstraint(np.array(a_eq), np.array(b_eq), np.array(b_eq))]
    if a_ub:
      cons.append(optimize.LinearConstraint(np.array(a_ub), -np.inf, np.array(b_ub)))
    res = optimize.milp(cost, constraints=cons, integrality=np.array(integrality),
                        bounds=optimize.Bounds(np.array(lo_var), np.array(hi_var)))
  else:
    res = optimize.linprog(cost, A_ub=np.array(a_ub) if a_ub else None,
                           b_ub=np.array(b_ub) if b_ub else None, A_eq=np.array(a_eq),
                           b_eq=np.array(b_eq), bounds=bounds, method='highs')
  if res.status != 0:
    raise RuntimeError(f'solver failed: {res.message}')
  return float(res.fun + const)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--widths', default='10,16,16,4')
  parser.add_argument('--tiny', default='6,8,8,3')
  parser.add_argument('--n', type=int, default=20)
  parser.add_argument('--eps', type=float, default=0.05)
  args = parser.parse_args()
  rows = []
  for name, widths, exact in (('small', args.widths, False), ('tiny', args.tiny, True)):
    widths = tuple(int(w) for w in widths.split(','))
    net = relu_mlp(jax.random.PRNGKey(0), widths, scale=1.5)
    x = jax.random.uniform(jax.random.PRNGKey(1), (args.n, widths[0]))
    y = jnp.argmax(bp.apply(net, x), -1)
    k = widths[-1]
    results, times = {}, {}
    for method in bp.METHODS:
      fn = jax.jit(lambda xx, yy, m=method: bp.margin_lower_bounds(
          net, xx, yy, args.eps, method=m))
      jax.block_until_ready(fn(x, y))
      start = time.perf_counter()
      results[method] = jax.block_until_ready(fn(x, y))
      times[method] = (time.perf_counter() - start) / args.n
    lower, upper = bp.input_interval(x, args.eps)
    crown = results['crown']
    lp, milp = np.full((args.n, k), np.inf), np.full((args.n, k), np.inf)
    start = time.perf_counter()
    for i in range(args.n):
      ivs = [(l[i], u[i]) for l, u in crown.intervals]
      for t in range(k):
        if t != int(y[i]):
          lp[i, t] = relu_program(net, np.asarray(x[i]), np.asarray(lower[i]),
                                  np.asarray(upper[i]), ivs, int(y[i]), t)
    lp_time = (time.perf_counter() - start) / args.n
    if exact:
      start = time.perf_counter()
      for i in range(args.n):
        ivs = [(l[i], u[i]) for l, u in crown.intervals]
        for t in range(k):
          if t != int(y[i]):
            milp[i, t] = relu_program(net, np.asarray(x[i]), np.asarray(lower[i]),
                                      np.asarray(upper[i]), ivs, int(y[i]), t, exact=True)
      milp_time = (time.perf_counter() - start) / args.n
    ref = milp if exact else lp
    own = np.isinf(lp)
    gap = lambda b: float(np.mean(np.where(own, 0.0, ref - np.where(own, 0.0, b))[~own]))
    bad = sum(int(np.sum((np.asarray(results[m].margins) > lp + 1e-4)[~own]))
              for m in bp.METHODS)
    if exact:
      bad += int(np.sum((lp > milp + 1e-4)[~own]))
    row = {'net': f'{name} {widths}', 'ref': 'MILP' if exact else 'LP',
           'gap_ibp': gap(results['ibp'].margins), 'gap_crown_ibp':
           gap(results['crown_ibp'].margins), 'gap_crown': gap(crown.margins),
           'gap_lp': gap(lp) if exact else 0.0, 'violations': bad,
           'ms_crown': 1e3 * times['crown'], 'ms_lp': 1e3 * lp_time,
           'ratio': lp_time / times['crown'],
           'cert': {m: float(np.mean(results[m].certified)) for m in bp.METHODS},
           'cert_lp': float(np.mean(np.all(lp > 0, -1)))}
    if exact:
      row['cert_exact'] = float(np.mean(np.all(milp > 0, -1)))
      row['ms_milp'] = 1e3 * milp_time
    rows.append(row)
  print(f'L-inf eps={args.eps}, n={args.n} examples, all K-1 margins per example')
  print('| net | gap to ref: IBP | CROWN-IBP | CROWN | LP | ordering violations | '
        'certified IBP/CROWN-IBP/CROWN/LP(/exact) | ms per example CROWN | LP | LP/CROWN |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    cert = '/'.join(f"{r['cert'][m]:.2f}" for m in bp.METHODS) + f"/{r['cert_lp']:.2f}"
    if 'cert_exact' in r:
      cert += f"/{r['cert_exact']:.2f}"
    print(f"| {r['net']} (vs {r['ref']}) | {r['gap_ibp']:.4f} | {r['gap_crown_ibp']:.4f} | "
          f"{r['gap_crown']:.4f} | {r['gap_lp']:.4f} | {r['violations']} | {cert} | "
          f"{r['ms_crown']:.3f} | {r['ms_lp']:.1f} | {r['ratio']:.0f}x |")


if __name__ == '__main__':
  main()
