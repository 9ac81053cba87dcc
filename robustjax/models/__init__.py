"""Flax models by name, and the functional bridge from Flax modules to ``logits_fn``.

Everything outside this package sees a model as ``logits_fn(params, inputs) -> [B, K]``
on pixel-space inputs in ``[0, 1]`` (standardisation is inside each model). This module
builds those functions from Flax modules and owns the BatchNorm policy.

Building and evaluating::

  model = models.create('resnet44', num_classes=10, activation='hhrelu',
                        mean=info.mean, std=info.std)
  variables = models.init(model, rng, info.input_shape)   # {'params', 'batch_stats'?}
  params, rest = models.split_variables(variables)        # rest: {'batch_stats': ...}
  logits_fn = models.logits_fn_for(model, rest)           # running averages, for eval

BatchNorm policy in training (LLR supplement F.2): the clean batch is run once in train
mode, which normalises with its own statistics and updates the running averages; every
perturbed pass (attacks, regularizers, adversarial examples) then normalises with those
*clean-batch* statistics, so examples do not interact and per-example input gradients
from ``jax.grad`` of a summed loss are exact. Inside the differentiated loss of a train
step::

  def total_loss(params):
    clean, logits_fn = models.bn_policy(model, params, batch_stats, x)
    loss_fn = lambda p, xs, ys: cross_entropy(logits_fn(p, xs), ys)   # per-example [B]
    nominal = cross_entropy(clean.logits, y)                           # train-mode
    penalty, aux = regularizer(loss_fn, params, (x, y), rng=rng, **hparams)
    return jnp.mean(nominal + penalty), clean.batch_stats

  (loss, new_batch_stats), grads = jax.value_and_grad(total_loss, has_aux=True)(params)

``logits_fn(params, x)`` equals ``clean.logits`` in value and in its params-gradient (the
statistics are functions of ``params`` computed from the clean batch, so the gradient
through them is the usual BatchNorm one; pass ``stop_gradient_stats=True`` to cut it),
while its input-gradient treats the statistics as constants. Models without BatchNorm
(``'mlp'``, ``'cnn'``, ``'small_cnn'``) go through the same calls: their ``batch_stats`` and
``clean_stats`` are empty dicts and ``logits_fn`` is the plain model.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from robustjax.models import activations
from robustjax.models import conv
from robustjax.models import layers
from robustjax.models.activations import get_activation
from robustjax.models.activations import hhrelu
from robustjax.models.cnn import CNN
from robustjax.models.layers import BatchNorm
from robustjax.models.layers import CLEAN_STATS
from robustjax.models.layers import Standardize
from robustjax.models.mlp import MLP
from robustjax.models.resnet import PreActBlock
from robustjax.models.resnet import PreActResNet
from robustjax.models.resnet import resnet18
from robustjax.models.resnet import resnet44
from robustjax.models.small_cnn import SmallCNN
from robustjax.models.wide_resnet import WideResNet
from robustjax.models.wide_resnet import wrn28_8
from robustjax.models.wide_resnet import wrn28_10
from robustjax.models.wide_resnet import wrn40_8

Variables = Mapping[str, Any]
LogitsFn = Callable[[Any, jax.Array], jax.Array]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    'mlp': MLP,
    'cnn': CNN,
    'small_cnn': SmallCNN,
    'resnet18': resnet18,
    'resnet44': resnet44,
    'wrn28_8': wrn28_8,
    'wrn28_10': wrn28_10,
    'wrn40_8': wrn40_8,
}


def model_names() -> tuple[str, ...]:
  """Names accepted by :func:`create`."""
  return tuple(_REGISTRY)


def create(name: str, *, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds the model called ``name`` with ``num_classes`` logits.

  Args:
    name: one of :func:`model_names` ('mlp', 'cnn', 'small_cnn', 'resnet18', 'resnet44',
      'wrn28_8', 'wrn28_10', 'wrn40_8'). 'mlp', 'cnn' and 'small_cnn' run on any image
      size divisible by 4 (e.g. 8x8 digits, 28x28 Fashion-MNIST); the ResNets on 8x8
      and up.
    num_classes: number of logits K (>= 1).
    **kwargs: module attributes, e.g. ``activation='softplus'``, ``width_multiplier=2``
      (ResNets), ``widen_factor=1`` (WRNs), ``widths=(64,)`` (MLP), ``mean``/``std``,
      ``conv_impl='auto'|'xla'|'patches'`` (conv nets; see :mod:`robustjax.models.conv`).

  Returns:
    An unbound Flax module whose ``__call__(x, train=False)`` maps ``[B, ...]`` to
    ``[B, num_classes]``.

  Raises:
    ValueError: for an unknown name or a bad ``num_classes``.
  """
  if name not in _REGISTRY:
    valid = ', '.join(repr(n) for n in _REGISTRY)
    raise ValueError(f'unknown model name {name!r}; valid choices: {valid}')
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'num_classes must be an integer >= 1, got {num_classes!r}')
  if 'conv_impl' in kwargs:
    conv.resolve(kwargs['conv_impl'])  # raises on an unknown one before anything traces
  return _REGISTRY[name](num_classes=num_classes, **kwargs)


def init(model: nn.Module, rng: jax.Array, input_shape: Sequence[int]) -> dict[str, Any]:
  """Initialises ``model`` for inputs of one example's shape ``input_shape``.

  Args:
    model: a module from :func:`create` (or any module with ``__call__(x, train)``).
    rng: PRNG key.
    input_shape: shape of ONE example without the batch axis, e.g. ``(32, 32, 3)``.

  Returns:
    ``{'params': ...}`` plus ``'batch_stats'`` for models with BatchNorm.
  """
  dummy = jnp.zeros((1, *tuple(input_shape)), jnp.float32)
  # One compiled program instead of one per initialiser op (much faster for ResNets).
  variables = jax.jit(lambda key, x: model.init(key, x, train=False))(rng, dummy)
  return dict(variables)


