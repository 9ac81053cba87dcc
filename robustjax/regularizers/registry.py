"""Registry of penalties by config name, and the decorator that defines a penalty.

Every penalty is called as ``penalty(fn, params, batch, *, rng, **hparams)`` with
``batch = (inputs, labels)``; the unpacked form ``penalty(fn, params, inputs, labels,
*, rng, **hparams)`` is accepted too. ``fn`` is a loss function for most methods and a
logits function for those registered with ``takes='logits_fn'``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from robustjax import _checks

TAKES = ('loss_fn', 'logits_fn')

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str, *, takes: str = 'loss_fn'):
  """Registers a penalty under ``name``, recording whether it takes a loss or logits fn."""
  _checks.check_choice(takes, 'takes', TAKES)

  def decorator(penalty):
    @functools.wraps(penalty)
    def wrapper(fn, params, batch, *maybe_labels, **kwargs):
      if len(maybe_labels) > 1:
        raise TypeError(f'{name}: expected (fn, params, batch) or (fn, params, inputs, '
                        f'labels) positionally; hyperparameters are keyword-only')
      if maybe_labels:
        batch = (batch, maybe_labels[0])
      _checks.check_params(params)
      _checks.check_not_mapping(batch)
      try:
        inputs, labels = batch
      except (TypeError, ValueError):
        raise ValueError(f'{name}: batch must be a pair (inputs, labels)') from None
      check_fn_kind(name, takes, fn, params, inputs, labels)
      return penalty(fn, params, (inputs, labels), **kwargs)

    wrapper.takes = takes
    wrapper.penalty_name = name
    if name in _REGISTRY:
      raise ValueError(f'penalty {name!r} registered twice')
    _REGISTRY[name] = wrapper
    return wrapper

  return decorator


_SIGNATURES = {'loss_fn': 'loss_fn(params, inputs, labels) -> per-example losses [B]',
               'logits_fn': 'logits_fn(params, inputs) -> logits [B, K]'}
_CONVERT = {
    'loss_fn': 'build one from the model with '
               'robustjax.losses.cross_entropy_loss_fn(logits_fn)',
    'logits_fn': "pass the model's logits function; the penalty builds the loss it needs",
}


def check_fn_kind(name: str, takes: str, fn: Any, params: Any, inputs: Any,
                  labels: Any) -> None:
  """Raises a ``ValueError`` naming the expected kind when ``fn`` is the other kind.

  A ``loss_fn`` takes labels and returns ``[B]``; a ``logits_fn`` takes none and returns
  ``[B, K]``. Decided by shape evaluation (``jax.eval_shape``: no compute, nothing
  compiled) before the penalty traces ``fn``, so the user sees which kind the penalty
  expects instead of a ``TypeError`` about their own function's arguments. A function
  that fails as both kinds is left to fail in the penalty with its own error.
  """
  other = 'logits_fn' if takes == 'loss_fn' else 'loss_fn'
  call = {'loss_fn': lambda: jax.eval_shape(fn, params, inputs, labels),
          'logits_fn': lambda: jax.eval_shape(fn, params, inputs)}
  fn_name = getattr(fn, '__name__', type(fn).__name__)
  try:
    out = call[takes]()
  except TypeError:
    try:
      call[other]()
    except Exception:  # pylint: disable=broad-except
      return  # not the other kind either: the penalty reports the function's own error
    raise ValueError(
        f'{name} expects a {_SIGNATURES[takes]}, but got {fn_name!r}, which works as a '
        f'{_SIGNATURES[other]}; {_CONVERT[takes]}') from None
  shape = tuple(getattr(out, 'shape', ()))
  batch_size = jnp.shape(inputs)[0] if jnp.ndim(inputs) else None
  if takes == 'loss_fn' and len(shape) == 2 and shape[0] == batch_size:
    raise ValueError(
        f'{name} expects a {_SIGNATURES[takes]}, but got {fn_name!r}, which returns '
        f'shape {shape} (logits [B, K]?); {_CONVERT[takes]}')


def names() -> tuple[str, ...]:
  """The registered penalty names, sorted."""
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Callable[..., Any]:
  """The penalty registered as ``name``; ``.takes`` says 'loss_fn' or 'logits_fn'."""
  _checks.check_choice(name, 'regularizer name', names())
  return _REGISTRY[name]


def takes(name: str) -> str:
  """Whether penalty ``name`` takes a ``'loss_fn'`` or a ``'logits_fn'``."""
  return get(name).takes
