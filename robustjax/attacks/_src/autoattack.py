"""AutoAttack: the ensemble APGD-CE, APGD-T, FAB-T, Square as a pointwise worst case.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks" (ICML 2020). The attacks run one after another, each
only on the examples still robust after the previous ones; an example is robust when it
is classified correctly at ``x`` and at every attack's point. Versions, as the authors'
reference implementation:

| version | attacks (in order) | settings |
| --- | --- | --- |
| ``'standard'`` | apgd-ce, apgd-t, fab-t, square | 1 restart each; 9 targets; 5000 queries |
| ``'plus'`` | apgd-ce, apgd-dlr, fab, square, apgd-t, fab-t | APGD and FAB 5 restarts; targeted 1 |
| ``'rand'`` | apgd-ce, apgd-dlr | 1 restart, gradients averaged over 20 samples (EoT) |

All APGD runs use 100 iterations, FAB 100 iterations, Square ``p_init = 0.8`` with the
raw window schedule (the reference builds it with ``resc_schedule=False``). A custom
``attacks=`` list runs each attack with the settings the reference code gives it under
the version (:func:`ensemble_settings`).

For L1 (``p=1``) the standard version follows the reference code's L1 settings: APGD-CE
(and APGD-DLR, the same configured object) with 5 restarts and APGD-T with 5 targets,
both with the decreasing-radius schedule of L1-APGD (Croce & Hein 2021, "Mind the box"),
then FAB-T and Square's L1 variant.

Running an attack only on the still-robust points is done on the host between attacks
(and between APGD's restarts and target classes, as the reference code does): their
indices are gathered and padded, by repeating the first of them, to a bucketed batch
size (:func:`robustjax.attacks._src.common.bucket_size`: under 12.5% of padding, at most
eight compiled shapes per halving of the set, capped at the full batch size). APGD
draws each example's random start from its own key (``fold_in(key, index in the
batch)``), so an example's APGD runs do not depend on which other examples are still
robust. The ensemble is therefore a host-level loop and cannot run inside ``jax.jit``;
each attack is compiled.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import _checks
from robustjax import losses as losses_lib
from robustjax.attacks._src import common as _common
from robustjax.attacks._src import apgd as apgd_lib
from robustjax.attacks._src import fab as fab_lib
from robustjax.attacks._src import square as square_lib
from robustjax.types import Array, Batch, Bounds, DEFAULT_BOUNDS, LogitsFn, Params, PRNGKey

AUTOATTACK_ATTACKS = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'fab', 'fab-t', 'square')
AUTOATTACK_VERSIONS = ('standard', 'plus', 'rand')
ROBUST = -1  # broken_by of an example no attack broke
CLEAN_MISCLASSIFIED = -2  # broken_by of an example misclassified at x

_VERSION_ATTACKS = {
    'standard': ('apgd-ce', 'apgd-t', 'fab-t', 'square'),
    'plus': ('apgd-ce', 'apgd-dlr', 'fab', 'square', 'apgd-t', 'fab-t'),
    'rand': ('apgd-ce', 'apgd-dlr'),
}
_GRADIENT_ATTACKS = ('apgd-ce', 'apgd-dlr', 'apgd-t', 'fab', 'fab-t')
_STEPS = 100
_NUM_TARGETS = 9
_L1_RESTARTS = 5  # APGD-CE restarts of the L1 standard version
_L1_NUM_TARGETS = 5  # APGD-T targets of the L1 standard version
_QUERIES = 5000
_P_INIT = 0.8
_EOT_SAMPLES = 20
_RANDOMIZED_TOLERANCE = 1e-4  # official check_randomized: L2 distance of normalised logits
_SOFTMAX_TOLERANCE = 1e-5  # official check_range_output


class AutoAttackResult(NamedTuple):
  """Per-example outcome of :func:`autoattack`."""
  inputs: Array  # [B, ...] the adversarial point where one was found, else x
  robust: Array  # [B] bool: correct at x and at every attack's point
  broken_by: Array  # [B] int32: index into attack_names; ROBUST (-1); CLEAN_MISCLASSIFIED (-2)
  attack_names: tuple[str, ...]  # the attacks run, in order
  flags: dict[str, int]  # official checks -> number of examples flagged


def ensemble_settings(version: str, p: float = math.inf) -> dict[str, dict[str, Any]]:
  """Keyword settings of every attack under ``version``, as the official ensemble runs it.

  The reference code (fra31/auto-attack, ``AutoAttack.set_version``) configures four
  objects, and an attack list only picks which of them run: ``apgd-ce`` and ``apgd-dlr``
  are one APGD object (only the loss differs), ``fab`` and ``fab-t`` one FAB object
  (``fab-t`` always runs it with 1 restart), plus APGD-T and Square. An attack outside a
  version's own list therefore gets what its object holds in that version, which is
  also what :func:`autoattack` with ``attacks=[name]`` uses:

  - standard: APGD 1 restart (L1: 5 restarts and the ``3ε, 2ε, ε`` schedule, for
    apgd-ce and apgd-dlr alike), APGD-T 9 targets (L1: 5, with the schedule), FAB 1
    restart, FAB-T 9 targets;
  - plus: APGD 5 restarts, FAB 5 restarts, APGD-T and FAB-T 9 targets, 1 restart;
  - rand: APGD 1 restart and 20 EoT samples; the objects the version does not touch
    keep their constructor values (APGD-T 1 restart, 9 targets, no EoT; FAB 5 restarts);
  - everywhere: 100 iterations, Square 5000 queries, ``p_init = 0.8``, 1 restart and
    the raw window schedule (``resc_schedule=False``).

  Args:
    version: ``'standard'``, ``'plus'`` or ``'rand'``.
    p: the norm (1, 2 or inf); only L1's standard version differs.

  Returns:
    ``{name: settings}`` for every name in :data:`AUTOATTACK_ATTACKS`: APGD's ``loss,
    steps, restarts, eot_samples, decreasing_eps`` (+ ``num_targets`` for apgd-t),
    FAB's ``steps, restarts`` (+ ``num_targets``), Square's ``queries, p_init,
    restarts, rescale_schedule``.
  """
  _checks.check_choice(version, 'version', AUTOATTACK_VERSIONS)
  l1_standard = version == 'standard' and float(p) == 1.0
  apgd = dict(steps=_STEPS, restarts={'standard': 1, 'plus': 5, 'rand': 1}[version],
              eot_samples=_EOT_SAMPLES if version == 'rand' else 1, decreasing_eps=False)
  if l1_standard:
    apgd.update(restarts=_L1_RESTARTS, decreasing_eps=True)
  fab_restarts = {'standard': 1, 'plus': 5, 'rand': 5}[version]
  return {
      'apgd-ce': dict(apgd, loss='ce'),
      'apgd-dlr': dict(apgd, loss='dlr'),
      'apgd-t': dict(loss='dlr-targeted', steps=_STEPS, restarts=1,
                     num_targets=_L1_NUM_TARGETS if l1_standard else _NUM_TARGETS,
                     eot_samples=1, decreasing_eps=l1_standard),
      'fab': dict(steps=_STEPS, restarts=fab_restarts),
      'fab-t': dict(steps=_STEPS, restarts=1, num_targets=_NUM_TARGETS),
      'square': dict(queries=_QUERIES, p_init=_P_INIT, restarts=1, rescale_schedule=False),
  }


def check_attacks(attacks: Sequence[str] | None, version: str) -> tuple[str, ...]:
  """The attack list: the version's, or ``attacks`` validated (known names, no repeats)."""
  _checks.check_choice(version, 'version', AUTOATTACK_VERSIONS)
  if attacks is None:
    return _VERSION_ATTACKS[version]
  if isinstance(attacks, str) or not isinstance(attacks, Sequence) or not attacks:
    raise ValueError(f'attacks must be a non-empty list of attack names; valid names: '
                     f'{", ".join(map(repr, AUTOATTACK_ATTACKS))}, got {attacks!r}')
  for name in attacks:
    _checks.check_choice(name, 'attack', AUTOATTACK_ATTACKS)
  if len(set(attacks)) != len(attacks):
    raise ValueError(f'attacks must not repeat a name, got {list(attacks)!r}')
  return tuple(attacks)


