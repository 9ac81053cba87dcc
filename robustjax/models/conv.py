"""Convolution and max-pooling with derivatives that XLA:CPU runs fast; same values.

Two parts of a conv net's gradient are slow on XLA:CPU (2-core AMD EPYC, measured with
``experiments/benchmarks/conv_speed.py``):

* the derivative of a 2x2 max-pool, ``select_and_scatter``, cost ~6x the pooling
  itself and more than a convolution's input gradient. :func:`max_pool` reshapes
  non-overlapping windows into blocks and takes their max under a ``jax.custom_jvp``
  whose tangent is elementwise: in each window the tangent of its first maximum
  (row-major), the element XLA's own derivative picks on CPU, so values and
  derivatives equal ``flax.linen.max_pool``'s, ties included.
* the kernel gradient of a convolution on few input channels (a network's first layer,
  3 channels): XLA:CPU runs it as a convolution contracting the batch
  (openxla/xla#34273, jax-ml/jax#31662). :func:`conv_general_dilated` keeps XLA's
  convolution for the output and the input derivative, and for shallow kernels
  (``kh·kw·C <= MAX_PATCH_DEPTH``) writes the kernel derivative as ``patches(x) @ dW``
  (``jax.custom_jvp``), which reverse mode transposes into one ``patches(x)ᵀ @ g``
  GEMM. For deeper kernels XLA's kernel gradient was faster than either GEMM form
  tried (one GEMM over materialised patches, one GEMM per kernel tap), so they keep it.

Both are JVP rules, so everything robustjax differentiates keeps working: parameter
and input gradients, double backprop (gradient norm, CURE, Lipschitz),
forward-over-reverse Hessian-vector products, ``jax.linearize``, ``vmap`` and sharded
steps. :func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature, so it
plugs into ``flax.linen.Conv(conv_general_dilated=...)``; :func:`for_backend` and
:func:`max_pool` take ``impl='auto'`` (these routes on CPU, XLA's own elsewhere),
``'xla'`` or ``'patches'``, the models' ``conv_impl`` attribute.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'xla', 'patches')
_NHWC = ('NHWC', 'HWIO', 'NHWC')
# Kernels up to this depth kh·kw·C get their kernel derivative as a GEMM over patches;
# deeper ones keep XLA's. On XLA:CPU (2-core AMD EPYC, batch 128 of 32x32) the patch
# GEMM halved the kernel gradient of a 3x3 convolution on 3 channels (depth 27) but was
# 1.3-2.8x slower than XLA's for 32 and 64 channels (depth 288, 576), whether built as
# one GEMM over materialised patches or as one GEMM per kernel tap.
MAX_PATCH_DEPTH = 64


def _is_nhwc(dimension_numbers, ndim: int) -> bool:
  """Whether ``dimension_numbers`` are NHWC / HWIO / NHWC for 2-D inputs."""
  if ndim != 4:
    return False
  if dimension_numbers is None:
    return False
  expected = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)
  try:
    given = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), dimension_numbers)
  except (TypeError, ValueError):
    return False
  return given == expected


def patches(x: jax.Array, kernel_hw: Sequence[int], strides: Sequence[int],
            pads: Sequence[tuple[int, int]], dilation: Sequence[int]) -> jax.Array:
  """Input patches ``[B, H', W', kh·kw·C]``, ordered as an HWIO kernel's first three axes.

  ``patches(x) @ W.reshape(kh·kw·C, O)`` is the convolution of ``x [B, H, W, C]`` with
  ``W [kh, kw, C, O]`` (NHWC; given strides, explicit padding and kernel dilation).
  Built from padded strided slices: memory traffic only.
  """
  (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides, dilation
  config = [(0, 0, 0), tuple(pads[0]) + (0,), tuple(pads[1]) + (0,), (0, 0, 0)]
  x = lax.pad(x, jnp.zeros((), x.dtype), config)
  batch, height, width, channels = x.shape
  out_h = (height - dh * (kh - 1) - 1) // sh + 1
  out_w = (width - dw * (kw - 1) - 1) // sw + 1
  cols = [lax.slice(x, (0, i * dh, j * dw, 0),
                    (batch, i * dh + (out_h - 1) * sh + 1,
                     j * dw + (out_w - 1) * sw + 1, channels), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  stacked = jnp.stack(cols, axis=3)  # [B, H', W', kh·kw, C]
  return stacked.reshape(batch, out_h, out_w, kh * kw * channels)


def kernel_term(x: jax.Array, dkernel: jax.Array, strides: Sequence[int],
                pads: Sequence[tuple[int, int]], dilation: Sequence[int],
                precision=None) -> jax.Array:
  """The convolution of ``x`` with ``dkernel``, linear in ``dkernel``.

  Equals ``lax.conv_general_dilated(x, dkernel, strides, pads, rhs_dilation=dilation)``
  in NHWC / HWIO. For kernels of depth ``kh·kw·C <= MAX_PATCH_DEPTH`` (a network's first
  convolution on images) it is one ``[M, kh·kw·C] @ [kh·kw·C, O]`` GEMM over
  :func:`patches`, whose transpose (the kernel gradient) is one ``patchesᵀ @ g`` GEMM;
  deeper kernels keep XLA's convolution (see ``MAX_PATCH_DEPTH``).
  """
  kh, kw, c_in, c_out = dkernel.shape
  if kh * kw * c_in > MAX_PATCH_DEPTH:
    return lax.conv_general_dilated(x, dkernel, strides, pads, rhs_dilation=dilation,
                                    dimension_numbers=_NHWC, precision=precision)
  cols = patches(x, (kh, kw), strides, pads, dilation)
  batch, out_h, out_w, depth = cols.shape
  # A 2-D GEMM: XLA:CPU runs a 4-D dot contracting one axis several times slower.
  out = jnp.matmul(cols.reshape(batch * out_h * out_w, depth),
                   dkernel.reshape(depth, c_out), precision=precision)
  return out.reshape(batch, out_h, out_w, c_out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _patch_grad_conv(x, kernel, strides, pads, dilation, precision):
  return lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation,
                                  dimension_numbers=_NHWC, precision=precision)


def _is_zero(tangent) -> bool:
  return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _patch_grad_conv_jvp(strides, pads, dilation, precision, primals, tangents):
  x, kernel = primals
  dx, dkernel = tangents
  out = _patch_grad_conv(x, kernel, strides, pads, dilation, precision)
  # conv is bilinear: d(conv) = conv(dx, W) + conv(x, dW). The first term keeps XLA's
  # convolution (its transpose is XLA's input gradient); the second is a GEMM per kernel
  # tap (kernel_term), whose transpose is the kernel gradient as GEMMs. A term whose
  # tangent is a symbolic zero (inputs in a params gradient, the kernel in an attack)
  # is skipped.
  tangent = jnp.zeros_like(out)
  if not _is_zero(dx):
    tangent = _patch_grad_conv(dx, kernel, strides, pads, dilation, precision)
  if not _is_zero(dkernel):
    term = kernel_term(x, dkernel, strides, pads, dilation, precision)
    tangent = term if _is_zero(dx) else tangent + term
  return out, tangent


_patch_grad_conv.defjvp(_patch_grad_conv_jvp, symbolic_zeros=True)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """``lax.conv_general_dilated`` with the kernel derivative of :func:`kernel_term`.

  Same signature and value as ``lax.conv_general_dilated``. The patch route covers 2-D
  NHWC / HWIO convolutions with any strides, padding and kernel dilation and no input
  dilation or grouping; anything else (and symbolic-zero tangents) falls back to
  ``lax.conv_general_dilated`` unchanged.
  """
  simple = (_is_nhwc(dimension_numbers, jnp.ndim(lhs))
            and (lhs_dilation is None or all(d == 1 for d in lhs_dilation))
            and feature_group_count == 1 and batch_group_count == 1
            and preferred_element_type is None)
  if not simple:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  strides = tuple(int(s) for s in window_strides)
  dilation = tuple(int(d) for d in (rhs_dilation or (1, 1)))
  kh, kw = rhs.shape[:2]
  if isinstance(padding, str):
    dilated = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    pads = lax.padtype_to_pads(lhs.shape[1:3], dilated, strides, padding)
  else:
    pads = padding
  pads = tuple((int(lo), int(hi)) for lo, hi in pads)
  return _patch_grad_conv(lhs, rhs, strides, pads, dilation, precision)


def for_backend(impl: str = 'auto'):
  """The convolution function for ``flax.linen.Conv(conv_general_dilated=...)``.

  Args:
    impl: ``'patches'`` (:func:`conv_general_dilated`), ``'xla'``
      (``lax.conv_general_dilated``) or ``'auto'``: patches on CPU, XLA's own elsewhere
      (``experiments/benchmarks/conv_speed.py`` compares them).

  Raises:
    ValueError: an unknown ``impl``, listing the valid ones.
  """
  return conv_general_dilated if resolve(impl) == 'patches' else lax.conv_general_dilated


def resolve(impl: str = 'auto') -> str:
  """``'xla'`` or ``'patches'``: ``impl`` itself, or for ``'auto'`` the backend's choice.

  Raises:
    ValueError: an unknown ``impl``, listing the valid ones.
  """
  if impl not in IMPLS:
    raise ValueError(f'unknown conv_impl {impl!r}; valid choices: '
                     f'{", ".join(repr(i) for i in IMPLS)}')
  if impl == 'auto':
    return 'patches' if jax.default_backend() == 'cpu' else 'xla'
  return impl


@jax.custom_jvp
def _block_max(blocks: jax.Array) -> jax.Array:
  """Max of ``blocks [B, H', kh, W', kw, C]`` over axes 2 and 4 -> ``[B, H', W', C]``."""
  return jnp.max(blocks, axis=(2, 4))


def _first_max_mask(blocks: jax.Array, out: jax.Array) -> jax.Array:
  """Boolean ``[B, H', kh, W', kw, C]``: the first maximum of each window (row-major)."""
  _, _, kh, _, kw, _ = blocks.shape
  order = (lax.broadcasted_iota(jnp.int32, (1, 1, kh, 1, kw, 1), 2) * kw
           + lax.broadcasted_iota(jnp.int32, (1, 1, kh, 1, kw, 1), 4))
  is_max = blocks == out[:, :, None, :, None, :]
  first = jnp.min(jnp.where(is_max, order, kh * kw), axis=(2, 4), keepdims=True)
  return order == first


@_block_max.defjvp
def _block_max_jvp(primals, tangents):
  (blocks,), (dblocks,) = primals, tangents
  out = _block_max(blocks)
  mask = _first_max_mask(blocks, out)
  return out, jnp.sum(jnp.where(mask, dblocks, jnp.zeros_like(dblocks)), axis=(2, 4))


def max_pool(x: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str = 'VALID', impl: str = 'auto') -> jax.Array:
  """``flax.linen.max_pool`` on ``x [B, H, W, C]``, with an elementwise derivative on CPU.

  The derivative of XLA's windowed max (``select_and_scatter``) is several times slower
  than the pooling itself on XLA:CPU. For non-overlapping windows (``strides`` equal to
  ``window_shape``, 'VALID' padding) the ``'patches'`` route reshapes ``x`` into blocks
  and takes their max, with a ``jax.custom_jvp`` whose tangent picks, in each window,
  the tangent of its FIRST maximum in row-major order: the element XLA's
  ``reduce_window`` derivative picks on CPU, so values and derivatives, ties included,
  equal ``flax.linen.max_pool``'s. Other pools go to ``flax.linen.max_pool``.

  Args:
    x: inputs ``[B, H, W, C]``.
    window_shape: ``(kh, kw)``.
    strides: ``(sh, sw)``; None means ``window_shape``.
    padding: 'VALID', 'SAME' or explicit pairs, as in ``flax.linen.max_pool``.
    impl: ``'auto'``, ``'xla'`` or ``'patches'``, as in :func:`for_backend`.

  Returns:
    ``[B, H', W', C]``.
  """
  window = tuple(int(w) for w in window_shape)
  strides = window if strides is None else tuple(int(s) for s in strides)
  if (resolve(impl) == 'xla' or jnp.ndim(x) != 4 or len(window) != 2
      or strides != window or not isinstance(padding, str) or padding != 'VALID'):
    return nn.max_pool(x, window, strides, padding)
  (kh, kw), (batch, height, width, channels) = window, x.shape
  out_h, out_w = height // kh, width // kw
  blocks = x[:, :out_h * kh, :out_w * kw].reshape(batch, out_h, kh, out_w, kw, channels)
  return _block_max(blocks)