def split_variables(variables: Variables) -> tuple[Any, dict[str, Any]]:
  """Splits Flax variables into ``(params, rest)``; ``rest`` holds e.g. batch_stats."""
  rest = {k: v for k, v in variables.items() if k != 'params'}
  return variables['params'], rest


def logits_fn_for(model: nn.Module, variables_rest: Variables | None = None, *,
                  train: bool = False) -> LogitsFn:
  """Returns ``logits_fn(params, inputs [B, ...]) -> [B, K]`` with the other collections fixed.

  Args:
    model: the Flax module.
    variables_rest: every collection but 'params' (e.g. ``{'batch_stats': ...}``);
      None or {} for models without BatchNorm.
    train: False (default) normalises with the running averages, the inference
      behaviour used by attacks and evaluation. True normalises each call with its own
      batch (examples interact; running averages are not updated).

  Returns:
    A pure, jit-able :class:`robustjax.types.LogitsFn`.
  """
  rest = {k: v for k, v in dict(variables_rest or {}).items()
          if k != 'params' and v is not None and (not isinstance(v, Mapping) or v)}

  def logits_fn(params: Any, inputs: jax.Array) -> jax.Array:
    return model.apply({'params': params, **rest}, inputs, train=train)

  return logits_fn


class CleanPass(NamedTuple):
  """Result of the train-mode forward pass on the clean batch."""
  logits: jax.Array  # [B, K] train-mode logits of the clean batch
  batch_stats: Any  # updated running averages; {} without BatchNorm
  clean_stats: Any  # per-BatchNorm-layer {'mean': [C], 'var': [C]} of the clean batch


def clean_pass(model: nn.Module, params: Any, batch_stats: Any,
               clean_inputs: jax.Array) -> CleanPass:
  """Runs the clean batch in train mode, recording its BatchNorm statistics.

  Args:
    model: the Flax module.
    params: model parameters.
    batch_stats: running averages (``variables['batch_stats']``); None or {} without BN.
    clean_inputs: ``[B, ...]`` clean inputs in pixel space.

  Returns:
    :class:`CleanPass` with logits ``[B, K]``, the new running averages and the clean
    batch's per-layer mean/var (functions of ``params``, differentiable).
  """
  variables = {'params': params}
  if batch_stats:
    variables['batch_stats'] = batch_stats
  logits, updates = model.apply(variables, clean_inputs, train=True,
                                mutable=['batch_stats', CLEAN_STATS])
  return CleanPass(logits, updates.get('batch_stats', batch_stats or {}),
                   updates.get(CLEAN_STATS, {}))


def frozen_stats_logits_fn(model: nn.Module, clean_stats: Any,
                           batch_stats: Any = None) -> LogitsFn:
  """Returns ``logits_fn(params, inputs)`` normalising with fixed ``clean_stats``.

  Examples never interact in this function, so ``jax.grad`` of a summed per-example loss
  gives exact per-example input gradients; on the clean inputs it reproduces the
  train-mode logits of :func:`clean_pass`.

  Args:
    model: the Flax module.
    clean_stats: ``CleanPass.clean_stats``; {} for models without BatchNorm.
    batch_stats: running averages (only read to satisfy Flax; never used or updated).

  Returns:
    A pure :class:`robustjax.types.LogitsFn` for inputs ``[B', ...]`` of any batch size.
  """
  rest = {}
  if batch_stats:
    rest['batch_stats'] = batch_stats
  if clean_stats:
    rest[CLEAN_STATS] = clean_stats

  def logits_fn(params: Any, inputs: jax.Array) -> jax.Array:
    return model.apply({'params': params, **rest}, inputs, train=True)

  return logits_fn


def bn_policy(model: nn.Module, params: Any, batch_stats: Any, clean_inputs: jax.Array,
              *, stop_gradient_stats: bool = False) -> tuple[CleanPass, LogitsFn]:
  """The clean-batch BatchNorm policy (LLR F.2): clean pass plus a frozen-stats logits_fn.

  Call it inside the function you differentiate w.r.t. ``params`` (see the module
  docstring) so that the parameter gradient flows through the clean statistics.

  Args:
    model: the Flax module.
    params: model parameters.
    batch_stats: running averages; None or {} for models without BatchNorm.
    clean_inputs: ``[B, ...]`` clean inputs in pixel space.
    stop_gradient_stats: cut the parameter gradient through the clean statistics in
      the perturbed passes.

  Returns:
    ``(clean, logits_fn)``: the :class:`CleanPass` and a :class:`LogitsFn` for perturbed
    inputs that normalises with ``clean.clean_stats``.
  """
  clean = clean_pass(model, params, batch_stats, clean_inputs)
  stats = clean.clean_stats
  if stop_gradient_stats:
    stats = jax.lax.stop_gradient(stats)
  return clean, frozen_stats_logits_fn(model, stats, batch_stats)


__all__ = [
    'BatchNorm', 'CLEAN_STATS', 'CNN', 'CleanPass', 'MLP', 'PreActBlock', 'PreActResNet',
    'SmallCNN', 'Standardize', 'WideResNet', 'activations', 'bn_policy', 'clean_pass', 'conv', 'create',
    'frozen_stats_logits_fn', 'get_activation', 'hhrelu', 'init', 'layers',
    'logits_fn_for', 'model_names', 'resnet18', 'resnet44', 'split_variables',
    'wrn28_8', 'wrn28_10', 'wrn40_8',
]