def check_norm(p: float, names: Sequence[str]) -> float:
  """Returns p as a float, raising unless the ensemble supports it (1, 2 or inf)."""
  return _checks.check_supported_p(p, apgd_lib.NORMS,
                                   f'autoattack (attacks {", ".join(names)})')


def _check_classes(names: Sequence[str], num_classes: int) -> None:
  need = {'apgd-dlr': 3, 'apgd-t': 4}
  for name in names:
    if num_classes < need.get(name, 2):
      raise ValueError(
          f'attack {name!r} needs a model with at least {need[name]} classes, got K = '
          f'{num_classes}; pass attacks= without it (e.g. attacks=[\'apgd-ce\', '
          f'\'square\'] for a {num_classes}-class model)')


def check_inputs(names: Sequence[str], *, num_classes: int,
                 input_shape: Sequence[int]) -> None:
  """Raises unless the attacks ``names`` can run on inputs ``[B, ...]`` of a K-class model
  (APGD-DLR needs K >= 3, APGD-T K >= 4; Square needs inputs of rank 2 to 4)."""
  _check_classes(names, num_classes)
  if 'square' in names and len(input_shape) not in (2, 3, 4):
    raise ValueError(f'attack \'square\' needs images [B, H, W, C] ([B, H, W] or [B, D] '
                     f'are viewed as one-channel images), got inputs of shape '
                     f'{tuple(input_shape)}; pass attacks= without \'square\'')



