"""Timing helpers the benchmarks share: one call, a median, interleaved ratios, compiles."""

from __future__ import annotations

import statistics
import time

import jax


def timed(fn, *args) -> tuple[float, object]:
  """``(seconds, result)`` of one call of ``fn(*args)``, waiting for its arrays."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return time.perf_counter() - start, out


def median_time(fn, *args, repeats):
  """Median seconds of ``fn(*args)`` over ``repeats`` calls after one warm-up call."""
  jax.block_until_ready(fn(*args))
  return statistics.median(timed(fn, *args)[0] for _ in range(repeats))


def paired(fn_a, args_a, fn_b, args_b, *, repeats, calls_b=1):
  """Median of ``time(a) / (calls_b * time(b))`` over interleaved pairs, and the median
  times of a and of one call of b.

  Interleaving keeps the ratio honest on a shared machine whose load drifts; ``b`` is
  called ``calls_b`` times back to back per pair (its reported time is per call).
  """
  jax.block_until_ready(fn_a(*args_a))
  jax.block_until_ready(fn_b(*args_b))
  ratios, times_a, times_b = [], [], []
  for _ in range(repeats):
    t_a = timed(fn_a, *args_a)[0]
    t_b = sum(timed(fn_b, *args_b)[0] for _ in range(calls_b))
    ratios.append(t_a / t_b)
    times_a.append(t_a)
    times_b.append(t_b / calls_b)
  return (statistics.median(ratios), statistics.median(times_a),
          statistics.median(times_b))


def compiled(fn, *args):
  """``(compiled jit of fn for args, seconds the compilation took)``."""
  start = time.perf_counter()
  out = jax.jit(fn).lower(*args).compile()
  return out, time.perf_counter() - start
