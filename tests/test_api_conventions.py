"""One calling convention across attacks, regularizers and metrics, for any JAX model.

- Regularizers take a ``loss_fn`` or a ``logits_fn``; the other kind is reported by name.
- Metrics take the same batch forms and return Python floats; dict batches are refused
  with the tuple to pass instead.
- ``params`` must be a pytree of arrays; an Equinox module that holds functions is
  refused with the ``eqx.partition`` recipe, and the recipe runs through an attack, a
  regularizer and a metric with the same results as the same network in plain ``jnp``.
- The package cites only files inside the repository.
"""

import pathlib
import re

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import attacks
from robustjax import losses
from robustjax import metrics
from robustjax import regularizers

ROOT = pathlib.Path(__file__).resolve().parents[1]
KEY = jax.random.PRNGKey(0)


def _linear():
  params = {'w': 0.5 * jax.random.normal(KEY, (6, 3)), 'b': jnp.zeros(3)}
  logits_fn = lambda p, x: x @ p['w'] + p['b']
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 6))
  y = jnp.arange(8, dtype=jnp.int32) % 3
  return params, logits_fn, x, y


# ---------------------------------------------------------------------------------------
# Regularizers: loss_fn vs logits_fn.


@pytest.mark.parametrize('name', regularizers.names())
def test_wrong_kind_of_function_is_named_before_tracing(name):
  params, logits_fn, x, y = _linear()
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  penalty = regularizers.get(name)
  expected = regularizers.takes(name)
  wrong = logits_fn if expected == 'loss_fn' else loss_fn
  # The check runs on shapes only, before the penalty and its hyperparameter checks.
  with pytest.raises(ValueError, match=f'{name} expects a {expected}') as info:
    penalty(wrong, params, (x, y), rng=KEY)
  assert 'cross_entropy_loss_fn' in str(info.value) or expected == 'logits_fn'


def test_loss_fn_returning_logits_is_named():
  params, logits_fn, x, y = _linear()
  logits_with_labels = lambda p, xs, ys: logits_fn(p, xs)  # [B, K]: not per-example
  with pytest.raises(ValueError, match=r'returns shape \(8, 3\)'):
    regularizers.gradient_norm(logits_with_labels, params, (x, y))


def test_a_function_that_is_neither_kind_keeps_its_own_error():
  params, _, x, y = _linear()

  def broken_loss(p, xs, ys):
    raise TypeError('bug inside the user loss')

  with pytest.raises(TypeError, match='bug inside the user loss'):
    regularizers.gradient_norm(broken_loss, params, (x, y))