def _external(name: str):
  """The Square / FAB entry point of ``name``.

  Each returns ``x_adv`` from ``fn(logits_fn, params, batch, *, rng, eps, p, bounds,
  example_index, **settings)``; ``example_index [n]`` (the rows' indices in the full
  batch) keys Square's random draws per example, so a sub-batch keeps each example's run.
  """
  if name == 'square':

    def square(*args, example_index, **kwargs):
      return square_lib.run(*args, example_index=example_index, **kwargs).inputs

    return square
  chosen = fab_lib.fab_targeted if name == 'fab-t' else fab_lib.fab

  def run_fab(*args, example_index, **kwargs):
    del example_index  # FAB keys its draws by batch position
    return chosen(*args, **kwargs)

  return run_fab


def _stages(name, cfg, *, num_classes, p, bounds, logits_fn, unroll, stochastic):
  """The runs of one attack, each re-run only on the points still robust.

  Returns a list of ``stage(params, x [n, ...], y [n], idx [n], eps [n], key) -> x_adv``
  where ``idx`` are the examples' indices in the full batch (APGD keys its random starts
  by them).
  """
  if name.startswith('apgd'):
    loss = cfg['loss']
    ranks = range(min(cfg['num_targets'], num_classes - 1)) if loss == 'dlr-targeted' else [0]
    out = []
    for t in ranks:
      for r in range(cfg['restarts']):
        def stage(params, x, y, idx, eps, key, t=t, r=r):
          stage_key = jax.random.fold_in(jax.random.fold_in(key, t), r)
          keys = jax.vmap(lambda i: jax.random.fold_in(stage_key, i))(jnp.asarray(idx))
          return apgd_lib.run(
              params, x, y, keys, eps, jnp.asarray(t, jnp.int32), bounds,
              logits_fn=logits_fn, p=p, steps=cfg['steps'], loss=loss, unroll=unroll,
              eot_samples=cfg['eot_samples'] if stochastic else 1,
              stochastic=stochastic, decreasing_eps=cfg['decreasing_eps'])[0]
        out.append(stage)
    return out
  fn = _external(name)
  if 'num_targets' in cfg:
    cfg = dict(cfg, num_targets=min(cfg['num_targets'], num_classes - 1))

  def external(params, x, y, idx, eps, key):
    radius = eps[0] if bool(np.all(np.asarray(eps) == np.asarray(eps)[0])) else eps
    return fn(logits_fn, params, (x, y), rng=key, eps=radius, p=p, bounds=bounds,
              example_index=jnp.asarray(idx, jnp.int32), **cfg)

  return [external]


