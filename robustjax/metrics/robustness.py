"""Clean and robust accuracy, accuracy-vs-eps curves and the SCORPIO attack suite.

Every function accepts one batch or an iterable of batches. A batch is
``(inputs [B, ...], labels [B])`` or ``(inputs, labels, mask [B])`` where ``mask`` marks
real examples (padded rows, e.g. from :func:`robustjax.data` eval pipelines, are ignored),
so each example counts once. An example is *robust* when it is classified correctly both
at ``x`` and at the attack's point. Accuracies are Python floats. A dict batch (e.g. a
TFDS element) is rejected with the tuple to pass instead, ``(b['image'], b['label'])``.

``attack='autoattack'`` runs :func:`robustjax.attacks.autoattack` (the pointwise worst
case over APGD-CE, APGD-T, FAB-T and Square, Croce & Hein 2020). That ensemble gathers
the still-robust points on the host between its attacks, so it cannot sit inside one
``jax.jit``: it is called per batch on the batch's real (unmasked) rows and compiles
its attacks inside; the PGD-family attacks keep their single jitted function.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import _checks
from robustjax import attacks
from robustjax import attacks as attacks_lib
from robustjax.attacks.autoattack import check_attacks as _check_autoattack_attacks
from robustjax.attacks.autoattack import check_norm as _check_autoattack_norm
from robustjax.types import Array, Bounds, DEFAULT_BOUNDS, Labels, LogitsFn, Params, PRNGKey

ATTACKS = ('pgd', 'fgsm', 'multi_targeted', 'autoattack')
_STEP_ATTACKS = ('pgd', 'multi_targeted')  # attacks that need ``steps``
# SCORPIO eq. 12 suite: name -> attack objective (robustjax.attacks.objectives).
SCORPIO_ATTACKS = {'ul': 'ce', 'tl': 'targeted_ce', 'um': 'margin', 'tm': 'targeted_margin'}


def iter_batches(data: Any, bounds: Bounds | None = None
                 ) -> Iterator[tuple[Array, Array, Array]]:
  """Yields ``(inputs, labels, mask)`` from one batch or an iterable of batches, lazily.

  Each batch is checked as it arrives (inside ``bounds`` when given); an iterable that
  yields nothing raises.
  """
  bounds = _checks.check_bounds(bounds)
  _checks.check_not_mapping(data, 'batches')
  if isinstance(data, (tuple, list)) and data and hasattr(data[0], 'ndim'):
    data = [data]
  count = 0
  for batch in data:
    _checks.check_not_mapping(batch, 'batch')
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
      raise ValueError('batches must be (inputs, labels) or (inputs, labels, mask) '
                       f'tuples, got {type(batch).__name__}')
    inputs, labels = batch[0], batch[1]
    _checks.check_float_inputs(inputs)
    _checks.check_labels(labels, jnp.shape(inputs)[0])
    mask = batch[2] if len(batch) == 3 else jnp.ones(jnp.shape(labels), bool)
    if jnp.shape(mask) != jnp.shape(labels):
      raise ValueError(f'mask must have shape [B] = {jnp.shape(labels)}, '
                       f'got {jnp.shape(mask)}')
    _checks.check_in_bounds(inputs, bounds)
    count += 1
    yield inputs, labels, jnp.asarray(mask, bool)
  if not count:
    raise ValueError('batches must contain at least one batch')


def as_batches(data: Any, bounds: Bounds | None = None
               ) -> list[tuple[Array, Array, Array]]:
  """:func:`iter_batches` as a list, for metrics that pass over the data several times."""
  return list(iter_batches(data, bounds))


def correct(logits_fn: LogitsFn, params: Params, inputs: Array, labels: Labels) -> Array:
  """Whether each example is classified correctly, ``[B]`` bool."""
  return jnp.argmax(logits_fn(params, inputs), axis=-1) == labels


def accuracy(logits_fn: LogitsFn, params: Params, batches, labels: Labels | None = None,
             *, mask: Array | None = None) -> float:
  """Top-1 accuracy over the unmasked examples, as a Python float.

  Takes the batches of :func:`robust_accuracy`: one batch ``(inputs, labels[, mask])`` or
  an iterable of batches. The older form ``accuracy(logits_fn, params, inputs, labels,
  mask=mask)`` is still accepted. Called on traced arrays (inside ``jax.jit``) it returns
  a traced scalar instead of a float.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters (a pytree of arrays).
    batches: one batch or an iterable of batches; or ``inputs [B, ...]`` when ``labels``
      is given.
    labels: ``[B]`` int labels, only with the older ``(inputs, labels)`` form.
    mask: ``[B]`` bool, only with the older form; False rows are ignored.
  """
  _checks.check_params(params)
  if labels is not None:
    batches = (batches, labels) if mask is None else (batches, labels, mask)
  elif mask is not None:
    raise ValueError('mask= goes with accuracy(logits_fn, params, inputs, labels); with a '
                     'batch, pass (inputs, labels, mask)')
  hits = total = 0
  for inputs, labels, mask in iter_batches(batches):
    hits = hits + jnp.sum(correct(logits_fn, params, inputs, labels) & mask)
    total = total + jnp.sum(mask)
  if isinstance(hits, jax.core.Tracer) or isinstance(total, jax.core.Tracer):
    return hits / jnp.maximum(total, 1)
  return int(hits) / max(int(total), 1)


def _attack_fn(logits_fn, *, attack, p, steps, restarts, objective, step_size, bounds):
  """``(params, inputs, labels, rng, eps) -> x_adv`` for the chosen attack (eps traced)."""
  _checks.check_choice(attack, 'attack', ATTACKS)

  def run(params, inputs, labels, rng, eps):
    batch = (inputs, labels)
    if attack == 'fgsm':
      return attacks.fgsm(logits_fn, params, batch, rng=rng, eps=eps, p=p,
                          objective=objective, bounds=bounds)
    if attack == 'multi_targeted':
      return attacks.multi_targeted(logits_fn, params, batch, rng=rng, eps=eps, p=p,
                                    steps=steps, step_size=step_size, restarts=restarts,
                                    objective=objective, bounds=bounds)
    return attacks.pgd(logits_fn, params, batch, rng=rng, eps=eps, p=p, steps=steps,
                       step_size=step_size, restarts=restarts, objective=objective,
                       bounds=bounds)

  return run


def _robust_fn(logits_fn, **attack_kwargs):
  """A jitted ``(params, inputs, labels, rng, eps) -> [B]`` robust-correctness function.

  ``eps`` is an argument, so one compilation serves every radius of a curve.
  """

  @jax.jit
  def robust(params, inputs, labels, rng, eps):
    return robust_correct(logits_fn, params, (inputs, labels), rng=rng, eps=eps,
                          **attack_kwargs)

  return robust


def robust_correct(logits_fn: LogitsFn, params: Params, batch, *, rng: PRNGKey, eps,
                   p: float, steps: int | None = None, restarts: int = 1,
                   objective: str = 'ce', step_size=None,
                   bounds: Bounds | None = DEFAULT_BOUNDS, attack: str = 'pgd',
                   version: str = 'standard', attacks: Sequence[str] | None = None,
                   with_points: bool = False):
  """Per example ``[B]`` bool: correct at ``x`` and at the attack's point in the eps-ball.

  The one per-batch evaluator of robust accuracy: the metrics here, training's final
  evaluation (:func:`robustjax.training.evaluate`) and :mod:`robustjax.evaluation`'s PGD
  call it. The PGD family is ``jax.jit``-able (``eps`` may be traced); AutoAttack is a
  host-level loop.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: key of the attack.
    eps: radius, scalar or ``[B]``; ``0`` gives clean correctness.
    p: norm of the ball.
    steps, restarts, objective, step_size, bounds: as :func:`robustjax.attacks.pgd`
      (``steps`` is required by ``'pgd'`` and ``'multi_targeted'``).
    attack: ``'pgd'``, ``'fgsm'``, ``'multi_targeted'`` (targeted objective) or
      ``'autoattack'`` (:func:`robustjax.attacks.autoattack`; ``steps``, ``restarts``,
      ``objective`` and ``step_size`` are then unused).
    version, attacks: AutoAttack's version and custom attack list (``attack='autoattack'``
      only).
    with_points: also return the attack's points ``[B, ...]``.

  Returns:
    ``[B]`` bool, or ``([B] bool, points [B, ...])`` with ``with_points``.
  """
  inputs, labels = batch[0], batch[1]
  _checks.check_in_bounds(inputs, _checks.check_bounds(bounds))
  _check_steps(attack, steps)
  if attack == 'autoattack':
    if np.ndim(eps) == 0 and float(eps) == 0.0:
      ok, points = correct(logits_fn, params, inputs, labels), inputs
    else:
      result = attacks_lib.autoattack(logits_fn, params, (inputs, labels), rng=rng,
                                      eps=eps, p=p, version=version,
                                      attacks=attacks_list(attacks), bounds=bounds)
      ok, points = result.robust, result.inputs
  else:
    run = _attack_fn(logits_fn, attack=attack, p=p, steps=steps, restarts=restarts,
                     objective=objective, step_size=step_size, bounds=bounds)
    points = run(params, inputs, labels, rng, eps)
    ok = (correct(logits_fn, params, inputs, labels)
          & correct(logits_fn, params, points, labels))
  return (ok, points) if with_points else ok


def pad_batches(inputs, labels, batch_size: int
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Arrays ``[N, ...]``, ``[N]`` as batches of ``batch_size``, the last zero-padded, with
  a validity mask: the layout of :func:`robustjax.data.eval_batches`."""
  inputs, labels = np.asarray(inputs), np.asarray(labels)
  for start in range(0, len(labels), batch_size):
    x, y = inputs[start:start + batch_size], labels[start:start + batch_size]
    mask = np.zeros(batch_size, bool)
    mask[:len(y)] = True
    if len(y) < batch_size:
      x = np.concatenate([x, np.zeros((batch_size - len(y),) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros(batch_size - len(y), y.dtype)])
    yield x, y, mask


def robust_accuracy(logits_fn: LogitsFn, params: Params, batches, *, rng: PRNGKey, eps,
                    p: float, steps: int | None = None, restarts: int = 1,
                    objective: str = 'ce', step_size=None,
                    bounds: Bounds | None = DEFAULT_BOUNDS, attack: str = 'pgd',
                    version: str = 'standard',
                    attacks: Sequence[str] | None = None) -> float:
  """Fraction of (unmasked) examples that stay correct under an attack of radius eps.

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``.
    params: model parameters.
    batches: one batch or an iterable of batches ``(inputs, labels[, mask])``.
    rng: key; batch ``i`` is attacked with ``fold_in(rng, i)``.
    eps: scalar radius (``0``: clean accuracy, no attack is run).
    p: norm of the ball, ``[1, inf]``.
    steps: attack steps (``>= 0``); required by ``'pgd'`` and ``'multi_targeted'``.
    restarts: random restarts (``>= 1``).
    objective: attack objective (``'ce'``, ``'margin'``, ``'targeted_ce'``,
      ``'targeted_margin'`` or SCORPIO's ``'ul'``, ``'um'``, ``'tl'``, ``'tm'``).
    step_size: attack step; default ``2.5 eps / steps``.
    bounds: input box or None.
    attack: ``'pgd'``, ``'fgsm'``, ``'multi_targeted'`` or ``'autoattack'``
      (:func:`robustjax.attacks.autoattack` on each batch's real rows; ``steps``,
      ``restarts``, ``objective`` and ``step_size`` are then unused).
    version: AutoAttack version, ``'standard'``, ``'plus'`` or ``'rand'``
      (``attack='autoattack'`` only).
    attacks: AutoAttack's custom attack list, e.g. ``['apgd-ce', 'apgd-t']``
      (``attack='autoattack'`` only); None runs the version's list.

  Returns:
    The robust accuracy as a Python float.
  """
  if np.ndim(eps) != 0:
    raise ValueError(f'eps must be a scalar radius, got shape {np.shape(eps)}')
  _checks.check_nonnegative(eps, 'eps')
  _checks.check_params(params)
  robust = _prepare(logits_fn, p=p, steps=steps, restarts=restarts,
                    objective=objective, step_size=step_size, bounds=bounds, attack=attack,
                    version=version, attacks=attacks)
  return _robust_mean(logits_fn, robust, iter_batches(batches, bounds), params, rng, eps)


def _check_steps(attack, steps):
  _checks.check_choice(attack, 'attack', ATTACKS)
  if steps is None and attack in _STEP_ATTACKS:
    raise ValueError(f'steps is required for attack {attack!r} (an integer >= 0)')


def attacks_list(names):
  """AutoAttack's custom list as a tuple, or None."""
  return None if names is None else tuple(names)


def _prepare(logits_fn, *, p, steps, restarts, objective, step_size, bounds, attack,
             version='standard', attacks=None):
  """Checks the arguments (before any tracing) and builds the robust function.

  Returns ``(params, inputs, labels, rng, eps) -> [B]`` bool: one jitted function for
  the PGD family; for ``'autoattack'`` a host-level function running the ensemble.
  """
  _check_steps(attack, steps)
  bounds = _checks.check_bounds(bounds)
  if attack == 'autoattack':
    return _autoattack_fn(logits_fn, p=p, bounds=bounds, version=version,
                          attacks=attacks_list(attacks))
  p = _checks.check_p(p)
  steps = _checks.check_int(steps if steps is not None else 0, 'steps')
  restarts = _checks.check_int(restarts, 'restarts', minimum=1)
  attacks_lib.objectives.canonical_name(objective)  # unknown names fail before compiling
  return _robust_fn(logits_fn, attack=attack, p=p, steps=steps, restarts=restarts,
                    objective=objective, step_size=step_size, bounds=bounds)


def _autoattack_fn(logits_fn, *, p, bounds, version, attacks):
  """``(params, inputs, labels, rng, eps) -> [B]`` bool from the AutoAttack ensemble.

  The ensemble's own checks (version, attack names, p) run here, before any batch.
  """
  names = _check_autoattack_attacks(attacks, version)
  _check_autoattack_norm(p, names)

  def robust(params, inputs, labels, rng, eps):
    return robust_correct(logits_fn, params, (inputs, labels), rng=rng, eps=eps, p=p,
                          bounds=bounds, attack='autoattack', version=version,
                          attacks=attacks)

  robust.host_level = True
  return robust


def _robust_mean(logits_fn, robust, batches, params, rng, eps) -> float:
  """Mean robust correctness over unmasked examples; eps = 0 skips the attack."""
  if float(eps) == 0.0:
    clean = jax.jit(lambda prm, x, y: correct(logits_fn, prm, x, y))
    per_example = lambda prm, x, y, key: clean(prm, x, y)
  else:
    per_example = lambda prm, x, y, key: robust(prm, x, y, key, jnp.asarray(float(eps)))
  host_level = getattr(robust, 'host_level', False)
  hits = total = 0
  for i, (inputs, labels, mask) in enumerate(batches):
    if host_level and float(eps) != 0.0:
      # Attack only the real rows: padded ones would cost a full ensemble run.
      keep = np.asarray(mask)
      if not keep.any():
        continue
      if not keep.all():
        inputs, labels, mask = inputs[keep], labels[keep], mask[keep]
    ok = per_example(params, inputs, labels, jax.random.fold_in(rng, i))
    hits += int(jnp.sum(ok & mask))
    total += int(jnp.sum(mask))
  return hits / max(total, 1)


def accuracy_vs_eps(logits_fn: LogitsFn, params: Params, batches, *, rng: PRNGKey,
                    eps_list: Iterable[float], p: float, steps: int | None = None,
                    restarts: int = 1, objective: str = 'ce', step_size=None,
                    bounds: Bounds | None = DEFAULT_BOUNDS, attack: str = 'pgd',
                    version: str = 'standard',
                    attacks: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """Robust accuracy at each radius of ``eps_list`` (the curves of Woods Fig. 3).

  Same arguments as :func:`robust_accuracy` (``attack='autoattack'`` included); every
  radius reuses ``rng``. ``eps = 0``
  gives the clean accuracy. Returns ``{'eps': [E], 'accuracy': [E]}`` numpy arrays.
  """
  eps_values = np.asarray(list(eps_list), np.float64)
  if eps_values.ndim != 1 or not eps_values.size:
    raise ValueError(f'eps_list must be a non-empty list of radii, got {eps_list!r}')
  _checks.check_nonnegative(eps_values, 'eps_list')
  _checks.check_params(params)
  robust = _prepare(logits_fn, p=p, steps=steps, restarts=restarts,
                    objective=objective, step_size=step_size, bounds=bounds, attack=attack,
                    version=version, attacks=attacks)
  batches = as_batches(batches, bounds)
  accs = [_robust_mean(logits_fn, robust, batches, params, rng, e) for e in eps_values]
  return {'eps': eps_values, 'accuracy': np.asarray(accs)}


def scorpio_attack_accuracies(logits_fn: LogitsFn, params: Params, batches, *,
                              rng: PRNGKey, eps, p: float, steps: int, restarts: int = 1,
                              step_size=None, bounds: Bounds | None = DEFAULT_BOUNDS
                              ) -> dict[str, float]:
  """Clean accuracy and accuracy under SCORPIO's four PGD attacks (eq. 12, Table 2).

  UL: maximise the loss ``ℓ(x+δ, y)``; TL: random-targeted loss (minimise
  ``ℓ(x+δ, r)``, ``r ~ U({1..K} \\ y)``); UM: minimise the margin
  ``M(x+δ, y) = log p_y − max_{j≠y} log p_j``; TM: maximise ``M(x+δ, r)``.

  Returns:
    ``{'clean', 'ul', 'tl', 'um', 'tm'}`` accuracies (Python floats).
  """
  batches = as_batches(batches, bounds)
  out = {'clean': robust_accuracy(logits_fn, params, batches, rng=rng, eps=0.0, p=p,
                                  steps=0, bounds=bounds)}
  for name, objective in SCORPIO_ATTACKS.items():
    out[name] = robust_accuracy(logits_fn, params, batches, rng=rng, eps=eps, p=p,
                                steps=steps, restarts=restarts, objective=objective,
                                step_size=step_size, bounds=bounds)
  return out
