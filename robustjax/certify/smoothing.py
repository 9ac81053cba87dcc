"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): PREDICT and CERTIFY.

The smoothed classifier of a base classifier ``f(x) = argmax logits_fn(params, x)`` is

    g(x) = argmax_c P(f(x + ε) = c),   ε ~ N(0, σ² I),

and if ``p_A`` lower-bounds the top class's probability, ``g`` is constant on the L2
ball of radius ``σ Φ⁻¹(p_A)`` around x (Cohen et al., Theorem 1, binary form). Both
algorithms only count the base classifier's votes under noise:

- :func:`predict` (PREDICT): ``n`` votes; the top two counts ``n_A, n_B`` go through a
  two-sided binomial test of ``p = 1/2``; the top class is returned when the p-value is
  at most ``alpha``, else -1 (abstain). The returned class differs from ``g(x)`` with
  probability at most ``alpha``.
- :func:`certify` (CERTIFY): ``n0`` votes select the guess ``ĉ_A``; ``n`` fresh votes
  give ``n_A`` and the one-sided ``(1 − alpha)`` Clopper-Pearson lower bound
  ``p_A_lower`` (the ``alpha``-quantile of ``Beta(n_A, n − n_A + 1)``); the radius is
  ``σ Φ⁻¹(p_A_lower)``, and the call abstains when ``p_A_lower <= 1/2``. With
  probability at least ``1 − alpha`` a non-abstaining answer is correct: ``g`` predicts
  ``ĉ_A`` on the whole ball.

Noise is drawn on device. The ``B x n`` noisy forward passes are cut into chunks of at
most ``batch_size`` passes (one example's samples when ``n >= batch_size``, else several
examples' ``n`` samples), looped with ``lax.map``/``lax.scan``, so memory is bounded by
``batch_size`` whatever ``n``; each chunk is sharded over a ``('data',)`` device mesh.
The noise of example ``b``'s sample ``j`` is hashed from the key ``fold_in(rng_phase, b)``
and the counters ``(j, coordinate)``, so the votes, and everything computed from them,
depend on ``rng`` only: not on ``batch_size``, the number of devices, or ``jit``.
The noise is not clipped to the input box (as in the paper); the box is only used to
check the inputs. It comes from Box-Muller on 32-bit words, which reaches 6.66 σ; the
Gaussian mass beyond, at most ``⌈d/2⌉ 2⁻³²`` per input (:func:`tail_mass`; the argument
is next to :func:`_bits_to_normal`), is subtracted from ``p_A_lower``.

The statistics run on device too, in the default float precision, without scipy: the
binomial CDF is Didonato & Morris' continued fraction (ACM TOMS 708, in the form carried
by ``λ = (a + b) y − b``) times a binomial probability from Loader's saddle-point method
(``stirlerr`` / ``bd0``); the Clopper-Pearson bound is a Newton solve on the concave
log-survival function of a Beta distribution, approached from the safe side. In
float32 the bound on ``1 − p_A`` is within ~1e-5 relative of scipy's ``beta.ppf`` at
``n = 10⁵`` (``jax.scipy.special.betainc`` errs by ~10% of a 1e-3 tail there).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import random as jax_random_ext
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robustjax import _checks
from robustjax.types import Array, Bounds, DEFAULT_BOUNDS, Inputs, LogitsFn, Params, PRNGKey

ABSTAIN = -1

# stirlerr(k) = log k! - (k + 1/2) log k + k - log sqrt(2π), exactly for k <= 15.
_STIRLERR_SMALL = np.array(
    [0.0] + [math.lgamma(k + 1) - (k + 0.5) * math.log(k) + k - 0.5 * math.log(2 * math.pi)
             for k in range(1, 16)])
_LOG_2PI = math.log(2 * math.pi)


class SmoothingCertificate(NamedTuple):
  """CERTIFY's answer per example."""
  prediction: Array  # [B] int32 certified class ĉ_A, or -1 (abstain)
  radius: Array  # [B] float certified L2 radius σ Φ⁻¹(p_A_lower); 0 when abstaining
  p_a_lower: Array  # [B] float one-sided (1 - alpha) Clopper-Pearson lower bound on p_A
  #   less the sampler's tail_mass (1 minus the bound on 1 - p_A the radius uses)
  count: Array  # [B] int32 n_A: estimation votes for the selected class
  counts: Array  # [B, K] int32 estimation votes per class (num_estimation per row)
  selected: Array  # [B] int32 ĉ_A, the selection votes' top class (kept when abstaining)
  selection_counts: Array  # [B, K] int32 selection votes per class (num_selection per row)


# ------------------------------------------------------------------------------------
# Binomial statistics on device.


def _float_dtype():
  return jnp.asarray(0.0).dtype  # float32, or float64 under jax_enable_x64


