"""Inputs outside the attack box raise before anything runs, in every entry point.

With [0, 255] pixels (or mean/std-normalised inputs) and the default [0, 1] box, an
attack used to clip its start into [0, 1], returning points hundreds of units away from
x, and robust accuracy read 0. Now every entry point taking concrete inputs and a box
raises a ValueError naming ``inputs``, the bounds, the observed range and a hint.
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from robustjax import attacks
from robustjax import explain
from robustjax import losses
from robustjax import metrics
from robustjax.certify import bounds as bounds_lib
from robustjax.regularizers import registry
from robustjax.training import schema

D, K, B = 4, 3, 4
KEY = jax.random.PRNGKey(0)


def linear(params, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ params['w'] + params['b']


PARAMS = {'w': jax.random.normal(KEY, (D, K)), 'b': jnp.zeros(K)}
LOSS = losses.cross_entropy_loss_fn(linear)
LAYERS = [(jax.random.normal(KEY, (D, 5)), jnp.zeros(5)),
          (jax.random.normal(KEY, (5, K)), jnp.zeros(K))]
SMOOTH = lambda p, x: bounds_lib.mlp_apply(p, x, activation='softplus')
LABELS = jnp.arange(B, dtype=jnp.int32) % K
PIXELS = jnp.linspace(0.0, 255.0, B * D).reshape(B, D)  # [0, 255] images
STANDARDISED = jnp.linspace(-1.8, 2.1, B * D).reshape(B, D)  # (x - mean) / std


def _penalty(name):
  schema.load_regularizers()
  return registry.get(name)


def _entry_points():
  kw = dict(rng=KEY)
  return {
      'pgd': lambda x: attacks.pgd(linear, PARAMS, (x, LABELS), eps=8.0, p=jnp.inf,
                                   steps=2, **kw),
      'fgsm': lambda x: attacks.fgsm(linear, PARAMS, (x, LABELS), eps=8.0, p=jnp.inf),
      'multi_targeted': lambda x: attacks.multi_targeted(
          linear, PARAMS, (x, LABELS), eps=8.0, p=jnp.inf, steps=2, **kw),
      'maximize': lambda x: attacks.maximize(lambda v: LOSS(PARAMS, v, LABELS), x,
                                             eps=8.0, p=jnp.inf, steps=2, **kw),
      'min_norm': lambda x: attacks.min_norm(linear, PARAMS, (x, LABELS), max_eps=1.0),
      'min_norm_ticktock': lambda x: attacks.min_norm_ticktock(linear, PARAMS,
                                                               (x, LABELS), steps=2),
      'simba': lambda x: attacks.simba(linear, PARAMS, (x, LABELS), eps=8.0, steps=2,
                                       **kw),
      'robust_correct': lambda x: metrics.robust_correct(
          linear, PARAMS, (x, LABELS), eps=8.0, p=jnp.inf, steps=2, **kw),
      'robust_accuracy': lambda x: metrics.robust_accuracy(
          linear, PARAMS, [(x, LABELS)], eps=8.0, p=jnp.inf, steps=2, **kw),
      'accuracy_vs_eps': lambda x: metrics.accuracy_vs_eps(
          linear, PARAMS, (x, LABELS), eps_list=[0.0, 8.0], p=jnp.inf, steps=2, **kw),
      'scorpio_attack_accuracies': lambda x: metrics.scorpio_attack_accuracies(
          linear, PARAMS, (x, LABELS), eps=8.0, p=jnp.inf, steps=2, **kw),
      'attack_ara': lambda x: metrics.attack_ara(linear, PARAMS, (x, LABELS)),
      'min_norm_distances': lambda x: metrics.min_norm_distances(linear, PARAMS,
                                                                 (x, LABELS)),
      'simba_vs_pgd': lambda x: metrics.simba_vs_pgd(
          linear, PARAMS, (x, LABELS), pgd_eps=8.0, pgd_steps=2, simba_eps=8.0,
          simba_steps=2, p=jnp.inf, **kw),
      'local_linearity': lambda x: metrics.local_linearity(LOSS, PARAMS, x, LABELS,
                                                           eps=8.0, p=jnp.inf, **kw),
      'transfer_accuracy': lambda x: metrics.transfer_accuracy(
          linear, PARAMS, linear, PARAMS, (x, LABELS), eps=8.0, p=jnp.inf, steps=2, **kw),
      'adversarial': lambda x: _penalty('adversarial')(LOSS, PARAMS, (x, LABELS),
                                                      eps=8.0, **kw),
      'adversarial_l2min': lambda x: _penalty('adversarial_l2min')(
          linear, PARAMS, (x, LABELS), eps=8.0, **kw),
      'soar': lambda x: _penalty('soar')(LOSS, PARAMS, (x, LABELS), eps=8.0, **kw),
      'scorpio': lambda x: _penalty('scorpio')(LOSS, PARAMS, (x, LABELS), eps=8.0),
      'llr': lambda x: _penalty('llr')(LOSS, PARAMS, (x, LABELS), eps=8.0, **kw),
      'trades': lambda x: _penalty('trades')(linear, PARAMS, (x, LABELS), eps=8.0, **kw),
      'crt': lambda x: _penalty('crt')(SMOOTH, LAYERS, (x, LABELS), eps=1.0, **kw),
      'contrastive_explanations': lambda x: explain.contrastive_explanations(
          linear, PARAMS, (x, LABELS), eps=8.0, **kw),
      'adversarial_explanation': lambda x: explain.adversarial_explanation(
          linear, PARAMS, x, LABELS, rho=0.1, steps=2),
      'loss_surface': lambda x: explain.loss_surface(
          LOSS, PARAMS, x, LABELS, directions=(jnp.ones_like(x), jnp.ones_like(x)),
          bounds=(0.0, 1.0)),
  }


ENTRY_POINTS = _entry_points()


@pytest.mark.parametrize('name', sorted(ENTRY_POINTS))
@pytest.mark.parametrize('inputs', [PIXELS, STANDARDISED], ids=['pixels_255', 'mean_std'])
def test_inputs_outside_the_box_raise(name, inputs):
  with pytest.raises(ValueError) as info:
    ENTRY_POINTS[name](inputs)
  message = str(info.value)
  assert message.startswith('inputs must lie in bounds (0.0, 1.0)'), message
  assert f'{float(inputs.max()):g}' in message and f'{float(inputs.min()):g}' in message
  assert 'pass bounds=' in message and 'inside the model' in message


def test_matching_bounds_or_traced_inputs_are_not_refused():
  x255 = PIXELS
  x_adv = attacks.pgd(linear, PARAMS, (x255, LABELS), rng=KEY, eps=8.0, p=jnp.inf,
                      steps=2, bounds=(0.0, 255.0))
  assert float(jnp.max(jnp.abs(x_adv - x255))) <= 8.0 + 1e-4
  # Inside jit the inputs are traced: the check is skipped by design.
  jitted = jax.jit(functools.partial(attacks.fgsm, linear, eps=0.1, p=jnp.inf))
  out = jitted(PARAMS, (x255 / 255.0, LABELS))
  assert out.shape == x255.shape
