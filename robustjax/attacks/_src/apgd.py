"""Auto-PGD (APGD): step-size-free PGD with momentum (Croce & Hein, ICML 2020).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (2020), Algorithm 1, with the details of the authors'
reference implementation:

- start on the ε-sphere (a random direction scaled to norm ε), clipped to the box;
- initial step ``η = 2ε`` per example; momentum ``α = 0.75`` (1 on the first step):
  ``z = P(x + η·s(∇)),  x' = P(x + α(z − x) + (1 − α)(x − x_prev))`` with ``s`` the
  sign for L∞ and the L2-normalised gradient for L2, ``P`` the projection onto
  ``ball ∩ box``;
- checkpoints after ``max(int(0.22 N), 1)`` iterations, then ever shorter windows, as
  the reference code counts them (:func:`checkpoints`; the paper's ``⌈p_j N⌉`` agree at
  N = 100 only); at a checkpoint the step of an example is halved when its loss rose in
  at most ``ρ = 0.75`` of the steps since the previous checkpoint, or when the previous
  checkpoint did not halve it and its best loss did not improve since then (never at
  the first checkpoint); a halved example restarts from its best point (and the
  gradient there). As in the reference code, the first window's first "rise" compares
  ``f(x^(1))`` with 0 (its loss history starts as zeros), not with ``f(x^(0))``;
- the last iterate that misclassifies is kept per example; examples never fooled return
  the point of highest loss.

L1 follows Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers" (ICML 2021), again with the reference implementation's settings:

- start from ``x + N(0, I)`` projected onto ``ball ∩ box``, step ``η = ε``, no momentum;
- the step moves only the coordinates whose gradient magnitude is in the top fraction
  ``k`` (initially 20%): ``x' = P(x + η·sign(∇)·1[top k] / |top k|)``, with ``P`` the
  exact projection onto the intersection of the L1 ball and the box
  (:func:`robustjax.geometry.project_ball_and_box`);
- every ``max(⌊0.04 N⌋, 1)`` iterations, with ``s`` the number of nonzero coordinates
  of the best point's perturbation: ``k = s / (1.5 d)``; if ``s`` dropped below 95% of
  its value at the previous check, the step resets to ``ε`` and the example restarts
  from its best point, otherwise the step shrinks by 1.5, within ``[ε/10, ε]``;
- with ``decreasing_eps`` (AutoAttack's L1 setting) a run is three runs at radii ``3ε, 2ε, ε`` of
  ``⌈0.3 N⌉, ⌈0.3 N⌉`` and the remaining iterations, each starting from the previous
  one's best point projected onto the smaller ball (the ``use_largereps`` schedule
  AutoAttack's L1 version uses); only the last, at ``ε``, counts.

Losses: cross-entropy, DLR (:func:`dlr_loss`, K >= 3) and targeted DLR
(:func:`targeted_dlr_loss`, K >= 4) against the classes ranked 2nd, 3rd, ... by the
clean logits. The per-example state (step size, best point, oscillation counter) lives
in the loop carry; nothing returns to the host inside a run.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax import geometry
from robustjax import losses as losses_lib
from robustjax.attacks._src import common as _common
from robustjax.attacks._src import loop
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey

LOSSES = ('ce', 'dlr')
NORMS = (1.0, 2.0, math.inf)
MOMENTUM = 0.75  # α of Alg. 1
RHO = 0.75  # ρ: fraction of increasing steps below which the step is halved
_DLR_TINY = 1e-12
# L1 (Croce & Hein 2021): initial share of coordinates moved, check period as a fraction
# of N, step shrink factor and floor, the sparsity drop that resets the step, and the
# decreasing-radius schedule (radius factor, share of N).
L1_TOPK = 0.2
L1_CHECK_FRACTION = 0.04
L1_STEP_DECAY = 1.5
L1_MIN_STEP = 0.1
L1_SPARSITY_DROP = 0.95
L1_RADII = ((3.0, 0.3), (2.0, 0.3), (1.0, None))


def checkpoints(steps: int, p: float = math.inf) -> tuple[int, ...]:
  """The iterations (1-based) after which APGD checks its step size, as the reference code.

  L∞ / L2: the paper (Croce & Hein 2020, §3.1) places checkpoints at ``⌈p_j N⌉`` with
  ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``; the authors' code
  (``autopgd_base.py``), which AutoAttack runs, counts instead: the first check after
  ``k = max(int(0.22 N), 1)`` iterations, then after each check
  ``k ← max(k − max(int(0.03 N), 1), max(int(0.06 N), 1))`` more, with Python's float
  truncation. Both give ``(22, 41, 57, 70, 80, 87, 93, 99)`` at N = 100; at N = 30 the
  code checks after 6, 11, 15, 18, 20, 21 and then every iteration, and robustjax
  follows the code. L1 (Croce & Hein 2021): every ``max(int(0.04 N), 1)`` iterations.
  """
  steps = _checks.check_int(steps, 'steps')
  if float(p) == 1.0:
    period = _l1_period(steps)
    return tuple(range(period, steps + 1, period))
  k = max(int(0.22 * steps), 1)
  decrement, floor = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
  out, since = [], 0
  for i in range(steps):
    since += 1
    if since == k:
      out.append(i + 1)
      since, k = 0, max(k - decrement, floor)
  return tuple(out)


@jax.custom_jvp
def _ratio(numerator: Array, denominator: Array) -> Array:
  """``numerator / denominator`` whose derivative is ``(dn − ratio·dd) / d``.

  The derivative PyTorch's division uses. Where DLR is constant (true class ranked
  third: numerator equals denominator, ratio exactly 1) it is exactly 0, as in the
  reference code, where XLA's ``dn/d − n·dd/d²`` leaves ~1e-7 of rounding whose signs
  would steer a sign step.
  """
  return numerator / denominator


@_ratio.defjvp
def _ratio_jvp(primals, tangents):
  numerator, denominator = primals
  d_numerator, d_denominator = tangents
  ratio = numerator / denominator
  return ratio, (d_numerator - ratio * d_denominator) / denominator


def dlr_loss(logits: Array, labels: Array) -> Array:
  """Difference of logits ratio ``[B]`` (Croce & Hein 2020, eq. 6); needs K >= 3.

  ``DLR = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)`` with ``z_π1 ≥ z_π2 ≥ ...``
  the sorted logits: invariant to shifting and rescaling the logits, positive once
  the example is misclassified.
  """
  top = jax.lax.top_k(logits, 3)[0]
  true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  other = losses_lib.best_other(logits, labels)
  return _ratio(other - true, top[:, 0] - top[:, 2] + _DLR_TINY)


def targeted_dlr_loss(logits: Array, labels: Array, targets: Array) -> Array:
  """Targeted DLR ``[B]`` (Croce & Hein 2020, eq. 7); needs K >= 4.

  ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)``, maximised by pushing the target
  logit ``z_t`` above the true one.
  """
  top = jax.lax.top_k(logits, 4)[0]
  take = lambda idx: jnp.take_along_axis(logits, idx[:, None], axis=-1)[:, 0]
  return _ratio(take(targets) - take(labels),
                top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _DLR_TINY)


def target_classes(logits: Array, rank) -> Array:
  """The class ranked ``rank + 2`` by ``logits [B, K]`` (rank 0: the runner-up), ``[B]``.

  APGD-T's ``r``-th target run attacks toward the ``(r + 2)``-th largest clean logit;
  ``rank`` may be traced, so all target runs share one compilation.
  """
  order = jnp.argsort(-logits, axis=-1)  # descending; stable for ties
  idx = jnp.broadcast_to(jnp.asarray(rank, jnp.int32) + 1, logits.shape[:1])
  return jnp.take_along_axis(order, idx[:, None], axis=-1)[:, 0].astype(jnp.int32)


def accepts_rng(logits_fn) -> bool:
  """Whether ``logits_fn`` takes an ``rng`` keyword: a stochastic model (EoT, 'rand')."""
  try:
    return 'rng' in inspect.signature(logits_fn).parameters
  except (TypeError, ValueError):
    return False


class APGDState(NamedTuple):
  """Carry of one APGD run (all per example)."""
  x: Array  # [B, ...] current iterate x^(k)
  last_step: Array  # [B, ...] x^(k) − x^(k−1), the momentum term (x_best − x^(k−1)
  #   after a checkpoint's reset); carried instead of x^(k−1), whose pass-through into
  #   the next carry cost XLA a full copy per iteration
  x_next: Array  # [B, ...] x^(k+1), the next point evaluated: computed at the end of
  #   an iteration (after its checkpoint) and carried, so that it is one buffer its five
  #   readers share; computed where it is read, XLA fused its two projections into each
  loss: Array  # [B] loss of the last evaluated iterate
  step: Array  # [B] step size η
  x_best: Array  # [B, ...] iterate of highest loss
  grad_best: Array  # [B, ...] gradient at x_best
  loss_best: Array  # [B] loss at x_best
  x_adv: Array  # [B, ...] last misclassifying iterate (the start if none)
  fooled: Array  # [B] bool: some iterate misclassified
  increases: Array  # [B] int32 steps that raised the loss since the last checkpoint
  loss_best_last_check: Array  # [B] loss_best at the last checkpoint
  reduced_last_check: Array  # [B] bool: the last checkpoint halved the step
  topk: Array  # [B] L1 only: share of the coordinates a step moves
  sparsity: Array  # [B] L1 only: nonzero coordinates of x_best − x at the last check


def _per_example(values: Array, x: Array) -> Array:
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def example_keys(rng: PRNGKey, batch_size: int) -> Array:
  """Per-example keys ``[B]``: ``fold_in(rng, i)`` for example ``i``.

  An example's random start then depends on its own key only, not on which other
  examples share its batch, so attacking a subset (AutoAttack's still-robust points)
  gives each example the same run as attacking the whole batch.
  """
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(batch_size))


def _random_sphere(keys: Array, inputs: Array, eps: Array, p: float) -> Array:
  """``x + ε·t/‖t‖_p``: t uniform in the cube (L∞) or Gaussian (L2), one key per example."""
  shape, dtype = inputs.shape[1:], inputs.dtype
  if math.isinf(p):
    t = jax.vmap(lambda k: jax.random.uniform(k, shape, dtype, -1.0, 1.0))(keys)
  else:
    t = jax.vmap(lambda k: jax.random.normal(k, shape, dtype))(keys)
  return inputs + _per_example(eps, inputs) * geometry.normalize(t, p)


def _direction(grad: Array, p: float) -> Array:
  return jnp.sign(grad) if math.isinf(p) else geometry.normalize(grad, p)


def sparse_direction(grad: Array, topk: Array) -> Array:
  """L1-APGD's step direction: ``sign(∇)`` on the top ``topk [B]`` share of |∇|, unit L1.

  The coordinates kept are those with ``|∇_i|`` at least the value at ascending rank
  ``⌊(1 − topk) d⌋`` (clipped to ``[0, d − 1]``, so at least one); the direction is
  their signs divided by their count.
  """
  flat = jnp.reshape(grad, (grad.shape[0], -1))
  d = flat.shape[1]
  mags = jnp.abs(flat)
  rank = jnp.clip(jnp.floor((1.0 - topk) * d), 0, d - 1).astype(jnp.int32)
  threshold = geometry.kth_largest(mags, d - rank)  # sort(mags)[rank], without a sort
  signs = jnp.where(mags >= threshold, jnp.sign(flat), 0.0)
  count = jnp.sum(jnp.abs(signs), axis=1, keepdims=True)
  return jnp.reshape(signs / (count + 1e-10), grad.shape)


def _l1_period(steps: int) -> int:
  return max(int(L1_CHECK_FRACTION * steps), 1)


def _nonzero(delta: Array) -> Array:
  return jnp.sum(jnp.reshape(delta != 0, (delta.shape[0], -1)), axis=1).astype(delta.dtype)


def _schedule(steps: int, p: float = math.inf):
  """Per iteration k (0-based): whether k + 1 is a checkpoint, and its window length."""
  marks = checkpoints(steps, p)
  is_check = [False] * steps
  window = [0] * steps
  prev = 0
  for w in marks:
    is_check[w - 1] = True
    window[w - 1] = w - prev
    prev = w
  return is_check, window


def _loss_fn(loss: str):
  if loss == 'ce':
    return lambda logits, labels, targets: losses_lib.cross_entropy(logits, labels)
  if loss == 'dlr':
    return lambda logits, labels, targets: dlr_loss(logits, labels)
  return targeted_dlr_loss


CHUNK = 10  # iterations per compiled segment when unroll='chunked'
_STATIC = ('logits_fn', 'p', 'steps', 'loss', 'eot_samples', 'stochastic')


def _machinery(params, inputs, labels, keys, eps, bounds, targets, *, logits_fn, p, steps,
               loss, eot_samples, stochastic):
  """``(evaluate(x, k), body(state, k))`` of one run; ``k`` a Python int or traced."""
  rng_model = jax.random.fold_in(keys[0], 0x7fffffff)
  loss_of = _loss_fn(loss)
  is_check, window = _schedule(steps, p)
  table = (jnp.asarray(is_check + [False], bool), jnp.asarray(window + [0], jnp.int32))

  def model(x, key):
    return logits_fn(params, x, rng=key) if stochastic else logits_fn(params, x)

  def summed(x, key):
    logits = model(x, key)
    values = loss_of(logits, labels, targets)
    return jnp.sum(values), (values, logits)

  value_and_grad = jax.value_and_grad(summed, has_aux=True)

  def evaluate(x, k):
    """Loss ``[B]``, logits of one sample and the EoT-averaged gradient at ``x``."""
    key = jax.random.fold_in(rng_model, k)
    if eot_samples == 1:
      (_, (values, logits)), grad = value_and_grad(x, key)
      return values, logits, grad

    def sample(acc, s):
      (_, (values, logits)), grad = value_and_grad(x, jax.random.fold_in(key, s))
      return (acc[0] + values, acc[1] + grad), logits

    (values, grad), logits = jax.lax.scan(
        sample, (jnp.zeros(inputs.shape[:1], inputs.dtype), jnp.zeros_like(inputs)),
        jnp.arange(eot_samples))
    return values / eot_samples, logits[-1], grad / eot_samples

  project = lambda z: geometry.project_ball_and_box(z, inputs, eps, p, bounds)

  def next_point(x, grad, last_step, step, topk, first):
    """The point after x: momentum step from the gradient at x (L1: sparse step)."""
    step = _per_example(step, inputs)
    if p == 1:  # no momentum (Croce & Hein 2021)
      return project(x + step * sparse_direction(grad, topk))
    z = project(x + step * _direction(grad, p))
    if first:  # alpha = 1 on the first step
      return project(x + (z - x))
    return project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * last_step)

  def body(state: APGDState, k, check=None, length=None):
    """Iteration k (0-based): evaluation of x^(k+1), bookkeeping, checkpoint, and the
    momentum step to x^(k+2).

    ``check`` (with its window ``length``) says statically whether k + 1 is a
    checkpoint; None looks it up: statically for a Python int k, else in the table.
    """
    if check is None and isinstance(k, int):  # static: checkpoint code only where one falls
      check, length = is_check[k], window[k]
    elif check is None:
      check, length = table[0][k], table[1][k]
    x_new = state.x_next
    values, logits, grad = evaluate(x_new, k + 1)
    wrong = jnp.argmax(logits, axis=-1) != labels
    x_adv = jnp.where(_per_example(wrong, inputs), x_new, state.x_adv)
    improved = values > state.loss_best
    imp = _per_example(improved, inputs)
    x_best = jnp.where(imp, x_new, state.x_best)
    grad_best = jnp.where(imp, grad, state.grad_best)
    loss_best = jnp.where(improved, values, state.loss_best)
    # The reference code compares each iterate's loss with the previous iterate's from a
    # zero-initialised history: at the first checkpoint the window's first comparison
    # reads the history's unwritten last row, 0 (itself when N = 1), not f(x^(0)).
    first = values if steps == 1 else jnp.zeros_like(values)
    if isinstance(k, int):
      previous = first if k == 0 else state.loss
    else:
      previous = jnp.where(k == 0, first, state.loss)
    increases = state.increases + (values > previous).astype(jnp.int32)
    last_step = state.last_step if p == 1 else x_new - state.x
    new = state._replace(x=x_new, last_step=last_step, loss=values, x_best=x_best,
                         grad_best=grad_best, loss_best=loss_best, x_adv=x_adv,
                         fooled=state.fooled | wrong, increases=increases)
    if check is True:
      new, grad = checkpoint(new, grad, length, state.x)
    elif check is not False:
      # Traced iteration index (rolled or chunked loop): the checkpoint's selects over
      # [B, ...] run only at the few checkpoint iterations.
      new, grad = jax.lax.cond(check, checkpoint, lambda s, g, *_: (s, g), new, grad,
                               length, state.x)
    return new._replace(x_next=next_point(new.x, grad, new.last_step, new.step, new.topk,
                                          first=False))

  def checkpoint(state: APGDState, grad, length, x_before):
    """``(state, gradient at state.x)`` after the checkpoint's adaptation."""
    if p == 1:
      return checkpoint_l1(state, grad)
    return checkpoint_halve(state, grad, length, x_before)

  def checkpoint_l1(state: APGDState, grad):
    """Adapt the sparsity and the step (Croce & Hein 2021)."""
    sparsity = _nonzero(state.x_best - inputs)
    dropped = jnp.where(state.sparsity > 0, sparsity < L1_SPARSITY_DROP * state.sparsity,
                        False)
    step = jnp.clip(jnp.where(dropped, eps, state.step / L1_STEP_DECAY),
                    L1_MIN_STEP * eps, eps)
    d = inputs.size // inputs.shape[0]
    r = _per_example(dropped, inputs)
    return state._replace(
        x=jnp.where(r, state.x_best, state.x), step=step, topk=sparsity / d / L1_STEP_DECAY,
        sparsity=sparsity), jnp.where(r, state.grad_best, grad)

  def checkpoint_halve(state: APGDState, grad, length, x_before):
    """Halve where the loss oscillated, or stalled after an unhalved checkpoint.

    A halved example restarts at x_best; its next momentum term is x_best − x_before
    (``x_before``: the iterate before this iteration's step), as the reference code's.
    """
    rises = state.increases.astype(inputs.dtype)
    oscillating = rises <= jnp.asarray(length, inputs.dtype) * RHO
    stalled = ~state.reduced_last_check & (state.loss_best_last_check >= state.loss_best)
    halve = oscillating | stalled
    h = _per_example(halve, inputs)
    return state._replace(
        x=jnp.where(h, state.x_best, state.x),
        last_step=jnp.where(h, state.x_best - x_before, state.last_step),
        step=jnp.where(halve, state.step / 2, state.step),
        increases=jnp.zeros_like(state.increases), loss_best_last_check=state.loss_best,
        reduced_last_check=halve), jnp.where(h, state.grad_best, grad)

  return evaluate, body, next_point


def _begin(params, inputs, labels, keys, eps, target_rank, bounds, x_init, statics):
  """Targets, the start and its evaluation: ``(state, targets)``.

  The start is ``x_init`` when given, else random: on the sphere for L2 and L∞,
  ``x + N(0, I)`` projected onto ``ball ∩ box`` for L1.
  """
  inputs = jax.lax.stop_gradient(inputs)
  p = statics['p']
  eps = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), inputs.shape[:1])
  targets = None
  if statics['loss'] == 'dlr-targeted':
    key = jax.random.fold_in(keys[0], 0x7ffffffe)
    logits = (statics['logits_fn'](params, inputs, rng=key) if statics['stochastic']
              else statics['logits_fn'](params, inputs))
    targets = target_classes(logits, target_rank)
  evaluate, _, next_point = _machinery(params, inputs, labels, keys, eps, bounds, targets,
                                      **statics)
  if x_init is not None:
    x0 = jax.lax.stop_gradient(x_init)
  elif p == 1:
    x0 = _l1_random_start(inputs, keys, eps, bounds)
  else:
    x0 = geometry.clip_to_box(_random_sphere(keys, inputs, eps, p), bounds)
  values0, logits0, grad0 = evaluate(x0, 0)
  batch = inputs.shape[:1]
  d = inputs.size // inputs.shape[0]
  if x_init is None:
    topk, sparsity = jnp.full(batch, L1_TOPK, inputs.dtype), jnp.full(batch, d, inputs.dtype)
  else:
    sparsity = _nonzero(x0 - inputs)
    topk = sparsity / d / L1_STEP_DECAY
  step = (1.0 if p == 1 else 2.0) * eps
  state = APGDState(
      x=x0, last_step=jnp.zeros_like(x0),
      x_next=next_point(x0, grad0, None, step, topk, first=True), loss=values0, step=step,
      x_best=x0, grad_best=grad0, loss_best=values0, x_adv=x0,
      fooled=jnp.argmax(logits0, axis=-1) != labels,
      increases=jnp.zeros(batch, jnp.int32), loss_best_last_check=values0,
      reduced_last_check=jnp.ones(batch, bool), topk=topk, sparsity=sparsity)
  return state, targets