def _stirlerr(k: Array) -> Array:
  """``log k! − (k + ½) log k + k − ½ log 2π`` for integer-valued ``k >= 1``."""
  table = jnp.asarray(_STIRLERR_SMALL, k.dtype)
  small = table[jnp.clip(k, 0, 15).astype(jnp.int32)]
  kk = jnp.maximum(k, 1.0)
  k2 = kk * kk
  series = (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * k2)) / k2) / k2) / k2) / kk
  return jnp.where(k <= 15, small, series)


def _bd0(x: Array, mean: Array, diff: Array, terms: int = 8) -> Array:
  """Loader's deviance ``x log(x / mean) + mean − x``, given ``diff = x − mean`` exactly.

  Near ``x = mean`` the direct formula cancels; there the series in
  ``v = diff / (x + mean)`` converges fast (|v| < 0.1).
  """
  total = x + mean
  near = jnp.abs(diff) < 0.1 * total
  v = diff / jnp.where(total > 0, total, 1.0)
  s = diff * v
  ej = 2 * x * v
  v2 = v * v
  for j in range(1, terms + 1):
    ej = ej * v2
    s = s + ej / (2 * j + 1)
  safe_x = jnp.where(x > 0, x, 1.0)
  direct = jnp.where(x > 0, x * jnp.log(safe_x / jnp.where(mean > 0, mean, 1.0)), 0.0) - diff
  return jnp.where(near, s, direct)


def _log_binomial_pmf(k: Array, n: Array, p: Array) -> Array:
  """``log P(X = k)``, ``X ~ Bin(n, p)``, for integer-valued ``0 <= k <= n``, ``0 < p < 1``."""
  q = 1.0 - p
  # k − n p, computed from whichever of p and q is small so that it stays exact.
  diff = jnp.where(p <= 0.5, k - n * p, n * q - (n - k))
  kk = jnp.clip(k, 1.0, jnp.maximum(n - 1, 1.0))
  inner = (_stirlerr(n) - _stirlerr(kk) - _stirlerr(n - kk)
           - _bd0(kk, n * p, diff) - _bd0(n - kk, n * q, -diff)
           + 0.5 * (jnp.log(n) - _LOG_2PI - jnp.log(kk) - jnp.log(n - kk)))
  return jnp.where(k <= 0, n * jnp.log1p(-p), jnp.where(k >= n, n * jnp.log(p), inner))


def _continued_fraction(a: Array, b: Array, x: Array, y: Array, lam: Array,
                        max_iterations: int) -> Array:
  """``I_x(a, b) / (x^a y^b / B(a, b))`` by the continued fraction of Didonato & Morris.

  The even contraction of the incomplete beta function's continued fraction written in
  ``λ = (a + b) y − b = a − (a + b) x`` (Didonato & Morris 1992, ACM TOMS Algorithm 708,
  BFRAC), valid for ``λ >= 0`` (x at or below the mean a / (a + b)). Every step's
  near-cancellation is carried by ``λ``, which the caller computes exactly from the
  smaller of x and y = 1 − x; the classic Lentz form loses ~1e-3 relative in float32 at
  n = 10⁵ there. Iterates three-term recurrences (rescaled each step); each element
  stops at its own convergence (or ``max_iterations``), so its value does not depend on
  the other elements of the batch.
  """
  dtype = x.dtype
  eps = jnp.asarray(np.finfo(dtype).eps, dtype)
  one = jnp.ones_like(x)
  c = lam + 1.0
  c0 = b / a
  c1 = 1.0 / a + 1.0
  yp1 = y + 1.0
  # Recurrence state: previous and current numerators / denominators, and p, s.
  init = (jnp.ones([], dtype), one, a + 1.0, jnp.zeros_like(x), one, one, c / c1, c1 / c,
          jnp.ones(x.shape, bool))

  def step(state):
    m, p, s, a_prev, b_prev, a_cur, b_cur, ratio, active = state
    t = m / a
    w = m * (b - m) * x
    e = a / s
    alpha = p * (p + c0) * e * e * (w * x)
    beta = m + w / s + (1.0 + t) / (c1 + t + t) * (c + m * yp1)
    a_next = alpha * a_prev + beta * a_cur
    b_next = alpha * b_prev + beta * b_cur
    new_ratio = a_next / b_next
    err = jnp.where(jnp.isfinite(new_ratio),
                    jnp.abs(new_ratio - ratio) / jnp.abs(new_ratio), 0.0)
    # Rescale so that the denominator is 1; converged elements keep their state.
    new = (1.0 + t, s + 2.0, a_cur / b_next, b_cur / b_next, new_ratio, one, new_ratio)
    old = (p, s, a_prev, b_prev, a_cur, b_cur, ratio)
    kept = tuple(jnp.where(active, u, v) for u, v in zip(new, old))
    return (m + 1.0,) + kept + (active & (err > eps),)

  def cond(state):
    return jnp.any(state[-1]) & (state[0] <= max_iterations)

  return jax.lax.while_loop(cond, step, init)[7]


