"""Gaussian noise augmentation, the training of randomized smoothing (Cohen et al. 2019).

Cohen, Rosenfeld & Kolter ("Certified Adversarial Robustness via Randomized Smoothing",
ICML 2019) train the base classifier with the cross-entropy at ``x + N(0, σ² I)``, one
fresh draw per example and step, at the σ later used to certify; the noisy input is not
clipped to the box. As a term the objective is ``mean(values)``, so a config that trains
only on noise sets ``nominal_weight = 0`` (configs/smoothing_digits.py). With BatchNorm,
the noisy pass normalises with the clean batch's statistics (the training step's policy,
robustjax.models.bn_policy) and the running averages are of those, so evaluation sees
the same normalisation as training.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from robustjax import _checks
from robustjax.regularizers.registry import register
from robustjax.types import Array, Aux, Batch, LossFn, Params, PRNGKey


@register('gaussian_augmentation')
def gaussian_augmentation(loss_fn: LossFn, params: Params, batch: Batch, *, rng: PRNGKey,
                          sigma: float) -> tuple[Array, Aux]:
  """Per-example loss at ``x + σ ε``, ``ε ~ N(0, I)``: Cohen et al.'s noisy training.

  Args:
    loss_fn: per-example loss ``(params, inputs [B, ...], labels [B]) -> [B]`` (the
      cross-entropy in training).
    params: model parameters.
    batch: ``(inputs [B, ...], labels [B])``.
    rng: PRNG key of the noise.
    sigma: noise standard deviation σ >= 0 (0 gives the clean loss).

  Returns:
    ``(values [B], aux)`` with ``values = loss_fn(params, x + σ ε, y)`` and aux
    ``{'noisy_inputs' [B, ...]}``. (No ``'loss'`` entry: that key means ``ℓ(x)`` at the
    clean inputs to the training step.)
  """
  inputs, labels = batch
  _checks.check_float_inputs(inputs)
  if not isinstance(sigma, jax.core.Tracer):
    try:
      ok = math.isfinite(float(sigma)) and float(sigma) >= 0
    except (TypeError, ValueError):
      ok = False
    if not ok:
      raise ValueError(f'sigma must be a finite noise level >= 0, got {sigma!r}')
  if rng is None:
    raise ValueError('rng must be a PRNG key: the noise is random')
  noise = jax.random.normal(rng, inputs.shape, inputs.dtype)
  noisy = inputs + jnp.asarray(sigma, inputs.dtype) * noise
  values = loss_fn(params, noisy, labels)
  _checks.check_per_example(values, inputs.shape[0])
  return values, {'noisy_inputs': jax.lax.stop_gradient(noisy)}