def _end(state: APGDState):
  """``(x_adv, fooled, loss_best, x_best)`` of a finished run, without gradient."""
  out = jnp.where(_per_example(state.fooled, state.x), state.x_adv, state.x_best)
  return jax.lax.stop_gradient((out, state.fooled, state.loss_best, state.x_best))


@_common.compile_static(_STATIC)
def _start(params, inputs, labels, keys, eps, target_rank, bounds, x_init, **statics):
  return _begin(params, inputs, labels, keys, eps, target_rank, bounds, x_init, statics)


@_common.compile_static(_STATIC + ('count',))
def _segment(params, inputs, labels, keys, eps, targets, bounds, state, first, *, count,
             **statics):
  """``count`` straight-line iterations from the traced iteration index ``first``."""
  eps = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), inputs.shape[:1])
  _, body, _ = _machinery(params, inputs, labels, keys, eps, bounds, targets, **statics)
  for j in range(count):
    state = body(state, first + j)
  return state


@_common.compile_static(_STATIC + ('unroll',))
def _whole(params, inputs, labels, keys, eps, target_rank, bounds, x_init, *, unroll,
           **statics):
  """One program: start, N iterations (straight-line or ``lax.scan``), result."""
  state, targets = _begin(params, inputs, labels, keys, eps, target_rank, bounds, x_init,
                          statics)
  eps = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), inputs.shape[:1])
  _, body, _ = _machinery(params, jax.lax.stop_gradient(inputs), labels, keys, eps, bounds,
                       targets, **statics)
  steps = statics['steps']
  if unroll is True or (steps and unroll >= steps):
    for k in range(steps):
      state = body(state, k)
  elif steps and unroll == 1:
    state = _windowed(body, state, steps, statics['p'])
  elif steps:
    state, _ = jax.lax.scan(lambda c, k: (body(c, k), None), state, jnp.arange(steps),
                            unroll=unroll)
  return _end(state)