def binomial_log_cdf(k, n, p, *, max_iterations: int = 10_000) -> Array:
  """``log P(X <= k)`` for ``X ~ Bin(n, p)``, elementwise, on device.

  Args:
    k: successes, integer-valued (any shape; broadcast with n and p).
    n: trials, integer-valued, >= 1.
    p: success probability in [0, 1].
    max_iterations: cap on the continued fraction's iterations (tens in practice).

  Returns:
    ``log P(X <= k)`` in the default float dtype; 0 for ``k >= n``, -inf for ``k < 0``.
  """
  return _log_cdf_and_pmf(k, n, p, max_iterations)[0]


def _log_cdf_and_pmf(k, n, p, max_iterations: int = 10_000) -> tuple[Array, Array]:
  """``(log P(X <= k), log P(X = k'))`` with ``k'`` = k clipped to [0, n − 1]."""
  dtype = _float_dtype()
  k, n, p = (jnp.asarray(v, dtype) for v in (k, n, p))
  k, n, p = jnp.broadcast_arrays(k, n, p)
  tiny = jnp.finfo(dtype).tiny
  pc = jnp.clip(p, tiny, 1.0 - jnp.finfo(dtype).epsneg)
  qc = 1.0 - pc
  kc = jnp.clip(k, 0.0, jnp.maximum(n - 1.0, 0.0))
  # λ = (n + 1) p − (k + 1) >= 0: k lies below the mean, the lower tail is the small one.
  lam = jnp.where(pc <= 0.5, (n + 1.0) * pc - (kc + 1.0), (n - kc) - (n + 1.0) * qc)
  lower = lam >= 0
  # Lower tail P(X <= k) = I_q(n − k, k + 1), prefactor (n − k) p pmf(k).
  # Upper tail P(X > k) = I_p(k + 1, n − k), prefactor (k + 1) q pmf(k + 1).
  a = jnp.where(lower, n - kc, kc + 1.0)
  b = jnp.where(lower, kc + 1.0, n - kc)
  x = jnp.where(lower, qc, pc)
  y = jnp.where(lower, pc, qc)
  ratio = _continued_fraction(a, b, x, y, jnp.abs(lam), max_iterations)
  log_pmf = _log_binomial_pmf(kc, n, pc)
  # Upper branch: pmf(k + 1) (k + 1) q = pmf(k) (n − k) p.
  log_prefactor = jnp.log(n - kc) + jnp.log(pc) + log_pmf
  log_tail = log_prefactor + jnp.log(jnp.maximum(ratio, tiny))
  value = jnp.where(lower, jnp.minimum(log_tail, 0.0),
                    jnp.log1p(-jnp.minimum(jnp.exp(log_tail), 1.0)))
  value = jnp.where(kc <= 0, n * jnp.log1p(-pc), value)  # P(X = 0), exactly
  # Exact values at the ends of p's range and of k's.
  value = jnp.where(p <= 0.0, 0.0, value)
  value = jnp.where((p >= 1.0) & (k < n), -jnp.inf, value)
  value = jnp.where(k >= n, 0.0, value)
  return jnp.where(k < 0, -jnp.inf, value), log_pmf


