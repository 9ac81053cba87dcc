"""Argument checks shared by every module, raised in Python before any tracing.

Each check raises ``ValueError`` naming the argument and its valid range, so bad input
never becomes a silent NaN deep inside a compiled loop.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def _is_concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_p(p: Any, name: str = 'p') -> float:
  """Returns ``p`` as a float, raising unless ``1 <= p <= inf``."""
  try:
    p = float(p)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a number in [1, inf], got {p!r}') from None
  if math.isnan(p) or p < 1:
    raise ValueError(f'{name} must be in [1, inf] (use float("inf") for Linf), got {p}')
  return p


def check_supported_p(p: Any, supported: Iterable[float], method: str) -> float:
  """Returns ``p`` as a float, raising unless it is one of the norms ``method`` supports."""
  p = check_p(p)
  supported = tuple(float(q) for q in supported)
  if p not in supported:
    valid = ', '.join('inf' if math.isinf(q) else f'{q:g}' for q in supported)
    raise ValueError(f'p must be one of {valid} for {method} (float("inf") for Linf), '
                     f'got p={p:g}')
  return p


def check_nonnegative(value: Any, name: str) -> None:
  """Raises unless a concrete ``value`` is >= 0 (scalars or arrays); NaN is rejected."""
  if _is_concrete(value) and np.any(~(np.asarray(value) >= 0)):
    raise ValueError(f'{name} must be >= 0, got {value}')


def check_positive(value: Any, name: str) -> None:
  """Raises unless a concrete ``value`` is > 0 (scalars or arrays)."""
  if _is_concrete(value) and np.any(~(np.asarray(value) > 0)):
    raise ValueError(f'{name} must be > 0, got {value}')


def check_int(value: Any, name: str, *, minimum: int = 0) -> int:
  """Returns ``value`` as an int, raising unless it is an integer >= ``minimum``."""
  try:
    ok = not isinstance(value, bool) and float(value).is_integer() and value >= minimum
  except (TypeError, ValueError, OverflowError):
    ok = False
  if not ok:
    raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
  return int(value)


def check_radius(eps: Any, batch_size: int, name: str = 'eps') -> None:
  """Raises unless ``eps`` is a scalar or a ``[B]`` array, >= 0 when concrete."""
  shape = jnp.shape(eps)
  if shape not in ((), (batch_size,)):
    raise ValueError(f'{name} must be a scalar or have shape [B] = ({batch_size},), '
                     f'got shape {shape}')
  check_nonnegative(eps, name)


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
  """Raises unless ``value`` is one of ``choices``; the message lists them."""
  choices = tuple(choices)
  if value not in choices:
    valid = ', '.join(repr(c) for c in choices)
    raise ValueError(f'unknown {name} {value!r}; valid choices: {valid}')
  return value


def check_float_inputs(inputs: Any, name: str = 'inputs') -> None:
  """Raises unless ``inputs`` is a floating array with a batch axis."""
  dtype = jnp.result_type(inputs)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f'{name} must be a floating array (e.g. float32 in [0, 1]), '
                     f'got dtype {dtype}')
  if jnp.ndim(inputs) < 1:
    raise ValueError(f'{name} must have a batch axis [B, ...], got a scalar')


def check_same_shape(a: Any, b: Any, name_a: str, name_b: str) -> None:
  """Raises unless ``a`` and ``b`` have the same shape."""
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(f'{name_b} must have the shape of {name_a} {jnp.shape(a)}, '
                     f'got {jnp.shape(b)}')


def check_labels(labels: Any, batch_size: int, num_classes: int | None = None,
                 name: str = 'labels') -> None:
  """Raises unless ``labels`` are integers ``[B]``, in ``[0, K)`` when concrete."""
  dtype = jnp.result_type(labels)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise ValueError(f'{name} must be an integer array [B], got dtype {dtype}')
  if jnp.shape(labels) != (batch_size,):
    raise ValueError(f'{name} must have shape [B] = ({batch_size},), '
                     f'got {jnp.shape(labels)}')
  if num_classes is not None and _is_concrete(labels) and batch_size:
    values = np.asarray(labels)
    if values.min() < 0 or values.max() >= num_classes:
      raise ValueError(f'{name} must lie in [0, {num_classes}), got values in '
                       f'[{values.min()}, {values.max()}]')


def check_bounds(bounds: Any, name: str = 'bounds') -> tuple[float, float] | None:
  """Returns ``bounds`` as ``(low, high)`` with ``low < high``, or None for no box."""
  if bounds is None:
    return None
  try:
    low, high = bounds
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a pair (low, high) or None, got {bounds!r}') from None
  if _is_concrete(low) and _is_concrete(high) and not np.all(np.asarray(low) < np.asarray(high)):
    raise ValueError(f'{name} must satisfy low < high, got {bounds!r}')
  return low, high


def check_per_example(values: Any, batch_size: int, name: str = 'loss_fn') -> None:
  """Raises unless a function's output has shape ``[B]`` (per-example values)."""
  if jnp.shape(values) != (batch_size,):
    raise ValueError(f'{name} must return per-example values of shape [B] = '
                     f'({batch_size},), got shape {jnp.shape(values)}')


