"""The train state, the objective built from the config, and the sharded train step.

One step computes ``nominal_weight * CE(x) + sum_i weight_i * mean(penalty_i)``; a term
with ``grad_clip`` gets its own backward pass so its parameter gradient can be clipped
(SOAR app. C) before being added. Only the penalty is clipped: a term's ``aux_loss``
(SOAR's ``ℓ(x')``) gets a separate, unclipped gradient, so the step is
``∇ℓ(x') + clip(∇λR)`` as SOAR's appendix C prescribes. Any hyperparameter of a term
can follow a schedule (``schedules``: a linear or cosine ramp over steps, e.g. CURE's h,
LLR's ε). An adaptive controller (Woods et al. eq. 15, ELLE-A) sets the ``psi`` hyperparameter
of its term when the penalty has one (the Lipschitz penalty: ψ scales eq. 9 only, never
the output zeroing of eq. 12), otherwise the term's weight; it is fed the classification
loss of the batch being trained (see :func:`controller_loss`). A term with
``inputs_from`` is evaluated at another term's attack points (``aux['x_adv']``), e.g.
Woods et al.'s eq. 9 on the half-adversarial batch of their L2,min training. Penalties see a ``loss_fn``/``logits_fn`` built with
the clean-batch BatchNorm policy (LLR F.2), so per-example input gradients are exact.
Most penalties already compute the clean loss ``ℓ(x)`` (with ``∇ₓℓ(x)``) or the clean
logits; for models without BatchNorm the nominal CE is taken from there, so its backward
pass merges into the penalty's instead of being a second one (gradient_norm on the CNN:
~25% fewer flops per step).
The step is ``jax.jit``-ed over a ``('data',)`` mesh: the batch is sharded, the state
replicated and donated, and every random key is ``fold_in(state.rng, state.step)``, so a
run resumed from a checkpoint replays exactly the same randomness.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robustjax import losses
from robustjax import models
from robustjax.regularizers import controllers as controllers_lib
from robustjax.training import schema


class TrainState(NamedTuple):
  """Everything a step reads and writes; a pytree, donated to the jitted step."""
  step: jax.Array  # [] int32 optimizer steps taken
  params: Any  # model parameters
  batch_stats: Any  # BatchNorm running averages ({} without BatchNorm)
  opt_state: Any  # optax state
  controller: Any  # controller state (regularizers.controllers; EmptyState without one)
  rng: jax.Array  # [2] uint32 base key; the key of step s is fold_in(rng, s)


class Term(NamedTuple):
  """One regularizer term, resolved from ``config.regularizers.<label>`` (static)."""
  label: str
  name: str
  penalty: Callable[..., Any]
  takes: str  # 'loss_fn' or 'logits_fn'
  weight: float
  hparams: dict
  grad_clip: float  # 0 = no per-term clipping
  aux_loss: str  # '' = none
  aux_loss_weight: float
  schedules: tuple = ()  # ((hparam, (kind, steps, init, begin)), ...), see schedule_value
  inputs_from: str = ''  # label of the term whose aux['x_adv'] this term is evaluated at


SCHEDULE_KINDS = schema.SCHEDULE_KINDS
# Penalties whose values are the classification loss of (part of) the trained batch: the
# adaptive controller's "auto" input averages them with the nominal CE (Woods eq. 15).
CLASSIFICATION_TERMS = ('adversarial', 'adversarial_l2min', 'fgsm', 'n_fgsm')


def resolve_terms(config) -> tuple[Term, ...]:
  """The config's regularizer terms as static :class:`Term` tuples, in label order."""
  from robustjax.training import schema  # pylint: disable=g-import-not-at-top
  regularizers = schema.load_regularizers()
  terms = []
  for label in sorted(config.regularizers.keys()):
    t = config.regularizers[label]
    penalty = regularizers.get(t['name'])
    hparams = {k: schema.tuplify(v) for k, v in dict(t.get('hparams', {}) or {}).items()}
    schedules = tuple(sorted(
        (name, (str(spec.get('kind', 'linear')), int(spec['steps']),
                float(spec.get('init', 0.0)), int(spec.get('begin', 0))))
        for name, spec in schema.term_schedules(t).items()))
    terms.append(Term(label, t['name'], penalty, penalty.takes, float(t['weight']),
                      hparams, float(t.get('grad_clip', 0.0)), t.get('aux_loss', ''),
                      float(t.get('aux_loss_weight', 1.0)), schedules,
                      str(t.get('inputs_from', '') or '')))
  return tuple(terms)