def _binomial_quantile(f: Array, n: Array, level: Array, *, round_up: bool,
                       max_newton_steps: int = 30) -> Array:
  """The ``q`` with ``P(Bin(n, q) <= f) = level``, on device (elementwise).

  That is the ``1 − level`` quantile of ``Beta(f + 1, n − f)``; ``1 − level^(1/n)``
  exactly for ``f = 0`` and 1 for ``f >= n``. Solved by Newton's method on
  ``g(q) = log P(Bin(n, q) <= f) − log level``: ``P(Bin(n, q) <= f)`` is the survival
  function of ``Beta(f + 1, n − f)``, whose log-concave density makes g concave and
  decreasing, so every Newton iterate after the first lies at or above the root and
  they decrease to it, quadratically. Starting one standard deviation beyond the normal
  approximation, a few steps reach float precision (the continued fraction is slow only
  near the mean, which the iterates avoid). The float evaluation of g jitters by ~1e-6
  relative; the result is moved by 64 ulp up (``round_up``) or down to stay on the safe
  side of the exact quantile. ``g'(q) = −n pmf(f; n − 1, q) / P(X <= f)``.
  """
  dtype = _float_dtype()
  f, n, level = (jnp.asarray(v, dtype) for v in (f, n, level))
  f, n, level = jnp.broadcast_arrays(f, n, level)
  log_level = jnp.log(level)
  fc = jnp.clip(f, 0.0, jnp.maximum(n - 1.0, 0.0))
  eps = jnp.asarray(np.finfo(dtype).eps, dtype)

  def newton(state):
    step, q, active = state
    log_cdf, log_pmf = _log_cdf_and_pmf(fc, n, q)
    # n pmf(f; n − 1, q) = pmf(f; n, q) (n − f) / (1 − q).
    log_density = log_pmf + jnp.log(n - fc) - jnp.log1p(-q)
    hazard = jnp.exp(log_density - log_cdf)  # −g'(q)
    target = q + (log_cdf - log_level) / hazard
    # Stay inside (0, 1): halve the distance to the end if a step would leave it.
    target = jnp.where(target >= 1.0, 0.5 * (q + 1.0),
                       jnp.where(target <= 0.0, 0.5 * q, target))
    target = jnp.where(jnp.isfinite(target), target, q)
    change = jnp.abs(target - q) / q
    # Each element stops at its own convergence: its result does not depend on the batch.
    return (step + 1, jnp.where(active, target, q),
            active & (change > 32 * eps) & jnp.isfinite(change))

  def cond(state):
    step, _, active = state
    return (step < max_newton_steps) & jnp.any(active)

  mean = (fc + 1.0) / (n + 1.0)
  sd = jnp.sqrt(mean * (1.0 - mean) / (n + 2.0))
  start = mean + (1.0 - jax.scipy.special.ndtri(level)) * sd
  start = jnp.clip(start, 0.5 * mean, 0.5 * (1.0 + mean))
  _, q, _ = jax.lax.while_loop(cond, newton, (0, start, jnp.ones(start.shape, bool)))
  closed = -jnp.expm1(log_level / jnp.maximum(n, 1.0))  # f = 0: 1 − level^(1/n)
  q = jnp.where(f <= 0, closed, q)
  q = q * (1.0 + 64 * eps) if round_up else q * (1.0 - 64 * eps)
  return jnp.clip(jnp.where(f >= n, 1.0, q), 0.0, 1.0)


def _upper_bound_failures(failures: Array, n: Array, alpha) -> Array:
  """One-sided ``(1 − alpha)`` Clopper-Pearson upper bound on the proportion of failures.

  The smallest ``q`` with ``P(Bin(n, q) <= failures) <= alpha``; accurate to ~1e-5
  relative, and never below the exact bound.
  """
  return _binomial_quantile(failures, n, alpha, round_up=True)


def clopper_pearson_lower(successes, trials, alpha) -> Array:
  """One-sided ``(1 − alpha)`` Clopper-Pearson lower confidence bound on a proportion.

  The ``alpha``-quantile of ``Beta(k, n − k + 1)`` (0 when ``k = 0``): the smallest
  ``p`` under which ``k`` or more successes in ``n`` trials still have probability
  ``alpha``. Computed on device as ``1 −`` the upper bound on the failure proportion.

  Args:
    successes: ``k``, integer-valued, ``0 <= k <= n`` (any shape).
    trials: ``n >= 1`` (broadcast with ``successes``).
    alpha: the error level in (0, 1).

  Returns:
    The bounds, in the default float dtype, with the shape of the broadcast inputs.
  """
  _check_alpha(alpha)
  dtype = _float_dtype()
  k = jnp.asarray(successes, dtype)
  n = jnp.asarray(trials, dtype)
  alpha = jnp.asarray(alpha, dtype)
  # Two routes to the same bound, each exact in relative terms on its side of 1/2:
  # 1 − (upper bound on the failure proportion), and directly the p with
  # P(Bin(n, p) <= k − 1) = 1 − alpha (P(X >= k) = alpha).
  from_failures = 1.0 - _upper_bound_failures(n - k, n, alpha)
  direct = _binomial_quantile(k - 1.0, n, 1.0 - alpha, round_up=False)
  bound = jnp.where(from_failures < 0.5, direct, from_failures)
  return jnp.where(k <= 0, 0.0, bound)


def binomial_test_pvalue(top, second) -> Array:
  """Two-sided p-value of ``top`` successes in ``top + second`` trials under ``p = 1/2``.

  For ``top >= second`` this is ``min(1, 2 P(Bin(top + second, ½) <= second))``, the
  test PREDICT applies to the top two counts (scipy's ``binomtest(top, top + second)``).

  Args:
    top: the larger count, integer-valued (any shape).
    second: the smaller count (broadcast with ``top``).

  Returns:
    p-values in [0, 1], default float dtype.
  """
  dtype = _float_dtype()
  top = jnp.asarray(top, dtype)
  second = jnp.asarray(second, dtype)
  small = jnp.minimum(top, second)
  trials = jnp.maximum(top + second, 1.0)
  log_tail = binomial_log_cdf(small, trials, 0.5)
  value = jnp.minimum(1.0, 2.0 * jnp.exp(log_tail))
  return jnp.where(top + second <= 0, 1.0, value)


