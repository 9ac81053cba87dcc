"""Global curvature bounds of the classification margin of smooth MLPs.

From Singla & Feizi, "Second-Order Provable Defenses against Adversarial Attacks", ICML 2020.

An MLP here is a list of affine layers ``[(W_1, b_1), ..., (W_L, b_L)]`` with kernels
``W_l`` ``[d_{l-1}, d_l]`` (Flax ``Dense`` convention, ``z_l = a_{l-1} W_l + b_l``),
inputs flattened to ``[B, d_0]`` in pixel space, one smooth activation σ after every
hidden layer and linear logits ``z_L``. :func:`mlp_layers` turns a Flax MLP's params
``{'Dense_0': {'kernel', 'bias'}, ...}`` (optionally under ``'params'``) or a list of
pairs into that list; a model that standardises its inputs must fold ``1/std`` into the
first kernel (``W_1 / std[:, None]``) in its own adaptor.

For the margin ``f(x) = z_y − z_t`` (t the attacked class) the input Hessian is
(Singla & Feizi's closed-form Hessian)

    H(x) = Σ_{I<L} J_Iᵀ diag(∂f/∂a_I ⊙ σ''(z_I)) J_I,

``J_I`` the Jacobian of ``z_I`` w.r.t. x. With ``s' = sup|σ'|`` and
``σ'' ∈ [h_lo, h_hi]`` (constants below, ``ACTIVATION_CONSTANTS``):

* ``||J_I||₂ <= s'^{I−1} Π_{l<=I} ||W_l||₂`` (spectral norms, power iteration);
* the last hidden layer has ``∂f/∂a_{L−1} = c = W_L[:, y] − W_L[:, t]`` exactly, so its
  diagonal lies in ``[min(c h_lo, c h_hi), max(c h_lo, c h_hi)]`` (sign-aware: softplus
  has σ'' >= 0);
* earlier layers use the elementwise bound ``|∂f/∂a_I| <= s' |W_{I+1}| |∂f/∂a_{I+1}|``
  and ``|σ''| <= max(|h_lo|, |h_hi|)``.

Summing the per-layer eigenvalue bounds gives ``m I ⪯ H(x) ⪯ M I`` for every x, and the
margin's Lipschitz constant ``||c||₂ s'^{L−1} Π_{l<L} ||W_l||₂``. Everything is
differentiable w.r.t. the weights (CRT's ``K(θ)``). For a *certificate* use
``method='svd'`` (exact spectral norms): power iteration approaches the norm from below.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax.types import Array, Labels

SPECTRAL_METHODS = ('power', 'svd')


class ActivationConstants(NamedTuple):
  """Global derivative bounds of a smooth activation."""
  d1: float  # sup |σ'|
  d2_low: float  # inf σ''
  d2_high: float  # sup σ''


# sup|σ'| and the range of σ'' (rounded outwards): softplus'' = s(1−s) ∈ (0, 1/4];
# sigmoid'' ∈ ±1/(6√3) ≈ ±0.096225; tanh'' ∈ ±4/(3√3) ≈ ±0.769800.
ACTIVATION_CONSTANTS: dict[str, ActivationConstants] = {
    'softplus': ActivationConstants(1.0, 0.0, 0.25),
    'sigmoid': ActivationConstants(0.25, -0.09623, 0.09623),
    'tanh': ActivationConstants(1.0, -0.7699, 0.7699),
}

_ACTIVATION_FNS = {'softplus': jax.nn.softplus, 'sigmoid': jax.nn.sigmoid,
                   'tanh': jnp.tanh}

Layers = Sequence[tuple[Array, Array]]


class CurvatureBound(NamedTuple):
  """Per-example global bounds of the margin ``z_y − z_t``: ``lower I ⪯ H(x) ⪯ upper I``.

  ``certified`` is False when the bounds come from power iteration, which approaches
  spectral norms from below: such bounds may under-estimate the curvature, and a CRC
  radius built on them is not a certificate.
  """
  lower: Array  # [B] m <= 0
  upper: Array  # [B] M >= 0
  lipschitz: Array  # [B] bound on ||∇ₓ(z_y − z_t)||₂
  certified: bool = True  # rigorous bounds (exact spectral norms), usable by CRC


def _dense_index(name: str) -> int | None:
  match = re.fullmatch(r'Dense_(\d+)', name)
  return int(match.group(1)) if match else None


def mlp_layers(params: Any) -> list[tuple[Array, Array]]:
  """The affine layers ``[(W [d_in, d_out], b [d_out]), ...]`` of an MLP's params.

  Accepts a sequence of ``(W, b)`` pairs or of ``{'kernel', 'bias'}`` dicts, or a Flax
  params dict ``{'Dense_0': {'kernel', 'bias'}, 'Dense_1': ...}`` (optionally wrapped
  as ``{'params': ...}``), ordered by the Dense index.
  """
  if isinstance(params, dict):
    if set(params) == {'params'}:
      return mlp_layers(params['params'])
    dense = {k: v for k, v in params.items() if _dense_index(k) is not None}
    if not dense:
      raise ValueError('params must be a list of (W, b) pairs or a Flax MLP params dict '
                       f"with 'Dense_<i>' entries; got keys {sorted(params)}")
    ordered = sorted(dense, key=_dense_index)
    return [(params[k]['kernel'], params[k]['bias']) for k in ordered]
  layers = []
  for layer in params:
    if isinstance(layer, dict):
      layers.append((layer['kernel'], layer['bias']))
    else:
      w, b = layer
      layers.append((w, b))
  if not layers:
    raise ValueError('params must hold at least one (W, b) layer')
  return layers


def mlp_apply(layers: Layers, inputs: Array, *, activation: str) -> Array:
  """Logits ``[B, K]`` of the MLP ``layers`` on inputs ``[B, ...]`` (flattened)."""
  _checks.check_choice(activation, 'activation', tuple(ACTIVATION_CONSTANTS))
  act = _ACTIVATION_FNS[activation]
  x = jnp.reshape(inputs, (inputs.shape[0], -1))
  for i, (w, b) in enumerate(layers):
    x = x @ w + b
    if i < len(layers) - 1:
      x = act(x)
  return x


def _unit(v: Array) -> Array:
  n = jnp.sqrt(jnp.sum(v * v))
  return v / jnp.where(n > 0, n, 1.0)


def spectral_norm(w: Array, *, num_iters: int = 20, method: str = 'power') -> Array:
  """``||W||₂`` of a matrix ``[m, n]``, differentiable w.r.t. W.

  ``'power'``: ``num_iters`` power iterations on ``WᵀW`` from a fixed start; the value
  ``uᵀ W v`` at the (stop-gradient'd) singular vectors has the exact gradient ``u vᵀ``
  of the top singular value, and never exceeds the true norm. ``'svd'``: exact.
  """
  _checks.check_choice(method, 'method', SPECTRAL_METHODS)
  _checks.check_int(num_iters, 'num_iters', minimum=1)
  if w.ndim != 2:
    raise ValueError(f'spectral_norm expects a matrix [m, n], got shape {w.shape}')
  if method == 'svd':
    return jnp.linalg.norm(w, 2)
  frozen = jax.lax.stop_gradient(w)
  v0 = _unit(jax.random.normal(jax.random.PRNGKey(0), (w.shape[1],), w.dtype) + 1e-3)

  def step(v, _):
    return _unit(frozen.T @ (frozen @ v)), None

  v, _ = jax.lax.scan(step, v0, None, length=num_iters)
  u = _unit(frozen @ v)
  return u @ w @ v


def weighted_gram_top(w: Array, d: Array, *, num_iters: int = 20,
                      method: str = 'power') -> Array:
  """``λ_max(W diag(d_b) Wᵀ)`` per row of ``d`` ``[B, n]`` (``d >= 0``), ``W`` ``[m, n]``.

  ``'power'``: batched power iteration, value at the stop-gradient'd vector (a lower
  estimate, differentiable); ``'svd'``: exact (``eigvalsh``).
  """
  _checks.check_choice(method, 'method', SPECTRAL_METHODS)
  if method == 'svd':
    gram = jnp.einsum('mn,bn,kn->bmk', w, d, w)
    return jnp.linalg.eigvalsh(gram)[:, -1]
  frozen_w, frozen_d = jax.lax.stop_gradient(w), jax.lax.stop_gradient(d)
  apply = lambda ww, dd, v: ((v @ ww) * dd) @ ww.T  # [B, m]
  v0 = jax.random.normal(jax.random.PRNGKey(0), (w.shape[0],), w.dtype) + 1e-3
  v0 = jnp.broadcast_to(_unit(v0), (d.shape[0], w.shape[0]))
  unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-30)

  def step(v, _):
    return unit(apply(frozen_w, frozen_d, v)), None

  v, _ = jax.lax.scan(step, v0, None, length=num_iters)
  return jnp.sum(v * apply(w, d, v), axis=-1)


MODES = ('norm', 'gram')


def margin_curvature_bound(layers: Layers, labels: Labels, targets: Labels, *,
                           activation: str, num_iters: int = 20,
                           method: str = 'power', mode: str = 'norm') -> CurvatureBound:
  """Global bounds ``m I ⪯ ∇²ₓ(z_y − z_t) ⪯ M I`` per example, for a smooth MLP.

  Per hidden layer I the term ``J_Iᵀ D_I J_I`` has a diagonal ``D_I`` within
  ``[−d⁻, d⁺]`` elementwise (sign-aware for the last hidden layer). ``mode='norm'``
  bounds its eigenvalues by ``||J_I||² max d±`` (spectral norms only; cheap, the CRT
  training bound). ``mode='gram'`` uses ``s'² ||J_{I−1}||² λ_max(W_I diag(d±) W_Iᵀ)``,
  which for a one-hidden-layer net is exactly Singla & Feizi's ``||P||``, ``||N||``; it is
  never looser but costs a per-example eigenvalue problem (use for certificates).

  Args:
    layers: ``[(W [d_in, d_out], b [d_out]), ...]`` (see :func:`mlp_layers`).
    labels: ``[B]`` classes y.
    targets: ``[B]`` classes t (e.g. the runner-up).
    activation: ``'softplus'``, ``'sigmoid'`` or ``'tanh'`` (every hidden layer).
    num_iters: power iterations per spectral norm.
    method: ``'power'`` (cheap, differentiable; for training) or ``'svd'`` (exact;
      use for certificates).
    mode: ``'norm'`` or ``'gram'`` (above).

  Returns:
    :class:`CurvatureBound` with ``lower`` [B] (<= 0), ``upper`` [B] (>= 0),
    ``lipschitz`` [B] and ``certified`` (``method == 'svd'``); differentiable w.r.t. the
    weights.
  """
  _checks.check_choice(activation, 'activation', tuple(ACTIVATION_CONSTANTS))
  _checks.check_choice(mode, 'mode', MODES)
  consts = ACTIVATION_CONSTANTS[activation]
  ranges = [DerivativeRanges(*(jnp.asarray(v, jnp.float32) for v in consts))
            for _ in layers[:-1]]
  return _bound_from_ranges(layers, labels, targets, ranges, num_iters=num_iters,
                            method=method, mode=mode)


class CurvatureTable(NamedTuple):
  """Global curvature bounds of one MLP's margins, per class pair ``(y, t)``.

  A global bound depends on the pair only, not on the point, so a certificate over many
  points needs ``V (V − 1)`` eigenvalue problems instead of one per point and target.
  Called as ``table(labels [N], targets [N])`` it gives the :class:`CurvatureBound` of
  those pairs (the ``curvature`` argument of :func:`robustjax.certify.crc`).
  """
  lower: Array  # [V, V] m(y, t) <= 0; 0 on the diagonal
  upper: Array  # [V, V] M(y, t) >= 0
  lipschitz: Array  # [V, V]
  certified: bool = True

  def __call__(self, labels: Labels, targets: Labels) -> CurvatureBound:
    take = lambda table: table[labels, targets]
    return CurvatureBound(take(self.lower), take(self.upper), take(self.lipschitz),
                          self.certified)


def margin_curvature_table(layers: Layers, *, activation: str, num_iters: int = 20,
                           method: str = 'svd', mode: str = 'gram',
                           pairs_per_step: int = 16) -> CurvatureTable:
  """:func:`margin_curvature_bound` for every class pair of a V-class MLP, once.

  Args:
    layers, activation, num_iters, method, mode: as :func:`margin_curvature_bound`.
    pairs_per_step: pairs whose eigenvalue problems are solved together (memory:
      ``pairs_per_step`` Gram matrices of the hidden layers' input width).

  Returns:
    :class:`CurvatureTable` of ``[V, V]`` bounds.
  """
  pairs_per_step = _checks.check_int(pairs_per_step, 'pairs_per_step', minimum=1)
  num_classes = layers[-1][0].shape[1]
  grid = jnp.arange(num_classes * num_classes, dtype=jnp.int32)
  labels, targets = grid // num_classes, grid % num_classes

  def pair(yt):
    bound = margin_curvature_bound(layers, yt[0][None], yt[1][None], activation=activation,
                                   num_iters=num_iters, method=method, mode=mode)
    return bound.lower[0], bound.upper[0], bound.lipschitz[0]

  lower, upper, lipschitz = jax.lax.map(pair, (labels, targets), batch_size=pairs_per_step)
  shape = (num_classes, num_classes)
  return CurvatureTable(jnp.reshape(lower, shape), jnp.reshape(upper, shape),
                        jnp.reshape(lipschitz, shape), method == 'svd')


class DerivativeRanges(NamedTuple):
  """Bounds of an activation's derivatives, per neuron (or scalars): the ranges over
  its pre-activation interval (local) or over R (global constants)."""
  d1: Array  # [N, n] or [] sup |σ'|
  d2_low: Array  # [N, n] or [] inf σ''
  d2_high: Array  # [N, n] or [] sup σ''


# Interior extrema of σ'' (zeros of the third derivative) and of σ' (0 for sigmoid and
# tanh; softplus' = sigmoid is monotone, so 0 is a harmless extra candidate):
# sigmoid'' = s(1−s)(1−2s) peaks at ∓ln(2+√3); tanh'' = −2t(1−t²) at ∓atanh(1/√3);
# softplus'' = s(1−s) at 0.
_D2_CRITICAL = {'softplus': (0.0,), 'sigmoid': (-1.3169579, 1.3169579),
                'tanh': (-0.6584789, 0.6584789)}


def _derivatives(activation: str):
  fn = _ACTIVATION_FNS[activation]
  d1 = jax.grad(fn)
  d2 = jax.grad(d1)
  return jnp.vectorize(d1), jnp.vectorize(d2)


def local_derivative_ranges(activation: str, lower: Array, upper: Array
                            ) -> DerivativeRanges:
  """The ranges of σ' and σ'' over each pre-activation interval ``[lower, upper]``.

  A smooth function's extrema over an interval lie at its ends or at interior critical
  points; the candidates are the ends and every critical point clipped into the
  interval (a clipped point lies in the interval, so it never widens the range beyond
  values taken there). Rounded outwards by 1e-6.
  """
  _checks.check_choice(activation, 'activation', tuple(ACTIVATION_CONSTANTS))
  d1, d2 = _derivatives(activation)
  clip = lambda c: jnp.clip(c, lower, upper)
  d1_points = [lower, upper, clip(0.0)]
  d2_points = [lower, upper] + [clip(c) for c in _D2_CRITICAL[activation]]
  d1_sup = functools.reduce(jnp.maximum, [jnp.abs(d1(z)) for z in d1_points])
  d2_values = [d2(z) for z in d2_points]
  return DerivativeRanges(d1_sup + 1e-6, functools.reduce(jnp.minimum, d2_values) - 1e-6,
                          functools.reduce(jnp.maximum, d2_values) + 1e-6)


def local_margin_curvature_bound(layers: Layers, labels: Labels, targets: Labels, *,
                                 activation: str, intervals: Sequence[tuple[Array, Array]],
                                 mode: str = 'gram') -> CurvatureBound:
  """Curvature bounds of ``z_y − z_t`` valid on any set whose pre-activations lie in
  ``intervals`` (e.g. an L2 ball, by CROWN or IBP).

  :func:`margin_curvature_bound` with the derivative ranges of
  :func:`local_derivative_ranges` per neuron instead of the global constants, exact
  spectral norms and eigenvalues: valid for every x of that set, not beyond it.

  Args:
    layers: ``[(W, b), ...]``.
    labels, targets: ``[N]``.
    activation: the hidden activation.
    intervals: per hidden layer ``(l [N, n_I], u [N, n_I])``, aligned with ``labels``.
    mode: ``'gram'`` or ``'norm'``.
  """
  _checks.check_choice(mode, 'mode', MODES)
  if len(intervals) != len(layers) - 1:
    raise ValueError(f'intervals: one (lower, upper) pair per hidden layer '
                     f'({len(layers) - 1}), got {len(intervals)}')
  ranges = [local_derivative_ranges(activation, l, u) for l, u in intervals]
  return _bound_from_ranges(layers, labels, targets, ranges, num_iters=1, method='svd',
                            mode=mode)


def _layer_sup(v: Array, batch: int) -> Array:
  """``max`` over a layer's neurons per example ``[B]`` (scalars broadcast)."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return jnp.broadcast_to(v, (batch,))
  return jnp.broadcast_to(jnp.max(v, axis=-1), (batch,))


def _bound_from_ranges(layers, labels, targets, ranges, *, num_iters, method, mode):
  """Eigenvalue bounds of the margin Hessian from per-layer derivative ranges."""
  weights = [w for w, _ in layers]
  last = weights[-1]
  c = jnp.take(last, labels, axis=1).T - jnp.take(last, targets, axis=1).T  # [B, n_{L-1}]
  c_norm = jnp.sqrt(jnp.sum(c * c, axis=-1))
  hidden = weights[:-1]
  batch = c.shape[0]
  if not hidden:  # a linear model: zero curvature
    zeros = jnp.zeros(c.shape[:1], c.dtype)
    return CurvatureBound(zeros, zeros, c_norm, True)
  norms = [spectral_norm(w, num_iters=num_iters, method=method) for w in hidden]
  sup_d1 = [_layer_sup(r.d1, batch) for r in ranges]  # [B] sup |σ'| over each layer
  jac = []  # s_I, bound on ||J_I||
  running = None
  for i, n in enumerate(norms):
    running = n if i == 0 else running * sup_d1[i - 1] * n
    jac.append(running)
  # Diagonal bounds per hidden layer, last first: the last layer's c ⊙ σ'' has a known
  # sign pattern; earlier ones use |∂f/∂a_I| <= |W_{I+1}| (|σ'_{I+1}| ⊙ |∂f/∂a_{I+1}|).
  top = ranges[-1]
  d_plus = [jnp.maximum(jnp.maximum(c * top.d2_low, c * top.d2_high), 0.0)]
  d_minus = [jnp.maximum(-jnp.minimum(c * top.d2_low, c * top.d2_high), 0.0)]
  grad_bound = jnp.abs(c)  # [B, n_{L-1}]
  for i in range(len(hidden) - 2, -1, -1):
    grad_bound = (ranges[i + 1].d1 * grad_bound) @ jnp.abs(hidden[i + 1]).T  # [B, n_i]
    h_abs = jnp.maximum(jnp.abs(ranges[i].d2_low), jnp.abs(ranges[i].d2_high))
    d_plus.insert(0, h_abs * grad_bound)
    d_minus.insert(0, h_abs * grad_bound)
  upper = jnp.zeros(c.shape[:1], c.dtype)
  lower = jnp.zeros(c.shape[:1], c.dtype)
  for i, w in enumerate(hidden):
    if mode == 'norm':
      upper = upper + jac[i] ** 2 * jnp.max(d_plus[i], axis=-1)
      lower = lower - jac[i] ** 2 * jnp.max(d_minus[i], axis=-1)
    else:
      prefix = 1.0 if i == 0 else (sup_d1[i - 1] * jac[i - 1]) ** 2
      gram = functools.partial(weighted_gram_top, w, num_iters=num_iters, method=method)
      upper = upper + prefix * gram(d_plus[i])
      lower = lower - prefix * gram(d_minus[i])
  lipschitz = c_norm * sup_d1[-1] * jac[-1]
  return CurvatureBound(lower, upper, lipschitz, method == 'svd')
