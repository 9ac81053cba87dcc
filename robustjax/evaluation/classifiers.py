"""The per-batch classifiers an evaluation attacks and certifies, and the restore cache.

- :func:`pgd_fn` and :func:`autoattack_fn`: ``(params, x, y, key[, eps]) -> (robust [B],
  broken_by [B], flags, x_adv [B, ...])`` for PGD-20 (training's end-of-run check) and
  the AutoAttack ensemble or one of its attacks;
- :func:`smoothed_logits_fn`: the smoothed classifier's differentiable surrogate, from
  ``(sigma, key, draws)``;
- :data:`CERTIFICATES`: ``--certify`` name -> :class:`Certificate`. A certificate is one
  entry: a model check, a ``prepare`` that returns the per-batch function computing
  certified radii and verdicts for the restored model, and its description;
- :class:`RestoreCache`: the last restored run, so evaluating one run several times in a
  process hands the attacks the same ``logits_fn`` (their compiled programs are reused).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zlib
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from robustjax import attacks
from robustjax import certify
from robustjax import metrics
from robustjax import types
# The ensemble's own checks and settings (the package re-exports only the function
# ``autoattack`` under the module's name).
from robustjax.certify import bounds as bounds_lib
from robustjax.certify import smoothing
from robustjax.evaluation import settings as settings_lib
from robustjax.training import checkpoints
from robustjax.training import train

BOUNDS = types.DEFAULT_BOUNDS
ROBUST = attacks.ROBUST  # broken_by of a robust example
CLEAN_MISCLASSIFIED = attacks.CLEAN_MISCLASSIFIED  # broken_by of a point wrong at x
ABSTAIN = smoothing.ABSTAIN  # a smoothed prediction that abstains
# PGD as training's end-of-run evaluation: 20 steps of 2.5 eps / 20, CE, one start.
PGD_HPARAMS = {'steps': 20, 'restarts': 1, 'objective': 'ce',
               'step_size': '2.5 * eps / steps', 'init': 'uniform'}
SMOOTHING_ATTACK_SAMPLES = 32  # Gaussian draws averaged in the smoothed classifier's logits
SMOOTHING_PREDICT_SAMPLES = 1000  # PREDICT's samples at x and at each attack point


# --------------------------------------------------------------------- attacks


def key_name(attack: str) -> str:
  """AutoAttack's attacks share one key: it derives each attack's own key from it
  (``fold_in(rng, index of the attack)``), so an attack run alone draws what it draws
  inside the ensemble."""
  return 'pgd' if attack == 'pgd' else 'autoattack'


def attack_key(seed: int, name: str):
  """The key of attack ``name``: batch ``i`` is attacked with ``fold_in(key, i)``.

  The same key serves every radius (as :func:`robustjax.metrics.accuracy_vs_eps`).
  """
  return jax.random.fold_in(jax.random.PRNGKey(seed), zlib.crc32(name.encode()) % 2**31)


def pgd_fn(logits_fn, *, p: float):
  """``(params, x, y, key, eps) -> (robust [B], broken_by [B], flags, x_adv [B, ...])``.

  ``eps`` is an argument, so one compilation serves every radius.
  """

  def fn(params, x, y, key, eps):
    robust, x_adv = metrics.robust_correct(
        logits_fn, params, (x, y), rng=key, eps=eps, p=p, steps=PGD_HPARAMS['steps'],
        restarts=PGD_HPARAMS['restarts'], objective=PGD_HPARAMS['objective'],
        bounds=BOUNDS, with_points=True)
    clean = metrics.correct(logits_fn, params, x, y)
    broken_by = jnp.where(clean, jnp.where(robust, ROBUST, 0), CLEAN_MISCLASSIFIED)
    return robust, broken_by.astype(jnp.int32), {}, x_adv

  return fn


def _subset(name: str):
  return None if name == 'autoattack' else [name]


def autoattack_fn(logits_fn, name: str, *, eps: float, p: float, version: str):
  """AutoAttack (``name == 'autoattack'``) or one of its attacks alone, as :func:`pgd_fn`.

  AutoAttack is a host-level loop over compiled attacks (it runs each attack on the
  points still robust), so this is called eagerly, not under ``jax.jit``.
  """

  def fn(params, x, y, key):
    result = attacks.autoattack(logits_fn, params, (jnp.asarray(x), jnp.asarray(y)),
                                rng=key, eps=eps, p=p, version=version,
                                attacks=_subset(name), bounds=BOUNDS)
    flags = {k: int(v) for k, v in dict(result.flags).items()}
    return (np.asarray(result.robust, bool), np.asarray(result.broken_by, np.int32), flags,
            result.inputs)

  return fn


def autoattack_names(name: str, version: str) -> list[str]:
  """The attacks ``name`` runs (the version's list for ``'autoattack'``)."""
  return list(attacks.check_autoattack_attacks(_subset(name), version))


def check_autoattack(names: dict, *, num_classes: int, input_shape: Sequence[int]) -> None:
  """The library's own refusals (classes, input rank), before anything runs or is written.

  ``names``: attack -> the AutoAttack attacks it runs; ``input_shape``: ``[B, ...]``.
  """
  for name, subs in names.items():
    try:
      attacks.check_autoattack_inputs(subs, num_classes=num_classes, input_shape=input_shape)
    except ValueError as e:
      settings_lib.fail('attacks', f'{name}: {e}')


def attack_hparams(name: str, version: str, sub_names: Sequence[str], norm: str) -> dict:
  """What attack ``name`` runs with: the one place that reads AutoAttack's settings of a
  version and norm (the library's ``settings``)."""
  if name == 'pgd':
    return {'implementation': 'robustjax.attacks.pgd', **PGD_HPARAMS,
            'bounds': list(BOUNDS)}
  per = attacks.ensemble_settings(version, settings_lib.NORMS[norm])
  return {'implementation': 'robustjax.attacks.autoattack', 'version': version,
          'attacks': list(sub_names), 'bounds': list(BOUNDS),
          'settings': {s: json.loads(json.dumps(per[s], default=str)) for s in sub_names}}


def smoothed_logits_fn(logits_fn, *, sigma: float, key, draws: int, input_shape):
  """Log of the base model's softmax averaged over ``draws`` fixed Gaussian draws of
  scale ``sigma`` (a surrogate of the smoothed classifier that gradient attacks can
  follow); ``input_shape`` is one example's."""
  noise = sigma * jax.random.normal(key, (draws,) + tuple(input_shape))

  def smoothed(params, x):
    noisy = (x[:, None] + noise[None].astype(x.dtype)).reshape((-1,) + x.shape[1:])
    probs = jax.nn.softmax(logits_fn(params, noisy), axis=-1)
    probs = probs.reshape((x.shape[0], draws, -1)).mean(axis=1)
    return jnp.log(jnp.maximum(probs, 1e-30))

  return smoothed


# ----------------------------------------------------------------- certificates


class CertifyContext(NamedTuple):
  """What a certificate's ``prepare`` may read."""
  settings: settings_lib.Settings
  config: Any  # the run's ml_collections config
  model: Any  # the Flax module
  params: Any  # restored (replicated) parameters
  logits_fn: Callable  # (params, x [B, ...]) -> [B, K], inference mode
  predict: Callable  # (params, x) -> argmax labels [B], sharded jit
  mesh: Any
  sample_inputs: np.ndarray  # one padded batch [B, ...]


# A prepared certificate: (x [B, ...], y [B], real, batch index) -> arrays of the real
# rows: 'radius' [b] float64, 'prediction' [b] int32 (ABSTAIN allowed), 'is_certificate'
# [b] bool (False: not a certificate, never counted), plus any extra per-example arrays.
BatchCertifier = Callable[[np.ndarray, np.ndarray, int, int], dict]


@dataclasses.dataclass(frozen=True)
class Certificate:
  """One ``--certify`` method."""
  check_model: Callable[[Any], None]  # (config) -> None; refuses models it cannot certify
  prepare: Callable[[CertifyContext], BatchCertifier]  # checks, then the batch function
  describe: Callable[[settings_lib.Settings], tuple[str, dict]]  # description, hparams
  smoothed: bool = False  # the attacks see the smoothed classifier, not the model
  norms: tuple[str, ...] = ('2',)  # the norms it certifies (the first is the default)


def crc_layers(model, params):
  """The pixel-space affine layers of a smooth MLP (standardisation folded in)."""
  layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in bounds_lib.mlp_layers(params)]
  mean, std = getattr(model, 'mean', None), getattr(model, 'std', None)
  if mean is None and std is None:
    return layers
  w, b = layers[0]
  d = w.shape[0]
  channels = np.size(std if std is not None else mean)
  tile = lambda v: jnp.tile(jnp.ravel(jnp.asarray(v, w.dtype)), d // channels)
  scale = tile(std) if std is not None else jnp.ones((d,), w.dtype)
  shift = tile(mean) if mean is not None else jnp.zeros((d,), w.dtype)
  w_new = w / scale[:, None]
  return [(w_new, b - shift @ w_new)] + layers[1:]


def _crc_activation(config) -> str:
  return dict(config.model.kwargs).get('activation', 'relu')


def _check_crc_model(config) -> None:
  activation = _crc_activation(config)
  if config.model.name != 'mlp' or activation not in bounds_lib.ACTIVATION_CONSTANTS:
    smooth = ', '.join(bounds_lib.ACTIVATION_CONSTANTS)
    settings_lib.fail(
        'certify', f'crc certifies smooth MLPs (model.name mlp with activation one of '
        f'{smooth}); this run has model {config.model.name!r} with activation '
        f'{activation!r}: use --certify=smoothing')


CRC_CHUNK = 100  # examples per compiled crc_mlp call in an evaluation


def _prepare_crc(ctx: CertifyContext) -> BatchCertifier:
  activation = _crc_activation(ctx.config)
  layers = crc_layers(ctx.model, ctx.params)
  x0 = ctx.sample_inputs
  logits = ctx.logits_fn(ctx.params, x0)
  gap = float(jnp.max(jnp.abs(bounds_lib.mlp_apply(layers, x0, activation=activation)
                              - logits)))
  if not gap <= 1e-3 * (1.0 + float(jnp.max(jnp.abs(logits)))):
    settings_lib.fail('certify', f'crc: the MLP read from the checkpoint does not '
                      f'reproduce the model\'s logits (max difference {gap:g}); this model '
                      'is not a plain MLP')

  # The curvature bounds depend on the class pair only: computed once per model. One
  # compiled program certifies CRC_CHUNK examples (crc_mlp's memory grows with examples x
  # classes x the input size).
  table = certify.margin_curvature_table(layers, activation=activation)
  certify_chunk = jax.jit(lambda layers, x, y: certify.crc_mlp(
      layers, x, y, activation=activation, layers_fn=lambda p: p, curvature_table=table))

  def batch(x, y, real, b):
    del b
    x, y = np.asarray(x), np.asarray(y)
    chunk = min(CRC_CHUNK, len(x))  # batches have one size: one compiled chunk size
    pad = -len(x) % chunk
    xs = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
    ys = np.concatenate([y, np.repeat(y[-1:], pad, axis=0)])
    radius, certified = [], []
    for i in range(0, len(xs), chunk):
      cert = certify_chunk(layers, jnp.asarray(xs[i:i + chunk]), jnp.asarray(ys[i:i + chunk]))
      radius.append(np.asarray(cert.radius, np.float64))
      certified.append(np.asarray(cert.certified, bool))
    return {'radius': np.concatenate(radius)[:real],
            'prediction': np.asarray(ctx.predict(ctx.params, x))[:real].astype(np.int32),
            'is_certificate': np.concatenate(certified)[:real]}

  return batch


def _describe_crc(settings) -> tuple[str, dict]:
  del settings
  return ('CRC (Singla & Feizi): the curvature-based certificate of a smooth MLP against '
          'every other class, with exact (SVD) curvature bounds; certified at r: correctly '
          'classified with certified radius > r. Empirical at r: robust under every '
          'attack at eps = r.', {'targets': 'all', 'curvature_bounds': 'svd (exact)'})


def noise_batch_size(batch_size: int, num_devices: int) -> int:
  """Noisy copies per smoothing forward pass: at least 1000, a multiple of the devices."""
  return int(math.ceil(max(batch_size, 1000) / num_devices) * num_devices)


def smoothed_predict(logits_fn, params, x, *, key, settings, mesh) -> np.ndarray:
  """The smoothed classifier's PREDICT (:data:`SMOOTHING_PREDICT_SAMPLES` samples) at
  ``x [B, ...]``: ``[B]`` int32 labels or :data:`ABSTAIN`."""
  return np.asarray(smoothing.predict(
      logits_fn, params, jnp.clip(jnp.asarray(x), *BOUNDS), rng=key, sigma=settings.sigma,
      num_samples=SMOOTHING_PREDICT_SAMPLES, alpha=settings.alpha,
      batch_size=noise_batch_size(settings.batch_size, mesh.size), bounds=BOUNDS,
      mesh=mesh)).astype(np.int32)


def _prepare_smoothing(ctx: CertifyContext) -> BatchCertifier:
  s = ctx.settings

  def batch(x, y, real, b):
    del y
    cert = smoothing.certify(
        ctx.logits_fn, ctx.params, jnp.asarray(x),
        rng=jax.random.fold_in(attack_key(s.seed, 'certify-smoothing'), b),
        sigma=s.sigma, num_selection=s.num_selection, num_estimation=s.num_samples,
        alpha=s.alpha, batch_size=noise_batch_size(s.batch_size, ctx.mesh.size),
        bounds=BOUNDS, mesh=ctx.mesh)
    # The smoothed classifier's own answer at x: its clean accuracy is PREDICT's.
    clean = smoothed_predict(ctx.logits_fn, ctx.params, x, settings=s, mesh=ctx.mesh,
                             key=jax.random.fold_in(attack_key(s.seed, 'predict:clean'), b))
    return {'radius': np.asarray(cert.radius, np.float64)[:real],
            'prediction': np.asarray(cert.prediction)[:real].astype(np.int32),
            'count': np.asarray(cert.count)[:real].astype(np.int64),
            'is_certificate': np.asarray(cert.prediction)[:real] != ABSTAIN,
            'clean_prediction': clean[:real]}

  return batch


def _describe_smoothing(s) -> tuple[str, dict]:
  return (
      f'Randomized smoothing (Cohen et al. 2019), sigma {s.sigma:g}, CERTIFY with n0 = '
      f'{s.num_selection}, n = {s.num_samples}, alpha = {s.alpha:g}; certified at r: '
      f'certified for the true label with radius > r (abstentions count as wrong). '
      f'Empirical at r: the smoothed classifier\'s PREDICT '
      f'({SMOOTHING_PREDICT_SAMPLES} samples) returns the true label at x and no other '
      f'class at any attack\'s point (the attacks run on the smoothed surrogate).',
      {'sigma': s.sigma, 'num_selection': s.num_selection, 'num_estimation': s.num_samples,
       'alpha': s.alpha, 'predict_samples_at_attack_points': SMOOTHING_PREDICT_SAMPLES,
       'surrogate_noise_draws': SMOOTHING_ATTACK_SAMPLES})


BOUND_MODELS = ('mlp', 'small_cnn')
BOUND_SEARCH_STEPS = 14  # bisection steps of the certified-radius search


def _check_bound_model(config) -> None:
  from robustjax.certify import bound_propagation as bp  # pylint: disable=g-import-not-at-top
  activation = _crc_activation(config)
  if config.model.name not in BOUND_MODELS or activation not in bp.ACTIVATIONS:
    settings_lib.fail(
        'certify', f'ibp and crown certify the models {", ".join(BOUND_MODELS)} with '
        f'activation one of {", ".join(bp.ACTIVATIONS)}; this run has model '
        f'{config.model.name!r} with activation {activation!r}: use --certify=smoothing')


def _prepare_bounds(method: str):
  """``prepare`` of ``--certify=ibp|crown``: the certified radius of every example by
  bisection (:func:`robustjax.certify.bound_certified_radius`) in the run's norm."""

  def prepare(ctx: CertifyContext) -> BatchCertifier:
    from robustjax.certify import bound_propagation as bp  # pylint: disable=g-import-not-at-top
    network = bp.network_from_module(ctx.model, jax.device_get(ctx.params))
    x0 = ctx.sample_inputs
    logits = ctx.logits_fn(ctx.params, x0)
    gap = float(jnp.max(jnp.abs(bp.apply(network, jnp.asarray(x0)) - logits)))
    if not gap <= 1e-3 * (1.0 + float(jnp.max(jnp.abs(logits)))):
      settings_lib.fail('certify', f'{method}: the layers read from the checkpoint do not '
                        f'reproduce the model\'s logits (max difference {gap:g})')
    s = ctx.settings
    max_eps = max(max(s.eps) * 1.25, 1e-3)

    def batch(x, y, real, b):
      del b
      radius = bp.certified_radius(network, jnp.asarray(x), jnp.asarray(y), p=s.p,
                                   method=method, bounds=BOUNDS, max_eps=max_eps,
                                   steps=BOUND_SEARCH_STEPS, chunk_size=16)
      return {'radius': np.asarray(radius, np.float64)[:real],
              'prediction': np.asarray(ctx.predict(ctx.params, x))[:real].astype(np.int32),
              'is_certificate': np.ones((real,), bool)}

    return batch

  return prepare


def _describe_bounds(method: str):
  names = {'ibp': 'IBP (Gowal et al. 2018)', 'crown': 'CROWN (Zhang et al. 2018)'}

  def describe(settings) -> tuple[str, dict]:
    return (f'{names[method]} margin bounds over the L{settings.norm} ball intersected '
            f'with the input box, against every other class; the certified radius is '
            f'the largest radius certified in a {BOUND_SEARCH_STEPS}-step bisection up to '
            f'1.25x the largest radius asked for; certified at r: correctly classified '
            f'with certified radius > r. Empirical at r: robust under every attack at '
            f'eps = r.', {'method': method, 'targets': 'all',
                          'search_steps': BOUND_SEARCH_STEPS})

  return describe


CERTIFICATES: dict[str, Certificate] = {
    'ibp': Certificate(check_model=_check_bound_model, prepare=_prepare_bounds('ibp'),
                       describe=_describe_bounds('ibp'), norms=('inf', '2')),
    'crown': Certificate(check_model=_check_bound_model, prepare=_prepare_bounds('crown'),
                         describe=_describe_bounds('crown'), norms=('inf', '2')),
    'smoothing': Certificate(check_model=lambda config: None, prepare=_prepare_smoothing,
                             describe=_describe_smoothing, smoothed=True),
    'crc': Certificate(check_model=_check_crc_model, prepare=_prepare_crc,
                       describe=_describe_crc),
}


# ---------------------------------------------------------------------- restore


class RestoreCache:
  """:func:`robustjax.training.restore`, remembered for the last checkpoint asked for.

  Evaluating one run several times in a process (norms, certificates) then hands the
  attacks the same ``logits_fn`` object, so their compiled programs are reused. The key
  includes the checkpoint directory's mtime: a retrained run is restored again.
  """

  def __init__(self):
    self._key = None
    self._value = None

  def restore(self, workdir: str, step: int):
    """``(config, logits_fn, params)`` of ``workdir``'s checkpoint ``step``."""
    path = os.path.join(workdir, checkpoints.CHECKPOINT_DIR, str(step))
    key = (workdir, step, os.stat(path).st_mtime_ns if os.path.exists(path) else None)
    if key != self._key:
      self._key, self._value = None, None
      self._value = train.restore(workdir, step=step)
      self._key = key
    return self._value

  def clear(self) -> None:
    self._key, self._value = None, None