def _windowed(body, state: APGDState, steps: int, p: float) -> APGDState:
  """The N iterations as loops over the windows between checkpoints.

  An outer ``lax.scan`` over the checkpoints runs each window's plain iterations in a
  ``fori_loop`` and then the checkpoint iteration, so no iteration carries a
  ``lax.cond``, whose pass-through branch made XLA copy the ``[B, ...]`` state every
  iteration; the program holds three copies of the body whatever N.
  """
  marks = checkpoints(steps, p)
  plain = lambda k, s: body(s, k, check=False)
  if marks:
    ends = jnp.asarray(marks, jnp.int32) - 1  # 0-based checkpoint iterations
    starts = jnp.concatenate([jnp.zeros(1, jnp.int32), ends[:-1] + 1])

    def window(s, args):
      start, end = args
      s = jax.lax.fori_loop(start, end, plain, s)
      return body(s, end, check=True, length=end - start + 1), None

    state, _ = jax.lax.scan(window, state, (starts, ends))
  first = marks[-1] if marks else 0
  if first < steps:
    state = jax.lax.fori_loop(first, steps, plain, state)
  return state


def run_single(params, inputs, labels, keys, eps, target_rank, bounds, *, logits_fn, p,
               steps, loss, unroll, eot_samples, stochastic, x_init=None,
               with_best=False):
  """One APGD run (one restart, one target, one radius) on validated arguments.

  Args:
    params, inputs, labels, bounds: as :func:`apgd` (``inputs [B, ...]``, ``labels [B]``).
    keys: ``[B]`` per-example keys (:func:`example_keys`) of the random start; a
      stochastic model draws its samples from the first one.
    eps: ``[B]`` radii.
    target_rank: ``[]`` int, the target's rank for ``loss='dlr-targeted'``
      (:func:`target_classes`); ignored otherwise.
    logits_fn: the model; called with ``rng=`` when ``stochastic``.
    p: 1, 2 or inf. steps: iterations N. loss: ``'ce'``, ``'dlr'`` or ``'dlr-targeted'``.
    unroll: True (one straight-line program), 1 (rolled: loops over the windows
      between checkpoints, :func:`_windowed`), an int > 1 (one ``lax.scan`` with that
      unroll) or ``'chunked'``: straight-line segments of :data:`CHUNK` iterations,
      each one compiled program dispatched in turn (the state stays on the device).
    eot_samples: gradients averaged per iterate (expectation over transformation).
    stochastic: whether ``logits_fn`` takes an ``rng`` keyword.
    x_init: ``[B, ...]`` start in ``ball ∩ box``, or None for the random one.
    with_best: also return the iterate of highest loss.

  Returns:
    ``(x_adv [B, ...], fooled [B] bool, loss_best [B])``, plus ``x_best`` when
    ``with_best``: the last misclassifying iterate where one was found, else the iterate
    of highest loss; no gradient.
  """
  statics = dict(logits_fn=logits_fn, p=p, steps=steps, loss=loss,
                 eot_samples=eot_samples, stochastic=stochastic)
  if unroll != 'chunked':
    out = _whole(params, inputs, labels, keys, eps, target_rank, bounds, x_init,
                 unroll=unroll, **statics)
  else:
    state, targets = _start(params, inputs, labels, keys, eps, target_rank, bounds, x_init,
                            **statics)
    for first in range(0, steps, CHUNK):
      state = _segment(params, inputs, labels, keys, eps, targets, bounds, state,
                       jnp.asarray(first, jnp.int32), count=min(CHUNK, steps - first),
                       **statics)
    out = _end(state)
  return out if with_best else out[:3]


