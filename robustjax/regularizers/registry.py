"""Registry of penalties by config name, and the decorator that defines a penalty.

Every penalty is called as ``penalty(fn, params, batch, *, rng, **hparams)`` with
``batch = (inputs, labels)``; the unpacked form ``penalty(fn, params, inputs, labels,
*, rng, **hparams)`` is accepted too. ``fn`` is a loss function for most methods and a
logits function for those registered with ``takes='logits_fn'``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

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
      try:
        inputs, labels = batch
      except (TypeError, ValueError):
        raise ValueError(f'{name}: batch must be a pair (inputs, labels)') from None
      return penalty(fn, params, (inputs, labels), **kwargs)

    wrapper.takes = takes
    wrapper.penalty_name = name
    if name in _REGISTRY:
      raise ValueError(f'penalty {name!r} registered twice')
    _REGISTRY[name] = wrapper
    return wrapper

  return decorator


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
