"""Bound propagation: interval bounds (IBP) and CROWN's backward linear relaxation.

IBP is Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training
Verifiably Robust Models" (2018); CROWN is Zhang et al., "Efficient Neural Network
Robustness Certification with General Activation Functions" (NeurIPS 2018); CROWN-IBP
(IBP intermediate bounds, a CROWN pass for the output) is Zhang et al., "Towards Stable
and Efficient Training of Verifiably Robust Neural Networks" (ICLR 2020).

A network is a tuple of :class:`Layer` records (a plain layer list, pytree-registered
so it passes through ``jit``): ``dense`` (``W [d_in, d_out]``, ``b``), ``conv`` (NHWC,
``W [kh, kw, c_in, c_out]``, strides, explicit padding), ``flatten``, ``affine`` (per
channel ``x * scale + shift``, e.g. input standardisation or a folded inference-mode
BatchNorm) and ``act`` (``relu``, ``softplus``, ``sigmoid``, ``tanh``). Converters read
robustjax's ``MLP`` and ``SmallCNN`` params (:func:`network_from_flax`,
:func:`network_from_module`); any other layer raises naming it.

Inputs lie in the set ``S = {x : ||x − x0||_p <= eps} ∩ [lo, hi]^n`` (p = inf or 2):

* IBP starts from the interval ``[max(x0 − eps, lo), min(x0 + eps, hi)]``, which is
  ``S`` itself for L∞ and contains it for L2 (the L2 ball lies in the L∞ ball of the same
  radius).
* CROWN bounds each linear function ``aᵀx + c`` over ``S`` from below by the larger of
  the interval bound ``Σ min(a_i l_i, a_i u_i) + c`` (valid over the interval, hence over
  ``S``) and, for L2, the dual-norm bound ``aᵀx0 − eps ||a||₂ + c`` (valid over the
  ball, hence over ``S``). Both are lower bounds over a superset of ``S``, so their
  maximum is sound; for L∞ ∩ box the interval bound is exact.

Margins ``z_y − z_t`` (t ≠ y) are bounded with the specification matrix ``C = e_y − e_t``
folded into the last dense layer (``W C``, ``b C``), as all three papers do, so no looser
bound on the logits is ever formed. The ``t = y`` entry of every margin output is
``+inf``. A point is certified when every other margin's lower bound is positive.
CROWN's matrices ``[B, S, ...]`` are built one chunk of examples at a time
(``chunk_size``), so memory is bounded by ``chunk_size × S × (largest layer)``.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import _checks
from robustjax.types import Array, DEFAULT_BOUNDS

LAYER_KINDS = ('dense', 'conv', 'flatten', 'affine', 'act')
ACTIVATIONS = ('relu', 'softplus', 'sigmoid', 'tanh')
METHODS = ('ibp', 'crown', 'crown_ibp')
NORMS = (math.inf, 2.0)

_ACT_FNS = {'relu': jax.nn.relu, 'softplus': jax.nn.softplus, 'sigmoid': jax.nn.sigmoid,
            'tanh': jnp.tanh}


@jax.tree_util.register_pytree_node_class
class Layer:
  """One layer of a plain layer list: a kind, its arrays and its static settings.

  ``dense``: ``arrays = (W [d_in, d_out], b [d_out])``. ``conv``: ``arrays = (W [kh, kw,
  c_in, c_out], b [c_out])``, ``strides = (sh, sw)``, ``padding = ((top, bottom), (left,
  right))``. ``affine``: ``arrays = (scale [C], shift [C])`` over the last axis.
  ``flatten``: none. ``act``: ``activation`` one of :data:`ACTIVATIONS`.
  """

  def __init__(self, kind: str, arrays: Sequence[Array] = (), *, strides=None,
               padding=None, activation: str | None = None):
    self.kind = kind
    self.arrays = tuple(arrays)
    self.strides = None if strides is None else tuple(int(s) for s in strides)
    self.padding = None if padding is None else tuple(tuple(int(q) for q in p)
                                                      for p in padding)
    self.activation = activation

  def tree_flatten(self):
    return self.arrays, (self.kind, self.strides, self.padding, self.activation)

  @classmethod
  def tree_unflatten(cls, aux, arrays):
    kind, strides, padding, activation = aux
    return cls(kind, arrays, strides=strides, padding=padding, activation=activation)

  def __repr__(self):
    extra = self.activation if self.kind == 'act' else ', '.join(
        str(getattr(a, 'shape', a)) for a in self.arrays)
    return f'Layer({self.kind}: {extra})'


def dense(w: Array, b: Array) -> Layer:
  """A dense layer ``x @ W + b``, ``W`` ``[d_in, d_out]``."""
  return Layer('dense', (w, b))


def conv(w: Array, b: Array, *, strides=(1, 1), padding=((0, 0), (0, 0))) -> Layer:
  """An NHWC convolution, ``W`` ``[kh, kw, c_in, c_out]``, explicit padding."""
  return Layer('conv', (w, b), strides=strides, padding=padding)


def flatten() -> Layer:
  """Reshape ``[B, ...]`` to ``[B, -1]``."""
  return Layer('flatten')


def affine(scale: Array, shift: Array) -> Layer:
  """Per-channel ``x * scale + shift`` over the last axis."""
  return Layer('affine', (scale, shift))


def activation(name: str) -> Layer:
  """An elementwise activation."""
  return Layer('act', activation=name)


def standardize(mean, std, channels: int) -> Layer | None:
  """``(x − mean) / std`` as an affine layer, or None when both are None."""
  if mean is None and std is None:
    return None
  mean = jnp.broadcast_to(jnp.asarray(0.0 if mean is None else mean, jnp.float32),
                          (channels,))
  std = jnp.broadcast_to(jnp.asarray(1.0 if std is None else std, jnp.float32),
                         (channels,))
  return affine(1.0 / std, -mean / std)


def fold_batchnorm(mean: Array, var: Array, scale: Array, bias: Array,
                   epsilon: float = 1e-5) -> Layer:
  """An inference-mode BatchNorm ``(x − mean)/sqrt(var + ε) * scale + bias`` as affine."""
  s = scale / jnp.sqrt(var + epsilon)
  return affine(s, bias - mean * s)


def check_network(network: Sequence[Layer]) -> tuple[Layer, ...]:
  """Returns the network as a tuple, raising a ValueError naming a bad layer."""
  network = tuple(network)
  if not network:
    raise ValueError('network must hold at least one layer')
  for i, layer in enumerate(network):
    if not isinstance(layer, Layer) or layer.kind not in LAYER_KINDS:
      raise ValueError(f'network[{i}]: unsupported layer {layer!r}; supported kinds: '
                       f'{", ".join(LAYER_KINDS)}')
    if layer.kind == 'act' and layer.activation not in ACTIVATIONS:
      raise ValueError(f'network[{i}]: unsupported activation {layer.activation!r}; '
                       f'supported: {", ".join(ACTIVATIONS)}')
  if network[-1].kind != 'dense':
    raise ValueError(f'network[-1] must be the dense logits layer (the margin matrix is '
                     f'folded into it), got {network[-1]!r}')
  return network


# ----------------------------------------------------------------------------- converters


def _index(name: str, prefix: str) -> int | None:
  match = re.fullmatch(prefix + r'_(\d+)', name)
  return int(match.group(1)) if match else None


def _unwrap(params):
  if isinstance(params, dict) and set(params) == {'params'}:
    return params['params']
  return params


def network_from_flax(params: Any, *, model: str = 'mlp', activation: str = 'relu',
                      mean=None, std=None, input_channels: int | None = None,
                      conv_strides=(2, 2), conv_padding=((1, 1), (1, 1))
                      ) -> tuple[Layer, ...]:
  """The layer list of robustjax's ``MLP`` or ``SmallCNN`` from its Flax params.

  ``mlp``: ``Standardize -> flatten -> (Dense_i -> act)* -> Dense_last``. ``small_cnn``:
  ``Standardize -> (Conv_i -> act)* -> flatten -> (Dense_i -> act)* -> Dense_last`` with
  the model's 4x4 stride-2 padding-1 convolutions (``conv_strides``, ``conv_padding``).
  ``mean``/``std`` are the model's standardisation attributes (not stored in params).

  Raises:
    ValueError: naming any params entry that is not ``Dense_i``/``Conv_i``.
  """
  _checks.check_choice(model, 'model', ('mlp', 'small_cnn'))
  _checks.check_choice(activation, 'activation', ACTIVATIONS)
  params = _unwrap(params)
  if not isinstance(params, dict):
    raise ValueError(f'params must be a Flax params dict, got {type(params).__name__}')
  allowed = ('Dense',) if model == 'mlp' else ('Dense', 'Conv')
  for name in params:
    if not any(_index(name, p) is not None for p in allowed):
      raise ValueError(f'params entry {name!r}: unsupported layer for bound propagation '
                       f'of model {model!r} (supported: '
                       f'{", ".join(p + "_<i>" for p in allowed)})')
  convs = sorted((k for k in params if _index(k, 'Conv') is not None),
                 key=lambda k: _index(k, 'Conv'))
  denses = sorted((k for k in params if _index(k, 'Dense') is not None),
                  key=lambda k: _index(k, 'Dense'))
  if not denses:
    raise ValueError(f'params of model {model!r} need at least one Dense_<i> entry')
  first = params[convs[0]]['kernel'] if convs else params[denses[0]]['kernel']
  channels = first.shape[-2] if convs else (input_channels or 1)
  layers = []
  std_layer = standardize(mean, std, channels)
  if std_layer is not None:
    if not convs and channels == 1 and jnp.size(jnp.asarray(
        0.0 if mean is None else mean)) > 1:
      raise ValueError('mlp with per-channel mean/std: pass input_channels')
    layers.append(std_layer)
  for k in convs:
    layers += [conv(params[k]['kernel'], params[k]['bias'], strides=conv_strides,
                    padding=conv_padding), Layer('act', activation=activation)]
  layers.append(flatten())
  for i, k in enumerate(denses):
    layers.append(dense(params[k]['kernel'], params[k]['bias']))
    if i < len(denses) - 1:
      layers.append(Layer('act', activation=activation))
  return tuple(layers)


def network_from_module(module: Any, params: Any) -> tuple[Layer, ...]:
  """The layer list of a robustjax ``MLP`` / ``SmallCNN`` Flax module and its params.

  Reads the module's ``activation``, ``mean`` and ``std``; any other module raises.
  """
  name = type(module).__name__
  models = {'MLP': 'mlp', 'SmallCNN': 'small_cnn'}
  if name not in models:
    raise ValueError(f'bound propagation supports robustjax MLP and SmallCNN models '
                     f'(and plain layer lists), got {name}')
  act = module.activation
  if not isinstance(act, str) or act not in ACTIVATIONS:
    raise ValueError(f'{name}.activation {act!r} is not supported by bound propagation '
                     f'(supported: {", ".join(ACTIVATIONS)})')
  channels = None
  if module.mean is not None and np.size(module.mean) > 1:
    channels = int(np.size(module.mean))
  if name == 'SmallCNN':
    if tuple(module.channels) and len(tuple(module.channels)) != 2:
      raise ValueError('SmallCNN needs two convolutions')
  return network_from_flax(params, model=models[name], activation=act, mean=module.mean,
                           std=module.std, input_channels=channels)


# ----------------------------------------------------------------------------- forward


def _conv_apply(layer: Layer, x: Array) -> Array:
  w = layer.arrays[0]
  return jax.lax.conv_general_dilated(x, w, layer.strides, layer.padding,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _linear(layer: Layer, x: Array) -> Array:
  """The linear part of a linear layer (no bias)."""
  if layer.kind == 'dense':
    return x @ layer.arrays[0]
  if layer.kind == 'conv':
    return _conv_apply(layer, x)
  if layer.kind == 'affine':
    return x * layer.arrays[0]
  if layer.kind == 'flatten':
    return jnp.reshape(x, (x.shape[0], -1))
  raise ValueError(layer.kind)


def _bias(layer: Layer) -> Array | float:
  if layer.kind in ('dense', 'conv'):
    return layer.arrays[1]
  if layer.kind == 'affine':
    return layer.arrays[1]
  return 0.0


def apply(network: Sequence[Layer], inputs: Array) -> Array:
  """Logits ``[B, K]`` of the layer list on inputs ``[B, ...]``."""
  x = inputs
  for layer in network:
    if layer.kind == 'act':
      x = _ACT_FNS[layer.activation](x)
    else:
      x = _linear(layer, x) + _bias(layer)
  return x


def _spec_layer(last: Layer, labels: Array) -> tuple[Array, Array]:
  """The last dense layer with ``C = e_y − e_t`` folded in: ``W_C [B, d, K]``, ``b_C [B, K]``."""
  w, b = last.arrays
  w_c = w[:, labels].T[:, :, None] - w[None]  # [B, d, K]: column t is W_y − W_t
  b_c = b[labels][:, None] - b[None]
  return w_c, b_c


# ----------------------------------------------------------------------------- IBP


def input_interval(inputs: Array, eps, *, bounds=DEFAULT_BOUNDS) -> tuple[Array, Array]:
  """The interval ``[max(x0 − eps, lo), min(x0 + eps, hi)]`` (contains the Lp ball ∩ box)."""
  e = _per_example(jnp.asarray(eps, inputs.dtype), inputs)
  lower, upper = inputs - e, inputs + e
  if bounds is not None:
    lower, upper = jnp.maximum(lower, bounds[0]), jnp.minimum(upper, bounds[1])
  return lower, upper


def _per_example(values: Array, x: Array) -> Array:
  values = jnp.asarray(values)
  if values.ndim == 0:
    return values
  return jnp.reshape(values, (-1,) + (1,) * (x.ndim - 1))


def _interval_linear(layer: Layer, lower: Array, upper: Array) -> tuple[Array, Array]:
  center, radius = 0.5 * (upper + lower), 0.5 * (upper - lower)
  if layer.kind == 'flatten':
    return _linear(layer, lower), _linear(layer, upper)
  abs_layer = Layer(layer.kind, tuple(jnp.abs(a) for a in layer.arrays),
                    strides=layer.strides, padding=layer.padding)
  c = _linear(layer, center) + _bias(layer)
  r = _linear(abs_layer, radius)
  return c - r, c + r


def ibp_intervals(network: Sequence[Layer], lower: Array, upper: Array
                  ) -> list[tuple[Array, Array]]:
  """Interval bounds of every activation's input (pre-activation), in order.

  Args:
    network: layer list.
    lower, upper: ``[B, ...]`` input interval.

  Returns:
    ``[(l [B, ...], u [B, ...]), ...]``, one pair per ``act`` layer, and as last entry the
    interval of the input of the final dense layer.
  """
  out = []
  for layer in network[:-1]:
    if layer.kind == 'act':
      out.append((lower, upper))
      fn = _ACT_FNS[layer.activation]  # monotone
      lower, upper = fn(lower), fn(upper)
    else:
      lower, upper = _interval_linear(layer, lower, upper)
  out.append((lower, upper))
  return out


def _ibp_margins(network, labels, last_interval) -> Array:
  """Lower bounds ``[B, K]`` of ``z_y − z_t`` from the final interval, C folded in."""
  lower, upper = last_interval
  w_c, b_c = _spec_layer(network[-1], labels)
  center, radius = 0.5 * (upper + lower), 0.5 * (upper - lower)
  return (jnp.einsum('bd,bdk->bk', center, w_c) - jnp.einsum('bd,bdk->bk', radius,
                                                             jnp.abs(w_c)) + b_c)


# ----------------------------------------------------------------------------- relaxations


class Relaxation(NamedTuple):
  """Linear bounds ``lo_slope z + lo_bias <= σ(z) <= up_slope z + up_bias`` on ``[l, u]``."""
  lo_slope: Array
  lo_bias: Array
  up_slope: Array
  up_bias: Array


def _d1(name: str, z: Array) -> Array:
  if name == 'softplus':
    return jax.nn.sigmoid(z)
  if name == 'sigmoid':
    s = jax.nn.sigmoid(z)
    return s * (1.0 - s)
  return 1.0 - jnp.tanh(z) ** 2


def _chord(fn, l, u):
  width = u - l
  safe = jnp.where(width > 1e-12, width, 1.0)
  slope = jnp.where(width > 1e-12, (fn(u) - fn(l)) / safe, 0.0)
  return slope, fn(l) - slope * l


def _tangent(name, fn, d):
  slope = _d1(name, d)
  return slope, fn(d) - slope * d


def _s_shaped_upper(name: str, l: Array, u: Array, steps: int = 30):
  """CROWN's upper line of sigmoid/tanh (convex below 0, concave above) on ``[l, u]``.

  ``u <= 0``: the chord. ``l >= 0``: the tangent at the midpoint. ``l < 0 < u``: the
  tangent at ``d >= 0`` that passes through ``(l, σ(l))``, found by bisection on
  ``g(d) = σ(d) + σ'(d)(l − d) − σ(l)`` (increasing in d, ``g(d) >= 0`` makes the tangent
  valid on ``[l, ∞)``: it lies above σ on the concave part, and ``line − σ`` is concave
  on ``[l, 0]`` and nonnegative at both ends). The tangent is taken at the bracket's
  upper end (``g >= 0``: sound); when the whole bracket lies above u the tangent point
  ``d* > u`` and the chord is valid and tighter (the secant slope from ``(l, σ(l))``
  increases up to ``d*``).
  """
  fn = _ACT_FNS[name]
  c_slope, c_bias = _chord(fn, l, u)
  t_slope, t_bias = _tangent(name, fn, 0.5 * (l + u))
  g = lambda d: fn(d) + _d1(name, d) * (l - d) - fn(l)
  lo = jnp.zeros_like(l)
  hi = jnp.maximum(u, 1.0)
  hi = jnp.maximum(hi, -l)  # g(-l) >= 0 for these odd-symmetric shapes; widen anyway
  for _ in range(8):  # make sure g(hi) >= 0
    hi = jnp.where(g(hi) >= 0, hi, 2.0 * hi)

  def body(_, carry):
    lo, hi = carry
    mid = 0.5 * (lo + hi)
    ok = g(mid) >= 0
    return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

  lo, hi = jax.lax.fori_loop(0, steps, body, (lo, hi))
  x_slope, x_bias = _tangent(name, fn, hi)
  use_chord = lo >= u
  cross_slope = jnp.where(use_chord, c_slope, x_slope)
  cross_bias = jnp.where(use_chord, c_bias, x_bias)
  slope = jnp.where(u <= 0, c_slope, jnp.where(l >= 0, t_slope, cross_slope))
  bias = jnp.where(u <= 0, c_bias, jnp.where(l >= 0, t_bias, cross_bias))
  return slope, bias


def relaxation(name: str, l: Array, u: Array) -> Relaxation:
  """CROWN's linear bounds of an activation on ``[l, u]`` (elementwise).

  ReLU: identity if ``l >= 0``, zero if ``u <= 0``; otherwise the chord
  ``u (z − l)/(u − l)`` above and the adaptive line below (slope 1 if ``u >= −l`` else
  0). Softplus (convex): the chord above, the tangent at the midpoint below. Sigmoid and
  tanh: :func:`_s_shaped_upper` above, and below the same construction reflected through
  the symmetry ``σ(z) = c − σ(−z)`` (c = 1 for sigmoid, 0 for tanh).
  """
  if name == 'relu':
    crossing = (l < 0) & (u > 0)
    width = jnp.where(crossing, u - l, 1.0)
    up = jnp.where(crossing, u / width, (l >= 0).astype(l.dtype))
    up_b = jnp.where(crossing, -u * l / width, 0.0)
    lo = jnp.where(crossing, (u >= -l).astype(l.dtype), (l >= 0).astype(l.dtype))
    return Relaxation(lo, jnp.zeros_like(l), up, up_b)
  fn = _ACT_FNS[name]
  if name == 'softplus':
    up, up_b = _chord(fn, l, u)
    lo, lo_b = _tangent(name, fn, 0.5 * (l + u))
    return Relaxation(lo, lo_b, up, up_b)
  up, up_b = _s_shaped_upper(name, l, u)
  # σ(z) = c − σ(−z); σ(w) <= a w + b on w ∈ [−u, −l] gives σ(z) >= c − b + a z.
  a, b = _s_shaped_upper(name, -u, -l)
  c = 1.0 if name == 'sigmoid' else 0.0
  return Relaxation(a, c - b, up, up_b)


# ----------------------------------------------------------------------------- CROWN


def _transpose(layer: Layer, lam: Array, in_shape: tuple) -> Array:
  """``Λ ↦ Λ ∘ L`` for the linear part L of a layer; ``lam`` ``[N, S, *out]``."""
  n, s = lam.shape[:2]
  flat = jnp.reshape(lam, (n * s,) + lam.shape[2:])
  if layer.kind == 'dense':
    back = flat @ layer.arrays[0].T
  elif layer.kind == 'affine':
    back = flat * layer.arrays[0]
  elif layer.kind == 'flatten':
    back = flat
  else:
    primal = jax.ShapeDtypeStruct((n * s,) + tuple(in_shape), lam.dtype)
    (back,) = jax.linear_transpose(lambda x: _conv_apply(layer, x), primal)(flat)
  return jnp.reshape(back, (n, s) + tuple(in_shape))


def _bias_term(layer: Layer, lam: Array) -> Array:
  """``Λ · b`` ``[N, S]`` (bias broadcast over the spatial axes)."""
  b = _bias(layer)
  if isinstance(b, float):
    return jnp.zeros(lam.shape[:2], lam.dtype)
  return jnp.sum(jnp.reshape(lam * b, lam.shape[:2] + (-1,)), axis=-1)


def _backward(layers: Sequence[Layer], shapes: Sequence[tuple], relax: Sequence,
              lam: Array, bias: Array) -> tuple[Array, Array]:
  """Back-substitutes ``Λ`` ``[N, S, *out]`` through ``layers`` to the input (lower bound).

  ``shapes[i]`` is the input shape (no batch axis) of ``layers[i]``; ``relax`` holds one
  :class:`Relaxation` per ``act`` layer, in order.
  """
  act_index = sum(layer.kind == 'act' for layer in layers)
  for i in range(len(layers) - 1, -1, -1):
    layer = layers[i]
    if layer.kind == 'act':
      act_index -= 1
      r = relax[act_index]
      pos, neg = jnp.maximum(lam, 0.0), jnp.minimum(lam, 0.0)
      expand = lambda a: a[:, None]
      bias = bias + jnp.sum(jnp.reshape(pos * expand(r.lo_bias) + neg * expand(r.up_bias),
                                        lam.shape[:2] + (-1,)), axis=-1)
      lam = pos * expand(r.lo_slope) + neg * expand(r.up_slope)
    else:
      bias = bias + _bias_term(layer, lam)
      lam = _transpose(layer, lam, shapes[i])
  return lam, bias


def _concretize(lam: Array, bias: Array, x0: Array, lower: Array, upper: Array,
                eps, p: float) -> Array:
  """Lower bound ``[N, S]`` of ``Λ x + bias`` over the input set (module docstring)."""
  n, s = lam.shape[:2]
  lam = jnp.reshape(lam, (n, s, -1))
  lo, up = jnp.reshape(lower, (n, 1, -1)), jnp.reshape(upper, (n, 1, -1))
  box = jnp.sum(jnp.maximum(lam, 0.0) * lo + jnp.minimum(lam, 0.0) * up, axis=-1) + bias
  if p == 2.0:
    e = jnp.reshape(jnp.asarray(eps, lam.dtype), (-1, 1)) if jnp.ndim(eps) else eps
    ball = (jnp.einsum('nsd,nd->ns', lam, jnp.reshape(x0, (n, -1)))
            # (the clip keeps the gradient finite on the zero row t = y)
            - e * jnp.sqrt(jnp.maximum(jnp.sum(lam * lam, axis=-1), 1e-30)) + bias)
    return jnp.maximum(box, ball)
  return box


def _shapes(network: Sequence[Layer], in_shape: tuple) -> list[tuple]:
  """Input shape (no batch axis) of every layer, and the output shape last."""
  shapes = [tuple(in_shape)]
  x = jax.ShapeDtypeStruct((1,) + tuple(in_shape), jnp.float32)
  for layer in network:
    x = jax.eval_shape(lambda v, layer=layer: apply((layer,), v) if layer.kind == 'act'
                       else _linear(layer, v), x)
    shapes.append(tuple(x.shape[1:]))
  return shapes


def _eye_spec(n: int, shape: tuple, dtype) -> Array:
  size = int(np.prod(shape))
  eye = jnp.eye(size, dtype=dtype)
  return jnp.reshape(jnp.concatenate([eye, -eye], 0), (1, 2 * size) + tuple(shape))


def _crown_chunk(network, shapes, x0, lower, upper, labels, eps, p, intermediate):
  """CROWN margins ``[N, K]`` and the pre-activation intervals for one chunk of examples."""
  n = x0.shape[0]
  relax, intervals = [], []
  ibp = ibp_intervals(network, lower, upper) if intermediate == 'ibp' else None
  act_positions = [i for i, layer in enumerate(network) if layer.kind == 'act']
  for j, pos in enumerate(act_positions):
    if ibp is not None:
      l, u = ibp[j]
    else:
      shape = shapes[pos]
      size = int(np.prod(shape))
      lam = jnp.broadcast_to(_eye_spec(n, shape, x0.dtype), (n, 2 * size) + shape)
      lam_in, bias = _backward(network[:pos], shapes, relax, lam, jnp.zeros((n, 2 * size),
                                                                           x0.dtype))
      bound = _concretize(lam_in, bias, x0, lower, upper, eps, p)
      l = jnp.reshape(bound[:, :size], (n,) + shape)
      u = -jnp.reshape(bound[:, size:], (n,) + shape)
      # Interval bounds are valid too: keep the tighter of each side (sound).
      l_ibp, u_ibp = _forward_interval(network[:pos], lower, upper, relax_layers=None)
      l, u = jnp.maximum(l, l_ibp), jnp.minimum(u, u_ibp)
    intervals.append((l, u))
    relax.append(relaxation(network[pos].activation, l, u))
  w_c, b_c = _spec_layer(network[-1], labels)  # C folded into the last layer
  lam = jnp.swapaxes(w_c, 1, 2)  # [N, K, d]
  lam_in, bias = _backward(network[:-1], shapes, relax, lam, b_c)
  margins = _concretize(lam_in, bias, x0, lower, upper, eps, p)
  return margins, intervals


def _forward_interval(layers, lower, upper, relax_layers=None):
  for layer in layers:
    if layer.kind == 'act':
      fn = _ACT_FNS[layer.activation]
      lower, upper = fn(lower), fn(upper)
    else:
      lower, upper = _interval_linear(layer, lower, upper)
  return lower, upper


class MarginBounds(NamedTuple):
  """Per-example certified lower bounds of the margins and the verdict."""
  margins: Array  # [B, K] lower bound of z_y − z_t over the input set; +inf at t = y
  certified: Array  # [B] bool, every margin's lower bound > 0
  intervals: tuple  # per act layer (l [B, ...], u [B, ...]) used by the relaxation


def check_inputs(network, inputs, labels, eps, p, method, bounds, chunk_size):
  """The shared argument checks, raised before anything is traced."""
  network = check_network(network)
  _checks.check_float_inputs(inputs)
  _checks.check_choice(method, 'method', METHODS)
  p = _checks.check_supported_p(p, NORMS, 'bound propagation')
  _checks.check_nonnegative(eps, 'eps')
  if jnp.ndim(eps) not in (0, 1) or (jnp.ndim(eps) == 1 and
                                     jnp.shape(eps)[0] != inputs.shape[0]):
    raise ValueError(f'eps must be a scalar or [B] = ({inputs.shape[0]},), got shape '
                     f'{jnp.shape(eps)}')
  bounds = _checks.check_bounds(bounds)
  _checks.check_in_bounds(inputs, bounds)
  chunk_size = _checks.check_int(chunk_size, 'chunk_size', minimum=1)
  num_classes = network[-1].arrays[0].shape[-1]
  _checks.check_labels(labels, inputs.shape[0], num_classes)
  return network, p, bounds, chunk_size


def margin_lower_bounds(network: Sequence[Layer], inputs: Array, labels: Array, eps, *,
                        p: float = math.inf, method: str = 'crown',
                        bounds=DEFAULT_BOUNDS, chunk_size: int = 64) -> MarginBounds:
  """Lower bounds of every margin ``z_y − z_t`` over ``{||x − x0||_p <= eps} ∩ box``.

  Args:
    network: layer list (:func:`network_from_flax` or built from :func:`dense` etc.).
    inputs: ``[B, ...]`` points x0 in the box.
    labels: ``[B]`` classes y.
    eps: radius (>= 0), scalar or ``[B]``.
    p: ``inf`` or ``2``.
    method: ``'ibp'``, ``'crown'`` (every intermediate bound by CROWN, intersected with
      IBP's) or ``'crown_ibp'`` (intermediate bounds by IBP, the output by CROWN).
    bounds: input box ``(lo, hi)`` or None.
    chunk_size: examples per CROWN chunk (memory ~ chunk × 2·neurons × layer size).

  Returns:
    :class:`MarginBounds`; everything is differentiable w.r.t. the network's arrays.
  """
  network, p, bounds, chunk_size = check_inputs(network, inputs, labels, eps, p, method,
                                                bounds, chunk_size)
  return _margin_bounds(network, inputs, labels, eps, p=p, method=method, bounds=bounds,
                        chunk_size=chunk_size)


def _margin_bounds(network, inputs, labels, eps, *, p, method, bounds, chunk_size):
  eps = jnp.asarray(eps, inputs.dtype)
  lower, upper = input_interval(inputs, eps, bounds=bounds)
  num_classes = network[-1].arrays[0].shape[-1]
  own = jax.nn.one_hot(labels, num_classes, dtype=bool)
  if method == 'ibp':
    intervals = ibp_intervals(network, lower, upper)
    margins = _ibp_margins(network, labels, intervals[-1])
    intervals = tuple(intervals[:-1])
  else:
    shapes = _shapes(network, inputs.shape[1:])
    intermediate = 'ibp' if method == 'crown_ibp' else 'crown'
    batch = inputs.shape[0]
    eps_b = jnp.broadcast_to(eps, (batch,))
    if batch <= chunk_size:
      margins, intervals = _crown_chunk(network, shapes, inputs, lower, upper, labels,
                                        eps_b, p, intermediate)
    else:
      pad = (-batch) % chunk_size
      padded = lambda a: jnp.concatenate([a, jnp.repeat(a[:1], pad, 0)], 0) if pad else a
      split = lambda a: jnp.reshape(padded(a), (-1, chunk_size) + a.shape[1:])
      chunks = tuple(split(a) for a in (inputs, lower, upper, labels, eps_b))

      def one(args):
        x0, lo, up, y, e = args
        return _crown_chunk(network, shapes, x0, lo, up, y, e, p, intermediate)

      margins, intervals = jax.lax.map(one, chunks)
      merge = lambda a: jnp.reshape(a, (-1,) + a.shape[2:])[:batch]
      margins = merge(margins)
      intervals = jax.tree.map(merge, intervals)
    intervals = tuple(intervals)
  margins = jnp.where(own, jnp.inf, margins)
  certified = jnp.all(margins > 0, axis=-1)
  return MarginBounds(margins, certified, intervals)


def certified_radius(network: Sequence[Layer], inputs: Array, labels: Array, *,
                     p: float = math.inf, method: str = 'crown', bounds=DEFAULT_BOUNDS,
                     max_eps: float = 1.0, steps: int = 12,
                     chunk_size: int = 64) -> Array:
  """Per-example certified radius by bisection on eps ``[B]``.

  Each tested eps where every margin bound is positive is itself a certificate on that
  ball, so the largest such eps is a certified radius whether or not the bounds are
  monotone in eps. Returns 0 where not even a tiny ball certifies.
  """
  network, p, bounds, chunk_size = check_inputs(network, inputs, labels, 0.0, p, method,
                                                bounds, chunk_size)
  steps = _checks.check_int(steps, 'steps', minimum=1)
  _checks.check_positive(max_eps, 'max_eps')
  batch = inputs.shape[0]

  def search(network, inputs, labels):
    def body(carry, _):
      lo, hi, best = carry
      mid = 0.5 * (lo + hi)
      ok = _margin_bounds(network, inputs, labels, mid, p=p, method=method, bounds=bounds,
                          chunk_size=chunk_size).certified
      return (jnp.where(ok, mid, lo), jnp.where(ok, hi, mid),
              jnp.where(ok, jnp.maximum(best, mid), best)), None

    zeros = jnp.zeros((batch,), inputs.dtype)
    (_, _, best), _ = jax.lax.scan(body, (zeros, zeros + max_eps, zeros), None,
                                   length=steps)
    return best

  return jax.jit(search)(network, inputs, labels)


def certify(network: Sequence[Layer], inputs: Array, labels: Array, eps, *,
            p: float = math.inf, method: str = 'crown', bounds=DEFAULT_BOUNDS,
            chunk_size: int = 64) -> MarginBounds:
  """Jitted :func:`margin_lower_bounds`: the certificate at radius ``eps`` per example.

  One compilation per network structure, input shape and setting (the weights are
  arguments, so new weights of the same shapes reuse it).
  """
  network, p, bounds, chunk_size = check_inputs(network, inputs, labels, eps, p, method,
                                                bounds, chunk_size)
  bounds = None if bounds is None else tuple(float(b) for b in bounds)
  return _certify_jit(network, inputs, labels, jnp.asarray(eps, inputs.dtype), p=p,
                      method=method, bounds=bounds, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=('p', 'method', 'bounds', 'chunk_size'))
def _certify_jit(network, inputs, labels, eps, *, p, method, bounds, chunk_size):
  return _margin_bounds(network, inputs, labels, eps, p=p, method=method, bounds=bounds,
                        chunk_size=chunk_size)