def radius_schedule(steps: int) -> tuple[tuple[float, int], ...]:
  """L1-APGD's decreasing radii: ``((3, ⌈0.3 N⌉), (2, ⌈0.3 N⌉), (1, rest))``.

  Pairs of (factor of ε, iterations); a single ``((1, N),)`` when ``N`` is too small
  for three stages.
  """
  first = -(-3 * steps // 10)  # ceil(0.3 N)
  last = steps - 2 * first
  if first < 1 or last < 1:
    return ((1.0, steps),)
  return tuple((factor, last if share is None else first) for factor, share in L1_RADII)


def _l1_random_start(inputs, keys, eps, bounds):
  """L1's start: ``x + N(0, I)`` (one key per example) projected onto ``ball ∩ box``."""
  noise = jax.vmap(lambda k: jax.random.normal(k, inputs.shape[1:], inputs.dtype))(keys)
  return geometry.project_ball_and_box(inputs + noise, inputs, eps, 1.0, bounds)


_l1_start = jax.jit(_l1_random_start)


@jax.jit
def _l1_shrink(x, inputs, eps, bounds):
  return geometry.project_ball_and_box(x, inputs, eps, 1.0, bounds)


def run(params, inputs, labels, keys, eps, target_rank, bounds, *, steps,
        decreasing_eps=False, **kwargs):
  """:func:`run_single`, or for L1 with ``decreasing_eps`` the radius schedule.

  With the schedule (:func:`radius_schedule`), each stage starts from the previous
  stage's best point projected onto its smaller ball (the first from ``x + N(0, I)``
  projected onto the ``3ε`` ball); the result is the last stage's, at ``eps``.
  """
  if not decreasing_eps:
    return run_single(params, inputs, labels, keys, eps, target_rank, bounds, steps=steps,
                      **kwargs)
  stages = radius_schedule(steps)
  x_init = _l1_start(inputs, keys, stages[0][0] * eps, bounds)
  for factor, count in stages:
    x_init = _l1_shrink(x_init, inputs, factor * eps, bounds)
    *out, x_init = run_single(params, inputs, labels, keys, factor * eps, target_rank,
                              bounds, steps=count, x_init=x_init, with_best=True, **kwargs)
  return tuple(out)


@jax.jit
def merge(x_old, fooled_old, loss_old, x_new, fooled_new, loss_new):
  """Per example keeps the first run that fooled it, else the run of higher loss."""
  take_new = ~fooled_old & (fooled_new | (loss_new > loss_old))
  x = jnp.where(_per_example(take_new, x_old), x_new, x_old)
  return x, fooled_old | fooled_new, jnp.where(take_new, loss_new, loss_old)


def check_norm(p) -> float:
  """Returns p as a float, raising unless APGD supports it (1, 2 or inf)."""
  return _checks.check_supported_p(p, NORMS, 'APGD')


def check_decreasing_eps(decreasing_eps, p: float) -> bool:
  """``decreasing_eps`` resolved: None means False; True needs p = 1."""
  if decreasing_eps is None:
    return False
  if not isinstance(decreasing_eps, bool):
    raise ValueError(f'decreasing_eps must be True, False or None, got {decreasing_eps!r}')
  if decreasing_eps and p != 1:
    raise ValueError(f'decreasing_eps=True is the L1 schedule; it needs p=1, got p={p}')
  return decreasing_eps


def check_num_classes(loss: str, num_classes: int) -> None:
  """DLR needs K >= 3 logits, targeted DLR K >= 4 (the denominators use π3, π4)."""
  need = {'dlr': 3, 'dlr-targeted': 4}.get(loss, 2)
  if num_classes < need:
    name = 'targeted DLR (apgd_targeted)' if loss == 'dlr-targeted' else f'loss {loss!r}'
    raise ValueError(f'{name} needs a model with at least {need} classes (K >= {need}), '
                     f'got K = {num_classes}; use loss=\'ce\' for fewer classes')


def validate(logits_fn, params, batch, *, eps, p, steps, restarts, bounds, loss,
             eot_samples=1):
  """Checks every argument of an APGD entry point before anything compiles.

  Returns:
    ``(inputs, labels, num_classes, p, steps, restarts, bounds, eps [B])``.
  """
  p = check_norm(p)
  steps = _checks.check_int(steps, 'steps')
  restarts = _checks.check_int(restarts, 'restarts', minimum=1)
  _checks.check_int(eot_samples, 'eot_samples', minimum=1)
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  _checks.check_radius(eps, inputs.shape[0])
  _checks.check_in_bounds(inputs, bounds)
  check_num_classes(loss, num_classes)
  eps = jnp.broadcast_to(jnp.asarray(eps, inputs.dtype), inputs.shape[:1])
  return inputs, labels, num_classes, p, steps, restarts, bounds, eps


def resolve_unroll(unroll, logits_fn, params, inputs, stochastic):
  """``'auto'``: ``'chunked'`` where :func:`robustjax.attacks.loop.auto_unroll` would
  unroll (XLA:CPU, a model with convolutions), else its rolled loop."""
  if unroll == 'chunked' or unroll is True:
    return unroll
  if unroll != 'auto':
    return max(_checks.check_int(unroll, 'unroll'), 1)
  if stochastic:
    auto = loop.auto_unroll(lambda x: logits_fn(params, x, rng=jax.random.PRNGKey(0)),
                            inputs)
  else:
    auto = loop.auto_unroll(lambda x: logits_fn(params, x), inputs)
  return 'chunked' if auto is True else auto


def apgd(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
         p: float, steps: int = 100, loss: str = 'ce', restarts: int = 1,
         bounds: Bounds | None = DEFAULT_BOUNDS, eot_samples: int = 1,
         unroll: int | bool | str = 'auto', decreasing_eps: bool | None = None) -> Array:
  """Untargeted APGD (Croce & Hein 2020, Alg. 1; L1: Croce & Hein 2021) on CE or DLR.

  Restart ``r`` starts example ``i`` from its own random point (key
  ``fold_in(fold_in(rng, r), i)``, :func:`example_keys`; restart 0 equals a single run
  with ``restarts=1``); an example fooled by a restart keeps that point
  (as the reference code, which re-attacks only the points still robust), others keep
  the point of highest loss over all restarts.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``. A stochastic model takes
      an optional ``rng`` keyword (``logits_fn(params, x, rng=key)``); it is then
      called with a fresh key at every evaluation.
    params: model parameters.
    batch: ``(inputs [B, ...] in bounds, labels [B] int in [0, K))``.
    rng: key of the random starts.
    eps: radius, scalar or ``[B]``, ``>= 0``.
    p: 1, 2 or inf.
    steps: iterations N per restart (100 in the paper); N + 1 gradients each (for L1
      with ``decreasing_eps``, N + 3: one more per stage).
    loss: ``'ce'`` (cross-entropy) or ``'dlr'`` (:func:`dlr_loss`, K >= 3).
    restarts: random restarts (``>= 1``).
    bounds: input box ``(low, high)`` or None.
    eot_samples: gradients averaged per iterate (expectation over transformation,
      AutoAttack's 'rand' version uses 20); only useful for a stochastic model.
    unroll: the iteration loop: True (one straight-line program), 1 (rolled loops over
      the windows between checkpoints), an int > 1 (one ``lax.scan`` with that unroll),
      ``'chunked'`` (straight-line segments of :data:`CHUNK` = 10 iterations,
      one compiled program dispatched ``N/10`` times, the state staying on the device)
      or ``'auto'``: ``'chunked'`` on XLA:CPU when the model has convolutions
      (:func:`robustjax.attacks.loop.auto_unroll`), else a rolled scan. Measured with
      ``experiments/benchmarks/apgd_speed.py`` (SOAR CNN, batch 128, 32x32x3, a busy
      2-core machine): a single 100-iteration straight-line program had not finished
      compiling after 5 minutes and 13 GB, while the chunked loop compiles two small
      programs (~47 s, independent of N) and runs one iteration in ~0.8 of a separately
      dispatched input gradient; a rolled scan runs convolutions several times slower.
    decreasing_eps: L1 only: run the radius schedule ``3ε, 2ε, ε``
      (:func:`radius_schedule`), as AutoAttack's L1 version does. None means False, the
      reference implementation's default for a single APGD.

  Returns:
    ``x_adv [B, ...]`` in ``ball(inputs, eps) ∩ box``, without gradient: the last
    misclassifying iterate where one was found, else the point of highest loss.

  Raises:
    ValueError: ``p`` not 1, 2 or inf, ``eps < 0``, bad ``steps``/``restarts``, unknown
      ``loss``, ``'dlr'`` with K < 3, inputs outside ``bounds``, a malformed batch,
      ``decreasing_eps=True`` with p != 1.
  """
  _checks.check_choice(loss, 'loss', LOSSES)
  inputs, labels, _, p, steps, restarts, bounds, eps = validate(
      logits_fn, params, batch, eps=eps, p=p, steps=steps, restarts=restarts,
      bounds=bounds, loss=loss, eot_samples=eot_samples)
  decreasing_eps = check_decreasing_eps(decreasing_eps, p)
  stochastic = accepts_rng(logits_fn)
  unroll = resolve_unroll(unroll, logits_fn, params, inputs, stochastic)
  one_run = functools.partial(run, logits_fn=logits_fn, p=p, steps=steps, loss=loss,
                              unroll=unroll, eot_samples=eot_samples,
                              stochastic=stochastic, decreasing_eps=decreasing_eps)
  result = None
  for r in range(restarts):
    keys = example_keys(jax.random.fold_in(rng, r), inputs.shape[0])
    current = one_run(params, inputs, labels, keys, eps, jnp.zeros([], jnp.int32), bounds)
    result = current if result is None else merge(*result, *current)
  return result[0]


def apgd_targeted(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey,
                  eps, p: float, steps: int = 100, num_targets: int = 9,
                  restarts: int = 1, bounds: Bounds | None = DEFAULT_BOUNDS,
                  eot_samples: int = 1, unroll: int | bool | str = 'auto',
                  decreasing_eps: bool | None = None) -> Array:
  """APGD-T: APGD on the targeted DLR loss toward the top ``num_targets`` classes.

  Target run ``t = 0 .. T−1`` (``T = min(num_targets, K − 1)``) attacks every example
  toward its ``(t + 2)``-th largest clean logit (:func:`target_classes`), with restart
  ``r`` from the per-example keys of ``fold_in(fold_in(rng, t), r)``; an example keeps the point of the first
  run that fooled it, else the run of highest loss. All runs share one compilation
  (the target's rank is traced).

  Args:
    logits_fn, params, batch, eps, p, steps, restarts, bounds, eot_samples, unroll,
    decreasing_eps: as :func:`apgd`.
    rng: key of the random starts.
    num_targets: target classes (``>= 1``; 9 in AutoAttack), capped at K − 1.

  Returns:
    ``x_adv [B, ...]`` in ``ball(inputs, eps) ∩ box``, without gradient.

  Raises:
    ValueError: as :func:`apgd`, and for a model with fewer than 4 classes.
  """
  num_targets = _checks.check_int(num_targets, 'num_targets', minimum=1)
  inputs, labels, num_classes, p, steps, restarts, bounds, eps = validate(
      logits_fn, params, batch, eps=eps, p=p, steps=steps, restarts=restarts,
      bounds=bounds, loss='dlr-targeted', eot_samples=eot_samples)
  decreasing_eps = check_decreasing_eps(decreasing_eps, p)
  stochastic = accepts_rng(logits_fn)
  unroll = resolve_unroll(unroll, logits_fn, params, inputs, stochastic)
  one_run = functools.partial(run, logits_fn=logits_fn, p=p, steps=steps,
                              loss='dlr-targeted', unroll=unroll, eot_samples=eot_samples,
                              stochastic=stochastic, decreasing_eps=decreasing_eps)
  result = None
  for t in range(min(num_targets, num_classes - 1)):
    for r in range(restarts):
      keys = example_keys(jax.random.fold_in(jax.random.fold_in(rng, t), r),
                          inputs.shape[0])
      current = one_run(params, inputs, labels, keys, eps, jnp.asarray(t, jnp.int32),
                        bounds)
      result = current if result is None else merge(*result, *current)
  return result[0]