def ramp(step: jax.Array, ramp_steps: int) -> jax.Array:
  """Linear ramp from 0 at step 0 to 1 at ``ramp_steps`` (LLR's ε schedule)."""
  if not ramp_steps:
    return jnp.ones([], jnp.float32)
  return schedule_value(step, 1.0, steps=ramp_steps)


def schedule_value(step: jax.Array, final, *, kind: str = 'linear', steps: int,
                   init: float = 0.0, begin: int = 0) -> jax.Array:
  """A hyperparameter ramped from ``init`` to ``final`` over ``steps`` optimizer steps.

  The value is ``init`` up to step ``begin``, then moves to ``final`` over ``steps``
  steps, linearly (``'linear'``) or along a half cosine (``'cosine'``), and stays at
  ``final``. ``kind='linear', init=0, begin=0`` is :func:`ramp` (LLR's ε schedule).

  Args:
    step: ``[]`` int, the optimizer step.
    final: the configured value (scalar or array).
    kind: ``'linear'`` or ``'cosine'``.
    steps: ramp length (>= 1).
    init: start value.
    begin: steps held at ``init`` before the ramp.

  Returns:
    The scheduled value, of the broadcast shape of ``final``.
  """
  frac = jnp.clip((step.astype(jnp.float32) - begin) / max(int(steps), 1), 0.0, 1.0)
  if kind == 'cosine':
    frac = 0.5 * (1.0 - jnp.cos(jnp.pi * frac))
  elif kind != 'linear':
    raise ValueError(f'unknown schedule kind {kind!r}; valid choices: {SCHEDULE_KINDS}')
  final = jnp.asarray(final, jnp.float32)
  return init + (final - init) * frac


def scheduled_hparams(t: Term, step: jax.Array) -> dict:
  """The term's hyperparameters at ``step``: its schedules applied."""
  hparams = dict(t.hparams)
  for name, (kind, steps, init, begin) in t.schedules:
    hparams[name] = schedule_value(step, hparams[name], kind=kind, steps=steps,
                                   init=init, begin=begin)
  return hparams


@functools.lru_cache(maxsize=None)
def _takes_keyword(penalty, name: str) -> bool:
  try:
    params = inspect.signature(inspect.unwrap(penalty)).parameters
  except (TypeError, ValueError):
    return False
  return name in params and params[name].kind == inspect.Parameter.KEYWORD_ONLY


def controller_loss(metrics: Mapping[str, jax.Array], terms: Sequence[Term], *,
                    nominal_weight: float, reads: str = 'auto') -> jax.Array:
  """The training loss ``L_train,b`` an adaptive controller is fed (Woods et al. eq. 15).

  Eq. 15 steers the loss of the batch being trained. ``reads='auto'`` (default) takes the
  objective's classification losses, i.e. the nominal CE and every adversarial-training
  term (:data:`CLASSIFICATION_TERMS`), averaged with their weights: with Woods et al.'s
  half-half L2,min training (nominal weight 0) that is the CE on the half-adversarial
  batch, as in the authors' code; without adversarial training it is the clean CE.
  ``'nominal'`` forces the clean CE, a term label that term's mean value.
  """
  if reads == 'nominal':
    return metrics['nominal']
  if reads != 'auto':
    return metrics[reads]
  parts = [(nominal_weight, metrics['nominal'])] if nominal_weight else []
  parts += [(t.weight, metrics[t.label]) for t in terms
            if t.name in CLASSIFICATION_TERMS and t.weight]
  total = sum(w for w, _ in parts)
  if not parts or total <= 0:
    return metrics['nominal']
  return sum(w * v for w, v in parts) / total


def controller_from_config(ctl) -> controllers_lib.Controller | None:
  """The controller named by ``config.controller`` (None for ``'none'``)."""
  settings = {
      'adaptive_psi': lambda: dict(target_loss=float(ctl.target_loss),
                                   initial_psi=float(ctl.k0), gain=float(ctl.k),
                                   eps_better=float(ctl.eps_better),
                                   eps_worse=float(ctl.eps_worse)),
      'elle_a': lambda: dict(lam_max=float(ctl.lam_max), lam_min=float(ctl.lam_min),
                             decay=float(ctl.decay), sensitivity=float(ctl.sensitivity),
                             min_history=int(ctl.min_history)),
  }
  if ctl.name not in settings:
    return controllers_lib.create(ctl.name)
  return controllers_lib.create(ctl.name, **settings[ctl.name]())


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D ``('data',)`` mesh over ``devices`` (default: every device of every host)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the mesh's ``'data'`` axis."""
  return NamedSharding(mesh, PartitionSpec('data'))