def test_right_kind_gives_the_same_values_as_before():
  params, logits_fn, x, y = _linear()
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  values, _ = regularizers.gradient_norm(loss_fn, params, (x, y))
  grads = jax.vmap(jax.grad(lambda xi, yi: loss_fn(params, xi[None], yi[None])[0]))(x, y)
  chex.assert_shape(values, (8,))
  chex.assert_trees_all_close(values, jnp.sum(grads ** 2, axis=-1), rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Metrics: same batch forms, same return types.


def test_accuracy_takes_the_batch_forms_of_robust_accuracy_and_returns_a_float():
  params, logits_fn, x, y = _linear()
  want = float(np.mean(np.argmax(np.asarray(x @ params['w']), -1) == np.asarray(y)))
  assert 0.0 < want < 1.0
  mask = jnp.arange(8) < 5
  want_masked = float(np.mean((np.argmax(np.asarray(x @ params['w']), -1)
                               == np.asarray(y))[:5]))
  forms = {
      'inputs, labels (older form)': metrics.accuracy(logits_fn, params, x, y),
      'one batch': metrics.accuracy(logits_fn, params, (x, y)),
      'iterable of batches': metrics.accuracy(logits_fn, params,
                                              iter([(x[:3], y[:3]), (x[3:], y[3:])])),
      'robust_accuracy at eps 0': metrics.robust_accuracy(
          logits_fn, params, (x, y), rng=KEY, eps=0.0, p=2.0, steps=0),
  }
  for form, got in forms.items():
    assert type(got) is float, form  # pylint: disable=unidiomatic-typecheck
    assert got == pytest.approx(want, abs=1e-12), form
  masked = [metrics.accuracy(logits_fn, params, x, y, mask=mask),
            metrics.accuracy(logits_fn, params, (x, y, mask)),
            metrics.robust_accuracy(logits_fn, params, (x, y, mask), rng=KEY, eps=0.0,
                                    p=2.0, steps=0)]
  assert masked == pytest.approx([want_masked] * 3, abs=1e-12)
  traced = jax.jit(lambda prm: metrics.accuracy(logits_fn, prm, (x, y)))(params)
  assert float(traced) == pytest.approx(want)


def _dict_batch_calls(logits_fn, params, batch):
  loss_fn = losses.cross_entropy_loss_fn(logits_fn)
  kw = dict(rng=KEY, p=2.0, steps=1)
  return {
      'accuracy': lambda: metrics.accuracy(logits_fn, params, batch),
      'robust_accuracy': lambda: metrics.robust_accuracy(logits_fn, params, batch,
                                                         eps=0.1, **kw),
      'robust_accuracy over dicts': lambda: metrics.robust_accuracy(
          logits_fn, params, [batch, batch], eps=0.1, **kw),
      'accuracy_vs_eps': lambda: metrics.accuracy_vs_eps(logits_fn, params, batch,
                                                         eps_list=[0.1], **kw),
      'pgd': lambda: attacks.pgd(logits_fn, params, batch, eps=0.1, **kw),
      'gradient_norm': lambda: regularizers.gradient_norm(loss_fn, params, batch),
  }


@pytest.mark.parametrize('entry', list(_dict_batch_calls(None, None, None)))
def test_dict_batch_is_refused_with_the_tuple_to_pass(entry):
  params, logits_fn, x, y = _linear()
  call = _dict_batch_calls(logits_fn, params, {'label': y, 'image': x})[entry]
  with pytest.raises(ValueError, match='dict') as info:
    call()
  assert "['image'], " in str(info.value) and "['label'])" in str(info.value)


# ---------------------------------------------------------------------------------------
# Params must be arrays; Equinox through partition / combine.


def test_non_array_params_leaf_is_named():
  params, logits_fn, x, y = _linear()
  bad = dict(params, act=lambda v: v)
  for call in [
      lambda: attacks.pgd(logits_fn, bad, (x, y), rng=KEY, eps=0.1, p=2.0, steps=1),
      lambda: regularizers.gradient_norm(losses.cross_entropy_loss_fn(logits_fn), bad,
                                         (x, y)),
      lambda: metrics.accuracy(logits_fn, bad, (x, y)),
      lambda: metrics.robust_accuracy(logits_fn, bad, (x, y), rng=KEY, eps=0.1, p=2.0,
                                      steps=1),
  ]:
    with pytest.raises(ValueError, match=r"params\['act'\] is a function"):
      call()


class TestEquinox:
  """An Equinox MLP: refused whole, accepted split, same results as plain jnp."""

  def _model(self):
    return eqx.nn.MLP(in_size=6, out_size=3, width_size=5, depth=1,
                           activation=jax.nn.softplus, key=jax.random.PRNGKey(3))

  def _plain(self, model):
    """The same network in plain jnp, with the weights copied into a dict."""
    params = [{'w': layer.weight.T, 'b': layer.bias} for layer in model.layers]

    def logits_fn(p, x):
      h = jax.nn.softplus(x @ p[0]['w'] + p[0]['b'])
      return h @ p[1]['w'] + p[1]['b']

    return params, logits_fn

  def test_module_as_params_gets_the_partition_recipe(self):
    model = self._model()
    logits_fn = lambda m, x: jax.vmap(m)(x)
    _, _, x, y = _linear()
    calls = {
        'attack': lambda: attacks.pgd(logits_fn, model, (x, y), rng=KEY, eps=0.1, p=2.0,
                                      steps=2),
        'regularizer': lambda: regularizers.gradient_norm(
            losses.cross_entropy_loss_fn(logits_fn), model, (x, y)),
        'metric': lambda: metrics.robust_accuracy(logits_fn, model, (x, y), rng=KEY,
                                                  eps=0.1, p=2.0, steps=2),
    }
    for name, call in calls.items():
      with pytest.raises(ValueError, match=r'eqx\.partition\(model, eqx\.is_array\)'):
        call()
      del name

  def test_partitioned_module_runs_attack_regularizer_and_metric(self):
    model = self._model()
    params, static = eqx.partition(model, eqx.is_array)
    logits_fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
    plain_params, plain_logits_fn = self._plain(model)
    _, _, x, y = _linear()
    chex.assert_trees_all_close(logits_fn(params, x), plain_logits_fn(plain_params, x),
                                rtol=1e-6)

    # Attack: the same points as on the plain network, inside the ball and the box.
    kw = dict(rng=KEY, eps=0.3, p=2.0, steps=5)
    x_adv = attacks.pgd(logits_fn, params, (x, y), **kw)
    chex.assert_trees_all_close(x_adv, attacks.pgd(plain_logits_fn, plain_params, (x, y),
                                                   **kw), atol=1e-5)
    chex.assert_tree_all_finite(x_adv)
    assert float(jnp.max(jnp.linalg.norm(x_adv - x, axis=-1))) <= 0.3 + 1e-5
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0

    # Regularizer: values and the params-gradient of the penalty, leaf by leaf.
    loss_fn = losses.cross_entropy_loss_fn(logits_fn)
    plain_loss_fn = losses.cross_entropy_loss_fn(plain_logits_fn)
    penalty = lambda p, fn: regularizers.gradient_norm(fn, p, (x, y))[0].mean()
    value, grads = jax.value_and_grad(penalty)(params, loss_fn)
    plain_value, plain_grads = jax.value_and_grad(penalty)(plain_params, plain_loss_fn)
    assert float(value) == pytest.approx(float(plain_value), rel=1e-5)
    assert float(value) > 0
    as_plain = [{'w': layer.weight.T, 'b': layer.bias} for layer in grads.layers]
    chex.assert_trees_all_close(as_plain, plain_grads, rtol=1e-4, atol=1e-7)

    # Metric: robust accuracy equals the plain network's, and is below clean accuracy.
    robust = metrics.robust_accuracy(logits_fn, params, (x, y), **kw)
    assert robust == metrics.robust_accuracy(plain_logits_fn, plain_params, (x, y), **kw)
    assert robust <= metrics.accuracy(logits_fn, params, (x, y))


# ---------------------------------------------------------------------------------------
# Self-contained docs.

_SOURCES = ['robustjax', 'configs', 'experiments', 'colabs', 'docs', 'tests', 'README.md']
_OUTSIDE = re.compile(r'DESIGN\.md|\.\./shared|/work/shared|\bslides?\b', re.IGNORECASE)


def _text_files():
  for entry in _SOURCES:
    path = ROOT / entry
    files = [path] if path.is_file() else sorted(path.rglob('*'))
    for f in files:
      if f.suffix in ('.py', '.md', '.ipynb', '.toml') and f != pathlib.Path(__file__):
        yield f


def test_no_references_to_files_outside_the_repository():
  hits = []
  for f in _text_files():
    for number, line in enumerate(f.read_text(encoding='utf-8').splitlines(), 1):
      if 'image/png' in line:
        continue
      # docs/design.md is the repository's own design document.
      if _OUTSIDE.search(line.replace('docs/design.md', '')):
        hits.append(f'{f.relative_to(ROOT)}:{number}: {line.strip()[:100]}')
  assert not hits, '\n'.join(hits)


def test_cited_repository_docs_exist():
  cited = set()
  for f in _text_files():
    cited |= set(re.findall(r'\bdocs/[\w./-]+\.md\b', f.read_text(encoding='utf-8')))
  assert 'docs/design.md' in cited
  missing = sorted(c for c in cited if not (ROOT / c).is_file())
  assert not missing, missing
