"""The train state, the objective built from the config, and the sharded train step.

One step computes ``nominal_weight * CE(x) + sum_i weight_i * mean(penalty_i)``; a term
with ``grad_clip`` gets its own backward pass so its parameter gradient can be clipped
(SOAR app. C) before being added. Penalties see a ``loss_fn``/``logits_fn`` built with
the clean-batch BatchNorm policy (LLR F.2), so per-example input gradients are exact.
The step is ``jax.jit``-ed over a ``('data',)`` mesh: the batch is sharded, the state
replicated and donated, and every random key is ``fold_in(state.rng, state.step)``, so a
run resumed from a checkpoint replays exactly the same randomness.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

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


def _objective(params, batch_stats, batch, rng, step, psi, *, model, terms, nominal_weight,
               include_nominal, controlled, stop_gradient_stats):
  """Scalar objective and ``(new batch stats, metrics)`` for a subset of terms."""
  x, y = batch
  clean, logits_fn = models.bn_policy(model, params, batch_stats, x,
                                      stop_gradient_stats=stop_gradient_stats)
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  total = jnp.zeros([], jnp.float32)
  metrics = {}
  if include_nominal:
    nominal = jnp.mean(losses.cross_entropy(clean.logits, y))
    if nominal_weight:  # a zero weight adds no backward pass through the clean loss
      total = total + nominal_weight * nominal
    metrics['nominal'] = nominal
    metrics['accuracy'] = jnp.mean(jnp.argmax(clean.logits, -1) == y)
  for index, t in terms:
    hparams = dict(t.hparams)
    if t.eps_ramp_steps:
      hparams['eps'] = hparams['eps'] * ramp(step, t.eps_ramp_steps)
    fn = logits_fn if t.takes == 'logits_fn' else loss_fn
    values, aux = t.penalty(fn, params, (x, y), rng=jax.random.fold_in(rng, index),
                            **hparams)
    value = jnp.mean(values)
    weight = t.weight * (psi if t.label == controlled else 1.0)
    total = total + weight * value
    metrics[t.label] = value
    if t.aux_loss:
      aux_value = jnp.mean(aux[t.aux_loss])
      total = total + t.aux_loss_weight * aux_value
      metrics[f'{t.label}/{t.aux_loss}'] = aux_value
  return total, (clean.batch_stats, metrics)


def make_train_step(*, model, terms: Sequence[Term], tx: optax.GradientTransformation,
                    schedule: optax.Schedule, nominal_weight: float,
                    controller: controllers_lib.Controller | None = None,
                    controlled_term: str = '', stop_gradient_stats: bool = False):
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

  Returns:
    A pure function; ``metrics`` holds scalars: loss, nominal, accuracy, one entry per
    term label, per-term gradient norms for clipped terms, grad_norm, lr, psi.
  """
  indexed = list(enumerate(terms))
  shared = [(i, t) for i, t in indexed if not t.grad_clip]
  clipped = [(i, t) for i, t in indexed if t.grad_clip]
  common = dict(model=model, nominal_weight=nominal_weight,
                controlled=controlled_term if controller is not None else '',
                stop_gradient_stats=stop_gradient_stats)

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