def global_batch(local_batch, mesh: Mesh):
  """Assembles each host's local numpy batch into one batch-sharded global array."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local_batch)


def _offered_nominal(term: Term, aux, batch_size: int):
  """``(per-example clean CE [B] or None, clean logits [B, K] or None)`` from a term's aux.

  The contract (docs/design.md, the regularizers' docstrings): ``aux['loss']`` of a
  loss-taking penalty is ``ℓ(x)`` per example, computed with the ``loss_fn`` it was
  handed and differentiable w.r.t. params (gradient_norm, cure, llr, scorpio compute it
  in the pass that also gives ``∇ₓℓ(x)``); ``aux['logits']`` of a logits-taking penalty
  are the clean logits from its ``logits_fn`` (lipschitz, trades). SOAR's
  ``loss_at_start`` is ``ℓ(x')`` at another point and is never used.
  """
  if not isinstance(aux, Mapping):
    return None, None
  if term.takes == 'logits_fn':
    logits = aux.get('logits')
    if logits is not None and jnp.ndim(logits) == 2 and jnp.shape(logits)[0] == batch_size:
      return None, logits
  else:
    loss = aux.get('loss')
    if loss is not None and jnp.shape(loss) == (batch_size,):
      return loss, None
  return None, None


def _objective(params, batch_stats, batch, rng, step, psi, *, model, terms, nominal_weight,
               include_nominal, controlled, stop_gradient_stats, share_nominal,
               part='all'):
  """Scalar objective and ``(new batch stats, metrics)`` for a subset of terms.

  With ``share_nominal`` the nominal cross-entropy is taken from a term's clean loss or
  logits (:func:`_offered_nominal`) when that is the same function of params as the
  clean pass's: its gradient then rides on the penalty's backward pass instead of a
  separate clean backward (docs/design.md: share backward passes; XLA merges the two
  identical clean forwards but not the backwards). That holds for models without
  BatchNorm. With BatchNorm the clean train-mode pass stays: it produces the new running
  averages and the clean statistics the penalties normalise with. Sharing would be exact
  without ``stop_gradient_stats`` (the frozen-statistics loss has the train-mode
  params-gradient, see :func:`models.bn_policy`) but saves nothing, since the clean
  pass's backward is still needed for the gradient through the statistics (0.2% of the
  flops of a small ResNet's gradient_norm step); with ``stop_gradient_stats`` it would
  drop the nominal's gradient through the statistics. So BatchNorm models always take
  the nominal from the clean pass.

  ``part`` selects what of each term enters the returned objective: ``'all'`` (the
  weighted penalty and its ``aux_loss``), ``'penalty'`` (without the ``aux_loss``) or
  ``'aux'`` (only the ``aux_loss``), so a clipped term's penalty gradient can be clipped
  alone (SOAR app. C). Terms are evaluated in the given order; a term with
  ``inputs_from`` is evaluated at the ``aux['x_adv']`` of that earlier term.
  """
  x, y = batch
  clean, logits_fn = models.bn_policy(model, params, batch_stats, x,
                                      stop_gradient_stats=stop_gradient_stats)
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  share = share_nominal and include_nominal and not jax.tree.leaves(clean.clean_stats)
  total = jnp.zeros([], jnp.float32)
  metrics = {}
  offered_loss = offered_logits = None
  attack_points = {}
  for index, t in terms:
    hparams = scheduled_hparams(t, step)
    weight = t.weight
    if t.label == controlled:
      if _takes_keyword(t.penalty, 'psi'):  # ψ scales eq. 9 only, not output zeroing
        hparams['psi'] = psi * hparams.get('psi', 1.0)
      else:
        weight = weight * psi
    fn = logits_fn if t.takes == 'logits_fn' else loss_fn
    inputs = x
    if t.inputs_from:
      if t.inputs_from not in attack_points:
        raise ValueError(f'regularizers.{t.label}.inputs_from: term {t.inputs_from!r} '
                         f'must be evaluated first in the same pass and return '
                         f"aux['x_adv']")
      inputs = attack_points[t.inputs_from]
    values, aux = t.penalty(fn, params, (inputs, y), rng=jax.random.fold_in(rng, index),
                            **hparams)
    if isinstance(aux, Mapping) and 'x_adv' in aux:
      attack_points[t.label] = jax.lax.stop_gradient(aux['x_adv'])
    if (share and not t.inputs_from and offered_loss is None
        and offered_logits is None):
      offered_loss, offered_logits = _offered_nominal(t, aux, x.shape[0])
    value = jnp.mean(values)
    if part != 'aux':
      total = total + weight * value
    metrics[t.label] = value
    if t.aux_loss:
      aux_value = jnp.mean(aux[t.aux_loss])
      if part != 'penalty':
        total = total + t.aux_loss_weight * aux_value
      metrics[f'{t.label}/{t.aux_loss}'] = aux_value
  if include_nominal:
    if offered_loss is not None:
      per_example = offered_loss
      # Accuracy needs logits; a forward pass without gradient, identical to the one
      # inside the penalty's loss, which XLA merges with it (common subexpressions).
      logits = jax.lax.stop_gradient(clean.logits)
    else:
      logits = offered_logits if offered_logits is not None else clean.logits
      per_example = losses.cross_entropy(logits, y)
    nominal = jnp.mean(per_example)
    if nominal_weight:  # a zero weight adds no backward pass through the clean loss
      total = total + nominal_weight * nominal
    metrics['nominal'] = nominal
    metrics['accuracy'] = jnp.mean(jnp.argmax(logits, -1) == y)
  return total, (clean.batch_stats, metrics)


def _evaluation_order(indexed):
  """Terms with ``inputs_from`` after the term they read from (otherwise label order)."""
  ordered, placed, pending = [], set(), list(indexed)
  while pending:
    ready = [(i, t) for i, t in pending
             if not t.inputs_from or t.inputs_from in placed]
    if not ready:
      labels = ', '.join(f'{t.label} <- {t.inputs_from}' for _, t in pending)
      raise ValueError(f'regularizers: inputs_from must name another unclipped term, '
                       f'without cycles; got {labels}')
    for item in ready:
      ordered.append(item)
      placed.add(item[1].label)
      pending.remove(item)
  return ordered


def make_train_step(*, model, terms: Sequence[Term], tx: optax.GradientTransformation,
                    schedule: optax.Schedule, nominal_weight: float,
                    controller: controllers_lib.Controller | None = None,
                    controlled_term: str = '', controller_input: str = 'auto',
                    stop_gradient_stats: bool = False, share_nominal: bool = True):
  """Builds ``train_step(state, batch) -> (state, metrics)`` (not yet jitted).

  Args:
    model: the Flax module.
    terms: resolved regularizer terms.
    tx: optax transformation.
    schedule: learning-rate schedule (for the ``lr`` metric).
    nominal_weight: weight of the clean cross-entropy.
    controller: a :class:`robustjax.regularizers.controllers.Controller` of
      ``controlled_term`` (Woods eq. 15, ELLE-A): its ``state.output`` is read before
      the step and ``update(controller_loss(...), state)`` is called after it.
    controller_input: what the controller is fed (:func:`controller_loss`):
      ``'auto'``, ``'nominal'`` or a term label (ELLE-A: the ELLE term's mean error).
    controlled_term: label of the term the controller's ψ scales: its ``psi``
      hyperparameter (multiplied by the configured ``psi``, default 1) when the penalty
      has one, otherwise its weight.
    stop_gradient_stats: BatchNorm policy option, see :func:`models.bn_policy`.
    share_nominal: take the nominal cross-entropy from an unclipped term's clean loss
      (``aux['loss']``) or clean logits (``aux['logits']``) instead of a separate clean
      pass, for models without BatchNorm (same value and gradient, one clean
      forward/backward fewer); False always uses the clean pass.

  Returns:
    A pure function; ``metrics`` holds scalars: loss, nominal, accuracy, one entry per
    term label, per-term gradient norms for clipped terms, grad_norm, lr, psi, and with
    a controller ``controller_loss`` (the loss it was fed).
  """
  indexed = list(enumerate(terms))
  shared = _evaluation_order([(i, t) for i, t in indexed if not t.grad_clip])
  clipped = [(i, t) for i, t in indexed if t.grad_clip]
  for _, t in clipped:
    if t.inputs_from or any(u.inputs_from == t.label for u in terms):
      raise ValueError(f'regularizers.{t.label}: a term with grad_clip cannot take or '
                       f'give inputs_from (it is evaluated in its own pass)')
  common = dict(model=model, nominal_weight=nominal_weight,
                controlled=controlled_term if controller is not None else '',
                stop_gradient_stats=stop_gradient_stats, share_nominal=share_nominal)
  reads = controller_input

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    psi = jnp.asarray(state.controller.output, jnp.float32)
    args = (state.batch_stats, batch, rng, state.step, psi)
    main = jax.value_and_grad(_objective, has_aux=True)
    (loss, (batch_stats, metrics)), grads = main(
        state.params, *args, terms=shared, include_nominal=True, **common)
    for i, t in clipped:
      # Only the penalty's gradient is clipped; the aux loss (SOAR's ℓ(x')) gets its own
      # unclipped backward pass (XLA shares the identical forward computations).
      (term_loss, (_, term_metrics)), term_grads = main(
          state.params, *args, terms=[(i, t)], include_nominal=False, part='penalty',
          **common)
      norm = optax.tree.norm(term_grads)
      scale = jnp.minimum(1.0, t.grad_clip / jnp.maximum(norm, 1e-12))
      grads = jax.tree.map(lambda g, h: g + scale * h, grads, term_grads)
      loss = loss + term_loss
      if t.aux_loss:
        (aux_loss, _), aux_grads = main(state.params, *args, terms=[(i, t)],
                                        include_nominal=False, part='aux', **common)
        grads = jax.tree.map(jnp.add, grads, aux_grads)
        loss = loss + aux_loss
      metrics.update(term_metrics)
      metrics[f'{t.label}/grad_norm'] = norm
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ctl_state = state.controller
    if controller is not None:
      ctl_loss = controller_loss(metrics, terms, nominal_weight=nominal_weight,
                                 reads=reads)
      _, ctl_state = controller.update(ctl_loss, ctl_state)
      metrics['controller_loss'] = ctl_loss
    metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                   lr=jnp.asarray(schedule(state.step), jnp.float32), psi=psi)
    new_state = TrainState(state.step + 1, params, batch_stats, opt_state, ctl_state,
                           state.rng)
    return new_state, metrics

  return train_step


def train_step_from_config(config, model, tx: optax.GradientTransformation,
                           schedule: optax.Schedule, **overrides):
  """:func:`make_train_step` of ``config`` (terms, nominal weight, controller, BatchNorm
  gradient); ``overrides``: keyword arguments of :func:`make_train_step` to replace."""
  kwargs = dict(
      model=model, terms=resolve_terms(config), tx=tx, schedule=schedule,
      nominal_weight=float(config.nominal_weight),
      controller=controller_from_config(config.controller),
      controlled_term=config.controller.term,
      controller_input=str(config.controller.get('loss', 'auto')),
      stop_gradient_stats=bool(config.bn.stop_gradient_stats))
  kwargs.update(overrides)
  return make_train_step(**kwargs)


def jit_train_step(train_step, mesh: Mesh):
  """``jax.jit`` with the state replicated and donated, the batch sharded on ``'data'``."""
  rep = replicated(mesh)
  return jax.jit(train_step, in_shardings=(rep, batch_sharded(mesh)),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def init_state(model, tx, *, rng: jax.Array, input_shape: Sequence[int], mesh: Mesh,
               controller: controllers_lib.Controller | None = None,
               params=None, batch_stats=None) -> TrainState:
  """Initialises the replicated :class:`TrainState` (optionally from given params).

  Parameter initialisation draws from an ``'rbg'`` key derived from ``rng``: XLA:CPU
  compiles threefry-based initialisers of a small CNN ~5x slower (8 s vs 1.6 s here).
  The step keys stay threefry, whose bits do not depend on how a batch is sharded.
  """
  run_key = jax.random.fold_in(rng, 1)
  init_key = jax.random.wrap_key_data(jnp.tile(jax.random.fold_in(rng, 0), 2), impl='rbg')

  def init_fn():
    variables = models.init(model, init_key, input_shape)
    p, rest = models.split_variables(variables)
    bs = rest.get('batch_stats', {})
    if params is not None:
      p = params
      bs = batch_stats if batch_stats is not None else bs
    ctl = (controller if controller is not None else controllers_lib.empty()).init()
    return TrainState(jnp.zeros([], jnp.int32), p, bs, tx.init(p), ctl, run_key)

  return jax.jit(init_fn, out_shardings=replicated(mesh))()