@jax.jit
def _predict(logits: Array) -> Array:
  return jnp.argmax(logits, axis=-1)


def _flag_checks(logits_fn, params, inputs, labels, correct, num_classes, rng,
                 stochastic) -> dict[str, int]:
  """The reference code's checks that need no attack: randomness, softmax, zero gradient."""
  call = ((lambda x, k: logits_fn(params, x, rng=k)) if stochastic
          else (lambda x, k: logits_fn(params, x)))
  # Two eager passes: a model whose output varies between calls is randomized.
  first = jnp.asarray(call(inputs, jax.random.fold_in(rng, 0)))
  second = jnp.asarray(call(inputs, jax.random.fold_in(rng, 1)))
  unit = lambda z: z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-10)
  differs = ((jnp.argmax(first, -1) != jnp.argmax(second, -1))
             | (jnp.linalg.norm(unit(first) - unit(second), axis=-1)
                > _RANDOMIZED_TOLERANCE))
  softmax = ((jnp.max(first, -1) < 1 + _SOFTMAX_TOLERANCE)
             & (jnp.min(first, -1) > -_SOFTMAX_TOLERANCE)
             & (jnp.abs(jnp.sum(first, -1) - 1) < _SOFTMAX_TOLERANCE))
  zero = _zero_gradient(params, inputs, labels, jax.random.fold_in(rng, 2),
                        logits_fn=logits_fn, num_classes=num_classes, stochastic=stochastic)
  return {'randomized': int(jnp.sum(differs)), 'softmax_output': int(jnp.sum(softmax)),
          'zero_gradient': int(jnp.sum(zero & correct))}


@_common.compile_static(('logits_fn', 'num_classes', 'stochastic'))
def _zero_gradient(params, inputs, labels, rng, *, logits_fn, num_classes, stochastic):
  """``[B]`` bool: the input gradient of the DLR loss (margin if K = 2) is exactly 0."""

  def total(x):
    logits = logits_fn(params, x, rng=rng) if stochastic else logits_fn(params, x)
    if num_classes >= 3:
      return jnp.sum(apgd_lib.dlr_loss(logits, labels))
    return -jnp.sum(losses_lib.margin(logits, labels))

  grad = jax.grad(total)(inputs)
  return jnp.all(jnp.reshape(grad == 0, (inputs.shape[0], -1)), axis=1)


