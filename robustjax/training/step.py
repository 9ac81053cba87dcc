"""The train state, the objective built from the config, and the sharded train step.

One step computes ``nominal_weight * CE(x) + sum_i weight_i * mean(penalty_i)``; a term
with ``grad_clip`` gets its own backward pass so its parameter gradient can be clipped
(SOAR app. C) before being added. Penalties see a ``loss_fn``/``logits_fn`` built with
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

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from robustjax import losses
from robustjax import models
from robustjax.training import controllers as controllers_lib


class TrainState(NamedTuple):
  """Everything a step reads and writes; a pytree, donated to the jitted step."""
  step: jax.Array  # [] int32 optimizer steps taken
  params: Any  # model parameters
  batch_stats: Any  # BatchNorm running averages ({} without BatchNorm)
  opt_state: Any  # optax state
  controller: Any  # adaptive-weight controller state (controllers.ControllerState)
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
  eps_ramp_steps: int  # 0 = no ramp
  aux_loss: str  # '' = none
  aux_loss_weight: float


def _tuplify(value):
  if isinstance(value, list):
    return tuple(_tuplify(v) for v in value)
  return value


def resolve_terms(config) -> tuple[Term, ...]:
  """The config's regularizer terms as static :class:`Term` tuples, in label order."""
  from robustjax.training import schema  # pylint: disable=g-import-not-at-top
  regularizers = schema.load_regularizers()
  terms = []
  for label in sorted(config.regularizers.keys()):
    t = config.regularizers[label]
    penalty = regularizers.get(t['name'])
    hparams = {k: _tuplify(v) for k, v in dict(t.get('hparams', {}) or {}).items()}
    terms.append(Term(label, t['name'], penalty, penalty.takes, float(t['weight']),
                      hparams, float(t.get('grad_clip', 0.0)),
                      int(t.get('eps_ramp_steps', 0)), t.get('aux_loss', ''),
                      float(t.get('aux_loss_weight', 1.0))))
  return tuple(terms)


def ramp(step: jax.Array, ramp_steps: int) -> jax.Array:
  """Linear ramp from 0 at step 0 to 1 at ``ramp_steps`` (LLR's ε schedule)."""
  if not ramp_steps:
    return jnp.ones([], jnp.float32)
  return jnp.clip(step.astype(jnp.float32) / ramp_steps, 0.0, 1.0)


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
               include_nominal, controlled, stop_gradient_stats, share_nominal):
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
  """
  x, y = batch
  clean, logits_fn = models.bn_policy(model, params, batch_stats, x,
                                      stop_gradient_stats=stop_gradient_stats)
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  share = share_nominal and include_nominal and not jax.tree.leaves(clean.clean_stats)
  total = jnp.zeros([], jnp.float32)
  metrics = {}
  offered_loss = offered_logits = None
  for index, t in terms:
    hparams = dict(t.hparams)
    if t.eps_ramp_steps:
      hparams['eps'] = hparams['eps'] * ramp(step, t.eps_ramp_steps)
    fn = logits_fn if t.takes == 'logits_fn' else loss_fn
    values, aux = t.penalty(fn, params, (x, y), rng=jax.random.fold_in(rng, index),
                            **hparams)
    if share and offered_loss is None and offered_logits is None:
      offered_loss, offered_logits = _offered_nominal(t, aux, x.shape[0])
    value = jnp.mean(values)
    weight = t.weight * (psi if t.label == controlled else 1.0)
    total = total + weight * value
    metrics[t.label] = value
    if t.aux_loss:
      aux_value = jnp.mean(aux[t.aux_loss])
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


def make_train_step(*, model, terms: Sequence[Term], tx: optax.GradientTransformation,
                    schedule: optax.Schedule, nominal_weight: float,
                    controller: controllers_lib.Controller | None = None,
                    controlled_term: str = '', stop_gradient_stats: bool = False,
                    share_nominal: bool = True):
  """Builds ``train_step(state, batch) -> (state, metrics)`` (not yet jitted).

  Args:
    model: the Flax module.
    terms: resolved regularizer terms.
    tx: optax transformation.
    schedule: learning-rate schedule (for the ``lr`` metric).
    nominal_weight: weight of the clean cross-entropy.
    controller: adaptive weight controller of ``controlled_term`` (Woods eq. 15).
    controlled_term: label of the term whose weight is multiplied by the controller's ψ.
    stop_gradient_stats: BatchNorm policy option, see :func:`models.bn_policy`.
    share_nominal: take the nominal cross-entropy from an unclipped term's clean loss
      (``aux['loss']``) or clean logits (``aux['logits']``) instead of a separate clean
      pass, for models without BatchNorm (same value and gradient, one clean
      forward/backward fewer); False always uses the clean pass.

  Returns:
    A pure function; ``metrics`` holds scalars: loss, nominal, accuracy, one entry per
    term label, per-term gradient norms for clipped terms, grad_norm, lr, psi.
  """
  indexed = list(enumerate(terms))
  shared = [(i, t) for i, t in indexed if not t.grad_clip]
  clipped = [(i, t) for i, t in indexed if t.grad_clip]
  common = dict(model=model, nominal_weight=nominal_weight,
                controlled=controlled_term if controller is not None else '',
                stop_gradient_stats=stop_gradient_stats, share_nominal=share_nominal)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    psi = (controller.value(state.controller) if controller is not None
           else jnp.ones([], jnp.float32))
    args = (state.batch_stats, batch, rng, state.step, psi)
    main = jax.value_and_grad(_objective, has_aux=True)
    (loss, (batch_stats, metrics)), grads = main(
        state.params, *args, terms=shared, include_nominal=True, **common)
    for i, t in clipped:
      (term_loss, (_, term_metrics)), term_grads = main(
          state.params, *args, terms=[(i, t)], include_nominal=False, **common)
      norm = optax.tree.norm(term_grads)
      scale = jnp.minimum(1.0, t.grad_clip / jnp.maximum(norm, 1e-12))
      grads = jax.tree.map(lambda g, h: g + scale * h, grads, term_grads)
      loss = loss + term_loss
      metrics.update(term_metrics)
      metrics[f'{t.label}/grad_norm'] = norm
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ctl_state = state.controller
    if controller is not None:
      ctl_state = controller.update(ctl_state, metrics['nominal'])
    metrics.update(loss=loss, grad_norm=optax.tree.norm(grads),
                   lr=jnp.asarray(schedule(state.step), jnp.float32), psi=psi)
    new_state = TrainState(state.step + 1, params, batch_stats, opt_state, ctl_state,
                           state.rng)
    return new_state, metrics

  return train_step


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
    ctl = controller.init() if controller is not None else controllers_lib.empty_state()
    return TrainState(jnp.zeros([], jnp.int32), p, bs, tx.init(p), ctl, run_key)

  return jax.jit(init_fn, out_shardings=replicated(mesh))()
