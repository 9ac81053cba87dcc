"""The Curvature-based Robustness Certificate (CRC).

From Singla & Feizi, "Second-Order Provable Defenses against Adversarial Attacks", ICML 2020.

For a correctly classified x0 and a class t, the margin ``f(x) = z_y(x) − z_t(x)`` is
positive at x0 and the squared distance to the nearest point with ``f = 0`` is
``p* = min_{f(x)=0} ½||x − x0||²``. Weak duality gives, for every η,

    p* >= d(η) = min_x ½||x − x0||² + η f(x),

and if ``m I ⪯ ∇²f ⪯ M I`` everywhere the inner problem is convex for
``−1/M <= η <= −1/m`` (Singla & Feizi, the curvature-based certificate). For ``f(x0) > 0`` the
useful range is ``0 <= η < −1/m``, where ``g_η = ½||x − x0||² + η f`` is
``μ = 1 + η m`` strongly convex. Per η, ``min g_η`` is approached by Newton steps whose
systems ``(I + η H) s = ∇g`` are solved by conjugate gradients on Hessian-vector
products; η is bisected on the sign of ``f(x*(η)) = d'(η)`` (d is concave).

Soundness does not rest on the inner solver's accuracy: each evaluated η contributes
the rigorous lower bound ``g_η(x̂) − ||∇g_η(x̂)||²/(2μ) <= d(η) <= p*`` (strong convexity),
and the certificate is the best of them: ``radius = sqrt(2 max_η d_low(η))``. When
``f(x*) = 0`` at the optimum, primal = dual and the radius is the exact distance to the
decision boundary (``exact`` flag). The certificate is over all of R^n (no input box),
which is sound for any box. Misclassified points get radius 0.

Two modes are kept for research but are NOT certificates, and say so: ``targets=
'runner_up'`` bounds the distance to the runner-up class's boundary only (another class's
boundary can be nearer: on a 2-D MLP a brute-force search found radii above the true
distance to misclassification), and curvature bounds from power iteration
(``CurvatureBound.certified`` False) can under-estimate the curvature. Their results
carry ``certified = False`` and a :class:`NotCertifiedWarning` is raised;
:func:`certified_accuracy` counts them as not certified.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax.certify import bounds as bounds_lib
from robustjax.types import Array, Inputs, Labels, LogitsFn, Params

TARGETS = ('all', 'runner_up')


class NotCertifiedWarning(UserWarning):
  """A CRC mode that is not a certificate was used (runner-up only, power-iteration bounds)."""


class CRCResult(NamedTuple):
  """A certificate per example (where ``certified``)."""
  radius: Array  # [B] L2 radius (0 if misclassified); a certificate only where certified
  target: Array  # [B] int32, the class attaining the smallest radius
  exact: Array  # [B] bool, f(x*) ≈ 0 at that class: the radius is the exact distance
  x_star: Array  # [B, ...] the dual minimiser for that class (a boundary point if exact)
  certified: Array  # [B] bool, False for runner-up-only or power-iteration-bound results


def certified_accuracy(result: CRCResult, eps: Any) -> Array:
  """Certified accuracy at L2 radius ``eps``: the fraction with ``radius > eps``.

  Only certificates count: examples of a result that is not one (``certified`` False,
  e.g. ``targets='runner_up'`` or power-iteration bounds) count as not certified.

  Args:
    result: a :class:`CRCResult` ``[B]``.
    eps: scalar radius or ``[R]`` radii.

  Returns:
    ``[]`` or ``[R]`` fractions.
  """
  radii = jnp.asarray(eps, jnp.float32)
  counted = jnp.asarray(result.certified, bool)[:, None] & (
      result.radius[:, None] > jnp.reshape(radii, (1, -1)))
  return jnp.reshape(jnp.mean(counted, axis=0), radii.shape)


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def _dot(a: Array, b: Array) -> Array:
  return jnp.sum(jnp.reshape(a * b, (a.shape[0], -1)), axis=-1)


def _batched_cg(matvec: Callable[[Array], Array], rhs: Array, num_steps: int) -> Array:
  """Solves ``A s = rhs`` per example by ``num_steps`` conjugate-gradient steps."""
  s = jnp.zeros_like(rhs)
  r = rhs
  p = r
  rr = _dot(r, r)

  def step(carry, _):
    s, r, p, rr = carry
    ap = matvec(p)
    pap = _dot(p, ap)
    ok = (pap > 0) & (rr > 0)
    alpha = jnp.where(ok, rr / jnp.where(ok, pap, 1.0), 0.0)
    s = s + _per_example(alpha, p) * p
    r = r - _per_example(alpha, p) * ap
    rr_new = _dot(r, r)
    beta = jnp.where(ok, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
    p = r + _per_example(beta, p) * p
    return (s, r, p, rr_new), None

  (s, _, _, _), _ = jax.lax.scan(step, (s, r, p, rr), None, length=num_steps)
  return s


def _resolve_curvature(curvature: Any, labels: Array, targets: Array):
  """``(lower [N], upper [N], certified bool)`` from a scalar K, a pair (m, M) or a callable.

  User-given numbers are trusted; a :class:`CurvatureBound` says itself whether it is
  rigorous (power-iteration bounds are not).
  """
  certified = True
  if callable(curvature):
    bound = curvature(labels, targets)
    lower, upper = (bound.lower, bound.upper) if hasattr(bound, 'lower') else bound[:2]
    flag = getattr(bound, 'certified', True)
    try:
      certified = bool(flag)
    except jax.errors.ConcretizationTypeError:  # a traced flag: cannot vouch for it
      certified = False
  elif isinstance(curvature, (tuple, list)):
    lower, upper = curvature
  else:
    _checks.check_nonnegative(curvature, 'curvature')
    lower, upper = -jnp.asarray(curvature), jnp.asarray(curvature)
  shape = labels.shape
  lower, upper = jnp.asarray(lower, jnp.float32), jnp.asarray(upper, jnp.float32)
  if lower.ndim == 1 and lower.shape[0] != shape[0] and shape[0] % lower.shape[0] == 0:
    reps = shape[0] // lower.shape[0]  # per-example [B] bounds, shared by every target
    lower, upper = jnp.tile(lower, reps), jnp.tile(upper, reps)
  try:
    return jnp.broadcast_to(lower, shape), jnp.broadcast_to(upper, shape), certified
  except ValueError:
    raise ValueError(f'curvature bounds must be scalars or [B] arrays, got shapes '
                     f'{lower.shape} and {upper.shape}') from None


def pair_certificate(margin_fn: Callable[[Array], Array], inputs: Array, lower: Array, *,
                     bisection_steps: int, newton_steps: int, cg_steps: int,
                     tol: float, ball_radius: Array | None = None
                     ) -> tuple[Array, Array, Array]:
  """Certified radius for ``margin_fn(x) [N] > 0`` against ``margin_fn = 0``.

  Args:
    margin_fn: per-example margin ``[N, ...] -> [N]``.
    inputs: ``[N, ...]`` points x0.
    lower: ``[N]`` global lower bound m of the margin's Hessian eigenvalues.
    bisection_steps: bisection steps on η.
    newton_steps: Newton steps per η (warm-started).
    cg_steps: conjugate-gradient steps per Newton system.
    tol: ``|f(x*)| <= tol (1 + |f(x0)|)`` marks the certificate exact.
    ball_radius: ``[N]`` ρ when ``lower`` is valid only on the ball ``B(x0, ρ)`` (local
      curvature): a dual value counts only if its point x̂ lies in the ball (then strong
      convexity of ``g_η`` on the convex ball gives ``min_B g_η >= g_η(x̂) −
      ||∇g_η(x̂)||²/(2μ)``), and the radius is ``min(ρ, sqrt(2 d_low))``: every boundary
      point in the ball is at least ``sqrt(2 d_low)`` away, every other one beyond ρ.

  Returns:
    ``(radius [N], exact [N] bool, x_star [N, ...])``; radius 0 where ``f(x0) <= 0``.
  """
  x0 = inputs
  grad_fn = jax.grad(lambda x: jnp.sum(margin_fn(x)))
  hvp_fn = lambda x, v: jax.jvp(grad_fn, (x,), (v,))[1]
  f0 = margin_fn(x0)
  g0 = grad_fn(x0)
  m = jnp.minimum(lower, 0.0)
  shrink = 1.0 - 1e-3
  eta_max = jnp.where(m < 0, shrink / jnp.where(m < 0, -m, 1.0), jnp.inf)
  g0_sq = _dot(g0, g0)
  # Bracket for flat curvature: the first-order optimum is f0/||g0||²; go 100x beyond.
  cap = 100.0 * jnp.maximum(f0, 0.0) / jnp.where(g0_sq > 0, g0_sq, 1.0)
  cap = jnp.where(g0_sq > 0, cap, 1e6)
  eta_hi0 = jnp.minimum(eta_max, jnp.maximum(cap, 1e-12))

  def objective_parts(eta, x):
    f = margin_fn(x)
    grad_g = (x - x0) + _per_example(eta, x) * grad_fn(x)
    value = 0.5 * _dot(x - x0, x - x0) + eta * f
    return f, grad_g, value

  def newton(eta, x):
    def step(x, _):
      _, grad_g, _ = objective_parts(eta, x)
      matvec = lambda v: v + _per_example(eta, v) * hvp_fn(x, v)
      return x - _batched_cg(matvec, grad_g, cg_steps), None

    x, _ = jax.lax.scan(step, x, None, length=newton_steps)
    return x

  def bisect(carry, _):
    lo, hi, x, best, best_x, best_f = carry
    eta = 0.5 * (lo + hi)
    x = newton(eta, x)
    f, grad_g, value = objective_parts(eta, x)
    mu = 1.0 + eta * m
    d_low = value - _dot(grad_g, grad_g) / (2.0 * mu)
    d_low = jnp.where(jnp.isfinite(d_low), d_low, -jnp.inf)
    if ball_radius is not None:  # the bound holds only for points in the ball
      d_low = jnp.where(jnp.sqrt(_dot(x - x0, x - x0)) <= ball_radius, d_low, -jnp.inf)
    improved = d_low > best
    best = jnp.where(improved, d_low, best)
    best_x = jnp.where(_per_example(improved, x), x, best_x)
    best_f = jnp.where(improved, f, best_f)
    positive = f > 0
    return (jnp.where(positive, eta, lo), jnp.where(positive, hi, eta), x, best, best_x,
            best_f), None

  init = (jnp.zeros_like(f0), eta_hi0, x0, jnp.zeros_like(f0), x0, f0)
  (_, _, _, best, best_x, best_f), _ = jax.lax.scan(bisect, init, None,
                                                     length=bisection_steps)
  correct = f0 > 0
  radius = jnp.sqrt(2.0 * jnp.maximum(best, 0.0))
  if ball_radius is not None:
    radius = jnp.minimum(radius, ball_radius)
  radius = jnp.where(correct, radius, 0.0)
  exact = correct & (jnp.abs(best_f) <= tol * (1.0 + jnp.abs(f0)))
  return radius, exact, best_x


def crc(logits_fn: LogitsFn, params: Params, inputs: Inputs, labels: Labels, *,
        curvature: Any, targets: str = 'all', bisection_steps: int = 30,
        newton_steps: int = 4, cg_steps: int = 10, tol: float = 1e-3,
        ball_radius: Any = None) -> CRCResult:
  """Curvature-based robustness certificate: a certified L2 radius per example.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, V]``, twice differentiable.
    params: model parameters.
    inputs: ``[B, ...]`` points.
    labels: ``[B]`` classes to certify.
    curvature: global curvature bound of every margin ``z_y − z_t``: a scalar K
      (``−K I ⪯ ∇² ⪯ K I``), a pair ``(m, M)`` of scalars or ``[B]`` arrays (per
      example, valid for every target class t), or a callable
      ``(labels [N], targets [N]) -> (m [N], M [N])`` or a
      :class:`~robustjax.certify.bounds.CurvatureBound`, e.g.
      ``functools.partial(margin_curvature_bound, layers, activation='tanh',
      method='svd')``. The certificate is sound only if the bound is; a
      :class:`CurvatureBound` with ``certified`` False (power iteration) makes the
      result ``certified`` False, with a :class:`NotCertifiedWarning`.
    targets: ``'all'`` (the radius is the minimum over every class t ≠ y: a certificate
      against any misclassification) or ``'runner_up'`` (only against the runner-up
      class at x, as Singla & Feizi's evaluation; NOT a certificate against
      misclassification: ``certified`` False and a :class:`NotCertifiedWarning`).
    bisection_steps: bisection steps on η (>= 1).
    newton_steps: Newton steps per η (>= 1).
    cg_steps: CG steps per Newton system (>= 1).
    tol: tolerance on ``|f(x*)|`` for the ``exact`` flag.
    ball_radius: None (``curvature`` holds on all of R^n), or a scalar / ``[B]`` ρ when
      it holds only on the ball ``B(x0, ρ)``: radii are then at most ρ (see
      :func:`pair_certificate`).

  Returns:
    :class:`CRCResult`; ``certified`` [B] is False for every example when either mode
    above is not a certificate.
  """
  _checks.check_float_inputs(inputs)
  _checks.check_choice(targets, 'targets', TARGETS)
  bisection_steps = _checks.check_int(bisection_steps, 'bisection_steps', minimum=1)
  newton_steps = _checks.check_int(newton_steps, 'newton_steps', minimum=1)
  cg_steps = _checks.check_int(cg_steps, 'cg_steps', minimum=1)
  _checks.check_positive(tol, 'tol')
  batch = inputs.shape[0]
  logits = logits_fn(params, inputs)
  num_classes = logits.shape[-1]
  _checks.check_labels(labels, batch, num_classes)
  if targets == 'all':  # every t != y: copy k targets (y + 1 + k) mod V
    copies = max(num_classes - 1, 1)
    shift = jnp.repeat(jnp.arange(1, copies + 1, dtype=jnp.int32), batch)  # [(V-1)*B]
    tgt = (jnp.tile(labels.astype(jnp.int32), copies) + shift) % num_classes
  else:
    copies = 1
    masked = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, logits)
    tgt = jnp.argmax(masked, axis=-1).astype(jnp.int32)
  x_all = jnp.tile(inputs, (copies,) + (1,) * (inputs.ndim - 1))
  y_all = jnp.tile(labels.astype(jnp.int32), copies)
  lower, _, sound_bounds = _resolve_curvature(curvature, y_all, tgt)
  reasons = []
  if targets == 'runner_up':
    reasons.append("targets='runner_up' bounds the runner-up class's boundary only")
  if not sound_bounds:
    reasons.append('the curvature bounds come from power iteration (use method=\'svd\')')
  if reasons:
    warnings.warn('crc: this result is not a certificate: ' + '; '.join(reasons) +
                  '. Its radii are flagged certified=False and must not be reported as '
                  'certified accuracy.', NotCertifiedWarning, stacklevel=2)

  if ball_radius is not None:
    _checks.check_nonnegative(ball_radius, 'ball_radius')
    ball_radius = jnp.tile(jnp.broadcast_to(jnp.asarray(ball_radius, jnp.float32),
                                            (batch,)), copies)

  def certify(params, x_all, y_all, tgt, lower, ball_radius):
    def margin_fn(x):
      z = logits_fn(params, x)
      take = lambda idx: jnp.take_along_axis(z, idx[:, None], axis=-1)[:, 0]
      return take(y_all) - take(tgt)

    return pair_certificate(margin_fn, x_all, lower, bisection_steps=bisection_steps,
                            newton_steps=newton_steps, cg_steps=cg_steps, tol=tol,
                            ball_radius=ball_radius)

  # One compiled program per call (also when called eagerly); inlined under an outer jit.
  radius, exact, x_star = jax.jit(certify)(params, x_all, y_all, tgt, lower, ball_radius)
  radius = jnp.where(tgt == y_all, jnp.inf, radius)
  radius = jnp.reshape(radius, (copies, batch))
  best = jnp.argmin(radius, axis=0)
  pick = lambda a: jnp.reshape(a, (copies, batch) + a.shape[1:])[best, jnp.arange(batch)]
  correct = jnp.argmax(logits, axis=-1) == labels
  final = jnp.where(correct, jnp.min(radius, axis=0), 0.0)
  target = jnp.reshape(tgt, (copies, batch))[best, jnp.arange(batch)]
  return CRCResult(radius=final, target=target, exact=pick(exact) & correct,
                   x_star=pick(x_star),
                   certified=jnp.full((batch,), not reasons, dtype=bool))


def crc_mlp(params: Any, inputs: Inputs, labels: Labels, *, activation: str,
            layers_fn=bounds_lib.mlp_layers, mode: str = 'gram',
            curvature_table: bounds_lib.CurvatureTable | None = None,
            **kwargs) -> CRCResult:
  """CRC for a smooth MLP given by its layers, with exact (eigen/SVD) curvature bounds.

  Args:
    params: MLP params (see :func:`robustjax.certify.bounds.mlp_layers`).
    inputs: ``[B, ...]`` points in pixel space.
    labels: ``[B]``.
    activation: ``'softplus'``, ``'sigmoid'`` or ``'tanh'``.
    layers_fn: ``params -> [(W, b), ...]``.
    mode: curvature bound mode, ``'gram'`` (tighter, default) or ``'norm'`` (see
      :func:`robustjax.certify.bounds.margin_curvature_bound`).
    curvature_table: the model's
      :func:`~robustjax.certify.bounds.margin_curvature_table` (exact, ``mode``), when
      one model is certified in several calls; computed here when None.
    **kwargs: forwarded to :func:`crc` (``targets``, step counts, ``tol``).

  Returns:
    :class:`CRCResult`.
  """
  layers = layers_fn(params)
  logits_fn = lambda p, x: bounds_lib.mlp_apply(p, x, activation=activation)
  if curvature_table is None:
    curvature_table = bounds_lib.margin_curvature_table(layers, activation=activation,
                                                        method='svd', mode=mode)
  return crc(logits_fn, layers, inputs, labels, curvature=curvature_table, **kwargs)


def _mlp_network(layers, activation):
  from robustjax.certify import bound_propagation as bp  # pylint: disable=g-import-not-at-top
  net = [bp.flatten()]
  for i, (w, b) in enumerate(layers):
    net.append(bp.dense(w, b))
    if i < len(layers) - 1:
      net.append(bp.activation(activation))
  return tuple(net)


def crc_mlp_local(params: Any, inputs: Inputs, labels: Labels, *, activation: str,
                  layers_fn=bounds_lib.mlp_layers, mode: str = 'gram',
                  radius_steps: int = 6, max_radius: Any = None,
                  interval_method: str = 'crown', **kwargs) -> CRCResult:
  """CRC with local curvature bounds: σ'' ranges over the pre-activation intervals of
  the L2 ball (Singla & Feizi's "local, not global curvature bounds").

  Soundness. For a radius ρ, CROWN (or IBP, ``interval_method``) bounds every
  pre-activation over ``B(x0, ρ)`` (no input box: CRC works over R^n); the σ' and σ''
  ranges over those intervals (:func:`robustjax.certify.bounds.local_derivative_ranges`)
  give ``m_ρ I ⪯ ∇²f(x) ⪯ M_ρ I`` for every x in ``B(x0, ρ)`` only. The dual
  certificate is then claimed only inside that ball (:func:`pair_certificate` with
  ``ball_radius=ρ``): ``r(ρ) = min(ρ, sqrt(2 d_low))`` with ``d_low`` from points x̂ in
  the ball, a certified radius because no boundary point lies within ``r(ρ)``. The ball
  changes with ρ, so ρ is searched by bisection per example over ``[r_global,
  max_radius]`` (``r(ρ) >= ρ`` moves up, else down) and the result is the largest
  ``r(ρ)`` over all tried ρ and the global certificate: a maximum of certified radii,
  so never below the global CRC and sound whatever the path of the search.

  Args:
    params, inputs, labels, activation, layers_fn, mode: as :func:`crc_mlp`.
    radius_steps: bisection steps on ρ (each one CRC solve).
    max_radius: upper end of the search (default ``2 r_global + 0.1``), scalar or [B].
    interval_method: ``'crown'`` or ``'ibp'`` for the pre-activation intervals.
    **kwargs: forwarded to :func:`crc` (``targets``, step counts, ``tol``).

  Returns:
    :class:`CRCResult` (``x_star``, ``exact``, ``target`` of the best tried ρ).
  """
  from robustjax.certify import bound_propagation as bp  # pylint: disable=g-import-not-at-top
  radius_steps = _checks.check_int(radius_steps, 'radius_steps', minimum=1)
  _checks.check_choice(interval_method, 'interval_method', ('crown', 'ibp'))
  layers = layers_fn(params)
  glob = crc_mlp(params, inputs, labels, activation=activation, layers_fn=layers_fn,
                 mode=mode, **kwargs)
  network = _mlp_network(layers, activation)
  batch = inputs.shape[0]
  lo = glob.radius
  hi = (2.0 * lo + 0.1 if max_radius is None else
        jnp.broadcast_to(jnp.asarray(max_radius, jnp.float32), (batch,)))
  best = glob
  flat = jnp.reshape(inputs, (batch, -1))
  for _ in range(radius_steps):
    rho = 0.5 * (lo + hi)
    intervals = bp.certify(network, flat, labels, rho, p=2.0, method=interval_method,
                           bounds=None).intervals

    def curvature(lab, tgt, intervals=intervals):
      copies = lab.shape[0] // batch
      tiled = [(jnp.tile(l, (copies, 1)), jnp.tile(u, (copies, 1))) for l, u in intervals]
      return bounds_lib.local_margin_curvature_bound(layers, lab, tgt,
                                                     activation=activation,
                                                     intervals=tiled, mode=mode)

    logits_fn = lambda p, x: bounds_lib.mlp_apply(p, x, activation=activation)
    res = crc(logits_fn, layers, inputs, labels, curvature=curvature, ball_radius=rho,
              **kwargs)
    reached = res.radius >= rho * (1.0 - 1e-6)
    lo, hi = jnp.where(reached, rho, lo), jnp.where(reached, hi, rho)
    better = res.radius > best.radius
    pick = lambda a, b: jnp.where(jnp.reshape(better, (-1,) + (1,) * (a.ndim - 1)), a, b)
    best = CRCResult(*(pick(a, b) for a, b in zip(res, best)))
  return best


def _conv_parts(network):
  """``(linear layers before the activation, activation name, last dense layer)``."""
  kinds = [layer.kind for layer in network]
  if (kinds.count('act') != 1 or kinds[-1] != 'dense' or
      any(k not in ('conv', 'affine', 'flatten', 'dense', 'act') for k in kinds)):
    raise ValueError(f'conv CRC needs linear layers, one smooth activation, flatten and '
                     f'the dense logits layer; got {kinds}')
  pos = kinds.index('act')
  act = network[pos].activation
  if act not in bounds_lib.ACTIVATION_CONSTANTS:
    raise ValueError(f'conv CRC needs a smooth activation (softplus, sigmoid, tanh), '
                     f'got {act!r}')
  if any(k != 'flatten' for k in kinds[pos + 1:-1]):
    raise ValueError(f'conv CRC: only flatten may sit between the activation and the '
                     f'logits layer; got {kinds}')
  return network[:pos], act, network[-1]


def conv_margin_curvature_bound(network, labels: Labels, targets: Labels,
                                input_shape: tuple, *, mode: str = 'gram',
                                intervals: Any = None,
                                chunk_size: int = 16) -> CurvatureBound:
  """Closed-form Hessian bounds of ``z_y − z_t`` for one convolutional hidden layer.

  For ``f(x) = cᵀ σ(A x + b)`` with A the (linear) convolution as a matrix ``[n_h, n]``
  and ``c = W_2[:, y] − W_2[:, t]`` (flattened NHWC order), the input Hessian is
  ``H(x) = Aᵀ diag(c ⊙ σ''(Ax + b)) A`` (Singla & Feizi's closed form; the conv is
  linear), so ``N ⪯ H(x) ⪯ P`` with ``P = Aᵀ diag(max(c h_lo, c h_hi)) A`` and ``N``
  with the min, ``h`` the σ'' range (global constants, or per neuron over
  ``intervals`` ``(l, u)`` ``[N, n_h]`` for a local bound). ``mode='gram'``: ``M =
  λ_max(Aᵀ diag(d⁺) A)``, ``m = −λ_max(Aᵀ diag(d⁻) A)`` exactly (eigenvalues of ``[n, n]``
  matrices, ``chunk_size`` pairs at a time); ``'norm'``: ``||A||₂² max d±``.

  Args:
    network: layer list ``(linear layers (conv, affine), act, flatten, dense)``.
    labels, targets: ``[N]``.
    input_shape: one input's shape ``(H, W, C)``.
    mode: ``'gram'`` or ``'norm'``.
    intervals: None (global) or ``(l [N, n_h], u [N, n_h])`` pre-activation bounds.
    chunk_size: pairs per eigenvalue batch.

  Returns:
    :class:`CurvatureBound` (exact eigenvalues: ``certified`` True).
  """
  from robustjax.certify import bound_propagation as bp  # pylint: disable=g-import-not-at-top
  _checks.check_choice(mode, 'mode', bounds_lib.MODES)
  linear_layers, act, last = _conv_parts(network)
  n_in = math.prod(input_shape)
  basis = jnp.reshape(jnp.eye(n_in, dtype=jnp.float32), (n_in,) + tuple(input_shape))

  def linear(x):
    for layer in linear_layers:
      x = bp._linear(layer, x)  # pylint: disable=protected-access
    return jnp.reshape(x, (x.shape[0], -1))

  a_t = linear(basis)  # [n_in, n_h] = Aᵀ
  w2 = last.arrays[0]
  c = jnp.take(w2, labels, axis=1).T - jnp.take(w2, targets, axis=1).T  # [N, n_h]
  if intervals is None:
    consts = bounds_lib.ACTIVATION_CONSTANTS[act]
    d1, lo, hi = consts.d1, consts.d2_low, consts.d2_high
    d1_sup = jnp.full(c.shape[:1], d1)
  else:
    ranges = bounds_lib.local_derivative_ranges(act, *intervals)
    d1, lo, hi = ranges
    d1_sup = jnp.max(d1, axis=-1)
  d_plus = jnp.maximum(jnp.maximum(c * lo, c * hi), 0.0)
  d_minus = jnp.maximum(-jnp.minimum(c * lo, c * hi), 0.0)
  a_norm = jnp.linalg.norm(a_t, 2)
  if mode == 'norm':
    upper = a_norm ** 2 * jnp.max(d_plus, -1)
    lower = -a_norm ** 2 * jnp.max(d_minus, -1)
  else:
    def top(d):
      return jax.lax.map(lambda di: jnp.linalg.eigvalsh((a_t * di) @ a_t.T)[-1], d,
                         batch_size=chunk_size)
    upper, lower = top(d_plus), -top(d_minus)
  lipschitz = jnp.sqrt(jnp.sum(c * c, -1)) * d1_sup * a_norm
  return bounds_lib.CurvatureBound(lower, upper, lipschitz, True)


def crc_conv(network, inputs: Inputs, labels: Labels, *, mode: str = 'gram',
             **kwargs) -> CRCResult:
  """CRC for a network with one convolutional hidden layer and a smooth activation
  (Singla & Feizi's extension to CNNs, tanh there), with the closed-form bounds of
  :func:`conv_margin_curvature_bound`.

  Args:
    network: layer list ``(conv [, affine ...], act, flatten, dense)``
      (:mod:`robustjax.certify.bound_propagation`).
    inputs: ``[B, H, W, C]``.
    labels: ``[B]``.
    mode: ``'gram'`` (exact eigenvalues) or ``'norm'``.
    **kwargs: forwarded to :func:`crc`.
  """
  from robustjax.certify import bound_propagation as bp  # pylint: disable=g-import-not-at-top
  network = bp.check_network(network)
  _conv_parts(network)
  _checks.check_float_inputs(inputs)
  shape = tuple(inputs.shape[1:])
  curvature = lambda lab, tgt: conv_margin_curvature_bound(network, lab, tgt, shape,
                                                           mode=mode)
  return crc(lambda p, x: bp.apply(p, x), network, inputs, labels, curvature=curvature,
             **kwargs)