def autoattack(logits_fn: LogitsFn, params: Params, batch: Batch, *, rng: PRNGKey, eps,
               p: float = math.inf, version: str = 'standard',
               attacks: Sequence[str] | None = None,
               bounds: Bounds | None = DEFAULT_BOUNDS) -> AutoAttackResult:
  """AutoAttack (Croce & Hein 2020): the pointwise worst case over an attack ensemble.

  Each attack runs only on the examples still robust; an example broken by attack
  ``i`` keeps that attack's point and ``broken_by = i``. Attack ``name`` uses the key
  ``fold_in(rng, AUTOATTACK_ATTACKS.index(name))`` whatever its position, so the
  ensemble equals, example by example, the worst case of its attacks run alone
  (``attacks=[name]``) for APGD and Square, whose random draws are keyed per example
  (FAB's are keyed by batch position, so a FAB run on a sub-batch may differ).

  Args:
    logits_fn: ``(params, inputs [B, ...]) -> logits [B, K]``. For ``version='rand'``
      a stochastic model takes an optional ``rng`` keyword (``logits_fn(params, x,
      rng=key)``) and gets fresh keys; a model without it is deterministic and EoT is
      skipped (its 20 samples would be identical).
    params: model parameters.
    batch: ``(inputs [B, ...] in bounds, labels [B] int in [0, K))``. Square acts on
      images ``[B, H, W, C]`` (``[B, H, W]`` and ``[B, D]`` are viewed as one channel).
    rng: key; results are deterministic given it.
    eps: radius, scalar or ``[B]``, ``>= 0``.
    p: 1, 2 or inf (L1 uses the reference code's L1 settings, see the module docstring).
    version: ``'standard'``, ``'plus'`` or ``'rand'`` (see the module docstring).
    attacks: a custom list of names from :data:`AUTOATTACK_ATTACKS`, run in that order
      with the version's hyperparameters; None runs the version's list.
    bounds: input box ``(low, high)`` or None.

  Returns:
    :class:`AutoAttackResult` with ``flags``, the reference code's checks, as counts of
    examples: ``'square_improved'`` (broken by Square after every gradient attack
    before it missed them: a sign of gradient masking), ``'zero_gradient'``
    (clean-correct examples whose DLR input gradient at x is exactly zero),
    ``'randomized'`` (two forward passes disagree: use ``version='rand'``) and
    ``'softmax_output'`` (outputs look like probabilities, not logits).

  Raises:
    ValueError (before anything compiles): unknown ``version`` or attack name (the
      message lists the valid ones), ``p`` not 1, 2 or inf, ``eps < 0``, inputs outside
      ``bounds``, a malformed batch, or an attack the number of classes rules out
      (APGD-DLR needs K >= 3, APGD-T K >= 4).
  """
  names = check_attacks(attacks, version)
  p = check_norm(p, names)
  bounds = _checks.check_bounds(bounds)
  inputs, labels, num_classes = _common.check_batch(logits_fn, params, batch)
  batch_size = inputs.shape[0]
  _checks.check_radius(eps, batch_size)
  _checks.check_in_bounds(inputs, bounds)
  check_inputs(names, num_classes=num_classes, input_shape=jnp.shape(inputs))
  cfgs = ensemble_settings(version, p)
  stochastic = apgd_lib.accepts_rng(logits_fn)
  unroll = apgd_lib.resolve_unroll('auto', logits_fn, params, inputs, stochastic)
  inputs = jnp.asarray(inputs)
  labels_np = np.asarray(labels)
  eps_np = np.broadcast_to(np.asarray(eps, np.float32), (batch_size,))
  model_key = jax.random.fold_in(rng, len(AUTOATTACK_ATTACKS))

  predict = jax.jit(lambda x: _predict(
      logits_fn(params, x, rng=model_key) if stochastic else logits_fn(params, x)))
  correct = np.asarray(predict(inputs)) == labels_np
  robust = correct.copy()
  broken_by = np.where(correct, ROBUST, CLEAN_MISCLASSIFIED).astype(np.int32)
  x_out = np.array(inputs)
  flags = _flag_checks(logits_fn, params, inputs, jnp.asarray(labels), jnp.asarray(correct),
                       num_classes, jax.random.fold_in(rng, len(AUTOATTACK_ATTACKS) + 1),
                       stochastic)
  square_broke = 0
  for position, name in enumerate(names):
    key = jax.random.fold_in(rng, AUTOATTACK_ATTACKS.index(name))
    stages = _stages(name, cfgs[name], num_classes=num_classes, p=p, bounds=bounds,
                     logits_fn=logits_fn, unroll=unroll, stochastic=stochastic)
    for stage in stages:
      idx = np.flatnonzero(robust)
      if not idx.size:
        break
      # Finer than Square's in-run buckets: a stage's shape compiles once per attack, and
      # its padding is paid by every iteration (docs/design.md, "Evaluation").
      size = _common.bucket_size(idx.size, batch_size, per_octave=8)
      padded = np.concatenate([idx, np.full(size - idx.size, idx[0])])
      x_sub = inputs[padded]
      y_sub = jnp.asarray(labels_np[padded])
      x_adv = stage(params, x_sub, y_sub, padded, jnp.asarray(eps_np[padded]), key)
      fooled = np.asarray(predict(x_adv)) != labels_np[padded]
      fooled[idx.size:] = False
      hit = padded[fooled]
      robust[hit] = False
      broken_by[hit] = position
      x_out[hit] = np.asarray(x_adv)[fooled]
    if name == 'square' and any(n in _GRADIENT_ATTACKS for n in names[:position]):
      square_broke = int(np.sum(broken_by == position))
  flags['square_improved'] = square_broke
  return AutoAttackResult(inputs=jnp.asarray(x_out), robust=jnp.asarray(robust),
                          broken_by=jnp.asarray(broken_by), attack_names=names,
                          flags=dict(sorted(flags.items())))