def check_in_bounds(inputs: Any, bounds: Any, name: str = 'inputs', *,
                    tolerance: float = 1e-6) -> None:
  """Raises unless concrete ``inputs`` lie in the box ``bounds = (low, high)``.

  Attacks and certificates act in the box; inputs outside it would be clipped silently
  (e.g. ``[0, 255]`` pixels with the default ``[0, 1]`` box). Traced inputs and
  ``bounds=None`` are not checked.
  """
  if bounds is None or not _is_concrete(inputs) or jnp.size(inputs) == 0:
    return
  if not getattr(inputs, 'is_fully_addressable', True):  # a multi-host global array
    return
  low, high = bounds
  if not (_is_concrete(low) and _is_concrete(high)):
    return
  values = np.asarray(inputs)
  lo, hi = float(values.min()), float(values.max())
  if (lo < np.min(np.asarray(low)) - tolerance or hi > np.max(np.asarray(high)) + tolerance
      or math.isnan(lo) or math.isnan(hi)):
    raise ValueError(
        f'{name} must lie in bounds {tuple(np.asarray(b).tolist() for b in bounds)}, got '
        f'values in [{lo:g}, {hi:g}]; scale pixels to the box (e.g. divide [0, 255] images '
        f'by 255), keep mean/std normalisation inside the model, or pass bounds= that '
        f'match the data')


_EQUINOX_HINT = ('For an Equinox module, split off the arrays and close over the rest: '
                 '`params, static = eqx.partition(model, eqx.is_array)` and '
                 '`logits_fn = lambda params, x: jax.vmap(eqx.combine(params, static))(x)`; '
                 'for Flax pass the variables dict, not the module.')


def check_params(params: Any, name: str = 'params') -> None:
  """Raises unless every leaf of ``params`` is an array or a number.

  Attacks, regularizers and metrics pass ``params`` through ``jax.jit``; a leaf that is
  neither (a function, a string, a layer's activation stored on an Equinox module) would
  otherwise fail deep inside tracing with a JAX internals error. The message names the
  first offending leaf and says how to split a module with ``eqx.partition``.
  """
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if isinstance(leaf, (jax.Array, jax.core.Tracer, np.ndarray, np.generic, bool, int,
                         float, complex)):
      continue
    where = jax.tree_util.keystr(path)
    raise ValueError(f'{name} must be a pytree of arrays, but {name}{where} is a '
                     f'{type(leaf).__name__} ({_short_repr(leaf)}). {_EQUINOX_HINT}')


def _short_repr(value: Any, limit: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + '...'


def check_not_mapping(batch: Any, name: str = 'batch') -> None:
  """Raises for a dict batch (e.g. a TFDS element), saying which tuple to pass instead."""
  if isinstance(batch, Mapping):
    keys = list(batch)
    is_label = lambda k: 'label' in str(k).lower() or str(k).lower() in ('y', 'target')
    labels = next((k for k in keys if is_label(k)), None)
    inputs = next((k for k in keys if k != labels), None)
    pair = (f'({name}[{inputs!r}], {name}[{labels!r}])' if labels is not None and
            inputs is not None else '(inputs, labels)')
    raise ValueError(f'{name} must be a tuple (inputs [B, ...], labels [B]), got a dict '
                     f'with keys {keys}: pass {pair}, in that order (inputs first)')