# ------------------------------------------------------------------------------------
# Votes of the base classifier under noise.


def _check_alpha(alpha) -> None:
  if isinstance(alpha, jax.core.Tracer):
    return
  try:
    values = np.asarray(alpha, np.float64)
    ok = values.size > 0 and bool(np.all((values > 0.0) & (values < 1.0)))
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f'alpha must be in the open interval (0, 1), got {alpha!r}')


def _check_sigma(sigma) -> None:
  if isinstance(sigma, jax.core.Tracer):
    return
  try:
    ok = math.isfinite(float(sigma)) and float(sigma) > 0
  except (TypeError, ValueError):
    ok = False
  if not ok:
    raise ValueError(f'sigma must be a finite noise level > 0, got {sigma!r}')


# The sampler's reach and the Gaussian mass it cannot produce. Box-Muller maps two 32-bit
# words (w1, w2) to r (cos θ, sin θ) with r = sqrt(−2 ln u), u = (w1 + 1) 2⁻³² in (0, 1],
# θ = 2π w2 2⁻³²: every radius up to R = sqrt(64 ln 2) = 6.660 (u = 2⁻³²) is produced, none
# beyond. Soundness: couple the sampler with an exact Gaussian pair through the same
# uniform, U' in [w1, w1 + 1) 2⁻³² (and θ' likewise). The two differ by float rounding
# (as any float sampler, Cohen et al.'s included), except on U' < 2⁻³², where the exact
# radius exceeds R: probability exp(−R²/2) = 2⁻³² per pair. By the union bound over the
# ⌈d/2⌉ pairs of an input, a noisy input differs from an exact Gaussian draw with
# probability at most ``tail_mass(d) = ⌈d/2⌉ 2⁻³²`` (×1.001 for R's float32 rounding), so
# any class probability under the sampler is within tail_mass(d) of the Gaussian one, and
# p_A_lower − tail_mass(d) lower-bounds the smoothed classifier's p_A
# (d = 3,072: 3.6e-7; d = 150,528: 1.8e-5). The erfinv map from one 23-bit uniform used
# before reached only [−5.42, 5.17]: 1.5e-7 of Gaussian mass per coordinate.
_BOX_MULLER_TAIL = 2.0 ** -32 * 1.001  # exact-pair mass beyond the sampler's radius


def tail_mass(dim: int) -> float:
  """Probability that a sampled ``dim``-vector differs from an exact Gaussian one.

  ``⌈dim/2⌉ · 2⁻³²`` (see the argument above :func:`_bits_to_normal`): what
  :func:`certify` subtracts from the Clopper-Pearson bound on ``p_A``.
  """
  return -(-int(dim) // 2) * _BOX_MULLER_TAIL


def _sample_noise(keys: Array, sample: Array, shape: tuple[int, ...], dtype) -> Array:
  """``[e, s, *shape]`` standard normals: example e's key, sample index ``sample[s]``.

  Each pair of coordinates ``(m, m + ⌈d/2⌉)`` of sample j is one Box-Muller pair from two
  32-bit words: for threefry keys one Threefry-2x32 hash of the counter pair ``(j, m)``
  under the example's key (one elementwise pass, no per-sample keys); other key types
  draw the words with ``jax.random.bits`` from ``fold_in(key, j)``. The normals are
  computed in float32 and cast to ``dtype``.
  """
  data = jax.random.key_data(keys) if jax.dtypes.issubdtype(
      keys.dtype, jax.dtypes.prng_key) else keys
  size = int(np.prod(shape))
  half = -(-size // 2)
  if data.shape[-1] != 2 or data.dtype != jnp.uint32:
    per_sample = lambda k: jax.vmap(lambda j: jax.random.bits(
        jax.random.fold_in(k, j), (2 * half,), jnp.uint32))(sample)
    bits = jax.vmap(per_sample)(keys)
  else:
    pairs = jnp.arange(half, dtype=jnp.uint32)
    words = lambda pair, j: jax_random_ext.threefry_2x32(
        pair, jnp.concatenate([jnp.full((half,), j, jnp.uint32), pairs]))
    bits = jax.vmap(lambda pair: jax.vmap(lambda j: words(pair, j))(sample))(data)
  normals = _bits_to_normal(bits[..., :half], bits[..., half:])
  return normals[..., :size].astype(dtype).reshape(
      (data.shape[0], sample.shape[0]) + tuple(shape))


def _bits_to_normal(radius_bits: Array, angle_bits: Array) -> Array:
  """Box-Muller: ``[..., 2h]`` standard normals from two ``[..., h]`` uint32 word arrays.

  ``r = sqrt(−2 ln u)`` with ``u = (w1 + 1) 2⁻³²`` in (0, 1], ``θ = 2π w2 2⁻³²``;
  returns ``concat(r cos θ, r sin θ)``. ``ln u`` is ``ln(w1 + 1) − 32 ln 2`` below
  ``u = 1/2`` and ``log1p(−(2³² − 1 − w1) 2⁻³²)`` above, so it keeps float32's relative
  precision at both ends. The radius reaches 6.660 (``w1 = 0``).
  """
  low = jnp.log(radius_bits.astype(jnp.float32) + 1.0) - np.float32(32 * math.log(2.0))
  high = jnp.log1p(-(~radius_bits).astype(jnp.float32) * np.float32(2.0 ** -32))
  log_u = jnp.where(radius_bits < jnp.uint32(2 ** 31), low, high)
  radius = jnp.sqrt(jnp.maximum(-2.0 * log_u, 0.0))
  theta = angle_bits.astype(jnp.float32) * np.float32(2 * math.pi * 2.0 ** -32)
  return jnp.concatenate([radius * jnp.cos(theta), radius * jnp.sin(theta)], axis=-1)


def _plan(num_examples: int, num_samples: int, batch_size: int) -> tuple[int, int, int]:
  """``(examples per chunk, samples per chunk, chunks per example group)``."""
  if num_samples >= batch_size:
    return 1, batch_size, -(-num_samples // batch_size)
  return max(1, min(num_examples, batch_size // num_samples)), num_samples, 1


def _num_classes(logits_fn, params, inputs) -> int:
  spec = jax.ShapeDtypeStruct((1,) + tuple(inputs.shape[1:]), inputs.dtype)
  out = jax.eval_shape(logits_fn, params, spec)
  if len(out.shape) != 2 or out.shape[0] != 1:
    raise ValueError(f'logits_fn must return logits [B, K], got shape {out.shape} for '
                     f'a batch of 1')
  return int(out.shape[1])


@functools.partial(jax.jit, static_argnames=('logits_fn', 'num_samples', 'batch_size',
                                             'num_classes', 'mesh'))
def _votes(params, inputs, rng, sigma, *, logits_fn, num_samples, batch_size, num_classes,
           mesh):
  """Votes ``[B, K]`` int32 of the base classifier at ``num_samples`` noisy copies each."""
  num_examples = inputs.shape[0]
  per_group, per_chunk, chunks = _plan(num_examples, num_samples, batch_size)
  groups = -(-num_examples // per_group)
  padded = groups * per_group
  x = jnp.concatenate([inputs, jnp.zeros((padded - num_examples,) + inputs.shape[1:],
                                         inputs.dtype)]) if padded > num_examples else inputs
  example_keys = jax.vmap(lambda b: jax.random.fold_in(rng, b))(
      jnp.arange(padded, dtype=jnp.uint32))
  x = x.reshape((groups, per_group) + inputs.shape[1:])
  example_keys = example_keys.reshape((groups, per_group) + example_keys.shape[1:])
  rows = per_group * per_chunk
  sharding = None
  if mesh is not None and mesh.size > 1 and rows % mesh.size == 0:
    sharding = NamedSharding(mesh, PartitionSpec('data'))
  sigma = jnp.asarray(sigma, inputs.dtype)

  def chunk_votes(x_group, keys, chunk):
    sample = chunk * per_chunk + jnp.arange(per_chunk, dtype=jnp.uint32)  # [s]
    noise = _sample_noise(keys, sample, inputs.shape[1:], inputs.dtype)  # [e, s, ...]
    noisy = (x_group[:, None] + sigma * noise).reshape((rows,) + inputs.shape[1:])
    if sharding is not None:
      noisy = jax.lax.with_sharding_constraint(noisy, sharding)
    predicted = jnp.argmax(logits_fn(params, noisy), axis=-1).reshape(per_group, per_chunk)
    valid = (sample < num_samples).astype(jnp.int32)
    one_hot = jax.nn.one_hot(predicted, num_classes, dtype=jnp.int32)
    votes = jnp.einsum('esk,s->ek', one_hot, valid)
    if sharding is not None:  # a small replicated loop carry, whatever the chunk's sharding
      votes = jax.lax.with_sharding_constraint(votes, NamedSharding(mesh, PartitionSpec()))
    return votes

  def group_votes(args):
    x_group, keys = args
    if chunks == 1:
      return chunk_votes(x_group, keys, jnp.uint32(0))

    def body(total, chunk):
      return total + chunk_votes(x_group, keys, chunk), None

    zeros = jnp.zeros((per_group, num_classes), jnp.int32)
    total, _ = jax.lax.scan(body, zeros, jnp.arange(chunks, dtype=jnp.uint32))
    return total

  if groups == 1:
    votes = group_votes((x[0], example_keys[0]))[None]
  else:
    votes = jax.lax.map(group_votes, (x, example_keys))
  return votes.reshape(padded, num_classes)[:num_examples]


def _prepare(logits_fn, params, inputs, *, rng, sigma, batch_size, bounds, mesh,
             counts: dict[str, Any]):
  """Checks every argument before anything compiles; returns (K, batch_size, mesh)."""
  _checks.check_float_inputs(inputs)
  _check_sigma(sigma)
  for name, value in counts.items():
    _checks.check_int(value, name, minimum=1)
  batch_size = _checks.check_int(batch_size, 'batch_size', minimum=1)
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  if rng is None:
    raise ValueError('rng must be a PRNG key (e.g. jax.random.key(0)), got None')
  if mesh is None:
    mesh = Mesh(np.asarray(jax.devices()), ('data',))
  elif not isinstance(mesh, Mesh) or 'data' not in mesh.axis_names:
    raise ValueError(f"mesh must be a jax.sharding.Mesh with a 'data' axis, got {mesh!r}")
  num_classes = _num_classes(logits_fn, params, inputs)
  return num_classes, batch_size, mesh


def sample_counts(logits_fn: LogitsFn, params: Params, inputs: Inputs, *, rng: PRNGKey,
                  sigma: float, num_samples: int, batch_size: int = 1000,
                  bounds: Bounds | None = DEFAULT_BOUNDS, mesh: Mesh | None = None) -> Array:
  """Votes of the base classifier ``argmax logits_fn`` at ``x + N(0, σ² I)``, per class.

  Args:
    logits_fn: ``(params, inputs [N, ...]) -> logits [N, K]``.
    params: model parameters.
    inputs: ``[B, ...]`` points in ``bounds``.
    rng: PRNG key; the noise of example b's sample j is a function of
      ``fold_in(rng, b)`` and j only (see the module docstring).
    sigma: noise standard deviation (> 0).
    num_samples: noisy copies per example (>= 1).
    batch_size: at most this many noisy forward passes per chunk (the memory bound); a
      multiple of the mesh size shards each chunk over the devices.
    bounds: the input box ``inputs`` must lie in (the noise is not clipped), or None.
    mesh: device mesh with a ``'data'`` axis (default: every device).

  Returns:
    ``[B, K]`` int32 counts; every row sums to ``num_samples``.
  """
  num_classes, batch_size, mesh = _prepare(
      logits_fn, params, inputs, rng=rng, sigma=sigma, batch_size=batch_size,
      bounds=bounds, mesh=mesh, counts={'num_samples': num_samples})
  return _votes(params, inputs, rng, sigma, logits_fn=logits_fn, num_samples=num_samples,
                batch_size=batch_size, num_classes=num_classes, mesh=mesh)


def predict(logits_fn: LogitsFn, params: Params, inputs: Inputs, *, rng: PRNGKey,
            sigma: float, num_samples: int = 100, alpha: float = 0.001,
            batch_size: int = 1000, bounds: Bounds | None = DEFAULT_BOUNDS,
            mesh: Mesh | None = None) -> Array:
  """PREDICT of Cohen et al.: the smoothed classifier's class, or -1 (abstain).

  Draws ``num_samples`` votes per example; with ``n_A >= n_B`` the top two counts, the
  top class is returned when the two-sided binomial test of ``n_A`` successes in
  ``n_A + n_B`` trials against ``p = 1/2`` has p-value ``<= alpha``; otherwise the
  example abstains. A returned class is wrong (differs from ``g(x)``) with probability
  at most ``alpha``.

  Args:
    logits_fn: ``(params, inputs [N, ...]) -> logits [N, K]``, the base classifier.
    params: model parameters.
    inputs: ``[B, ...]`` points in ``bounds``.
    rng: PRNG key (the answer is a deterministic function of it).
    sigma: noise standard deviation σ (> 0).
    num_samples: votes per example (>= 1).
    alpha: the test's level, in (0, 1).
    batch_size: noisy forward passes per chunk (see :func:`sample_counts`).
    bounds: the input box, or None.
    mesh: device mesh with a ``'data'`` axis (default: every device).

  Returns:
    ``[B]`` int32 classes, -1 where the test abstains.
  """
  _check_alpha(alpha)
  counts = sample_counts(logits_fn, params, inputs, rng=rng, sigma=sigma,
                         num_samples=num_samples, batch_size=batch_size, bounds=bounds,
                         mesh=mesh)
  return _predict_from_counts(counts, alpha)


@jax.jit
def _predict_from_counts(counts: Array, alpha) -> Array:
  """PREDICT's decision from the votes ``[B, K]``."""
  top2, classes = jax.lax.top_k(counts, 2) if counts.shape[-1] > 1 else (
      jnp.concatenate([counts, jnp.zeros_like(counts)], -1),
      jnp.zeros(counts.shape, jnp.int32))
  pvalue = binomial_test_pvalue(top2[:, 0], top2[:, 1])
  return jnp.where(pvalue <= alpha, classes[:, 0].astype(jnp.int32), ABSTAIN)


def certify(logits_fn: LogitsFn, params: Params, inputs: Inputs, *, rng: PRNGKey,
            sigma: float, num_selection: int = 100, num_estimation: int = 100_000,
            alpha: float = 0.001, batch_size: int = 1000,
            bounds: Bounds | None = DEFAULT_BOUNDS,
            mesh: Mesh | None = None) -> SmoothingCertificate:
  """CERTIFY of Cohen et al.: a certified L2 radius of the smoothed classifier per example.

  ``num_selection`` votes pick ``ĉ_A`` (their top class); ``num_estimation`` fresh votes
  give ``n_A`` and ``p_A_lower``, the one-sided ``(1 − alpha)`` Clopper-Pearson bound.
  ``p_A_lower`` is lowered by :func:`tail_mass` of the input size (the Gaussian mass the
  sampler cannot draw), so it bounds ``p_A`` under exact Gaussian noise.
  If ``p_A_lower > 1/2`` the answer is ``(ĉ_A, σ Φ⁻¹(p_A_lower))``, else abstain
  ``(-1, 0)``. With probability at least ``1 − alpha`` (per example, over the noise) a
  non-abstaining answer is right: ``g(x + δ) = ĉ_A`` for every ``‖δ‖₂ < radius``.

  Args:
    logits_fn: ``(params, inputs [N, ...]) -> logits [N, K]``, the base classifier.
    params: model parameters.
    inputs: ``[B, ...]`` points in ``bounds``.
    rng: PRNG key (split into independent selection and estimation keys).
    sigma: noise standard deviation σ (> 0), the one the model was trained with.
    num_selection: ``n0``, selection votes per example (>= 1).
    num_estimation: ``n``, estimation votes per example (>= 1).
    alpha: failure probability in (0, 1).
    batch_size: at most this many noisy forward passes per chunk: the memory bound. A
      multiple of the number of devices shards each chunk over the mesh.
    bounds: the input box ``inputs`` must lie in (the noise is not clipped), or None.
    mesh: device mesh with a ``'data'`` axis (default: every device).

  Returns:
    :class:`SmoothingCertificate`.
  """
  _check_alpha(alpha)
  num_classes, batch_size, mesh = _prepare(
      logits_fn, params, inputs, rng=rng, sigma=sigma, batch_size=batch_size,
      bounds=bounds, mesh=mesh,
      counts={'num_selection': num_selection, 'num_estimation': num_estimation})
  selection_rng, estimation_rng = jax.random.split(rng)
  common = dict(logits_fn=logits_fn, batch_size=batch_size, num_classes=num_classes,
                mesh=mesh)
  selection = _votes(params, inputs, selection_rng, sigma, num_samples=num_selection,
                     **common)
  estimation = _votes(params, inputs, estimation_rng, sigma, num_samples=num_estimation,
                      **common)
  tail = tail_mass(int(np.prod(jnp.shape(inputs)[1:])))
  return _certify_from_counts(selection, estimation, sigma, num_estimation, alpha, tail)


@jax.jit
def _certify_from_counts(selection: Array, estimation: Array, sigma, num_estimation,
                         alpha, tail=0.0) -> SmoothingCertificate:
  """CERTIFY's decision from the votes (one compiled program for every n, alpha, σ).

  ``tail``: the sampler's :func:`tail_mass`, added to the bound on ``1 − p_A``.
  """
  selected = jnp.argmax(selection, axis=-1).astype(jnp.int32)
  count = jnp.take_along_axis(estimation, selected[:, None], axis=-1)[:, 0]
  n = jnp.full(count.shape, num_estimation, _float_dtype())
  q_upper = _upper_bound_failures(n - count, n, alpha)
  q_upper = jnp.minimum(q_upper + jnp.asarray(tail, q_upper.dtype), 1.0)
  certified = q_upper < 0.5  # p_A_lower > 1/2
  radius = jnp.asarray(sigma, q_upper.dtype) * -jax.scipy.special.ndtri(
      jnp.where(certified, q_upper, 0.5))
  return SmoothingCertificate(
      prediction=jnp.where(certified, selected, ABSTAIN),
      radius=jnp.where(certified, radius, 0.0),
      p_a_lower=1.0 - q_upper,
      count=count,
      counts=estimation,
      selected=selected,
      selection_counts=selection)
