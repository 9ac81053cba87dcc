"""Tests for robustjax.models: shapes, zero-init residuals, HHReLU, the BatchNorm policy."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import models

KEY = jax.random.key(0)
SHAPE = (8, 8, 1)  # digits-sized inputs keep every model cheap


def _inputs(batch=3, shape=SHAPE, seed=1):
  rng = np.random.default_rng(seed)  # NumPy: no per-shape compilation
  return jnp.asarray(rng.random((batch, *shape)), jnp.float32)


def _tiny_resnet(**kwargs):
  # One block still has three BatchNorms (bn1, bn2, bn_final) to couple examples.
  return models.PreActResNet(stage_sizes=(1,), stage_widths=(4,), num_classes=3,
                             **kwargs)


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize('d', [1.0, 2.5])
def test_hhrelu_matches_closed_form_and_derivative(d):
  x = jnp.array([-2.0, -0.1, 0.0, 0.05, 0.1, 0.19, 0.21, 1.0, 3.0])
  knee = 1 / (2 * d)
  expected = np.where(x < 0, 0.0, np.where(x < knee, d * x**2, x - 1 / (4 * d)))
  np.testing.assert_allclose(models.hhrelu(x, d=d), expected, rtol=1e-6, atol=1e-7)
  grad = jax.vmap(jax.grad(lambda t: models.hhrelu(t, d=d)))(x)
  np.testing.assert_allclose(grad, np.clip(2 * d * np.asarray(x), 0, 1), rtol=1e-6)
  # Continuous value and first derivative across the knee.
  eps = 1e-4
  f = lambda t: models.hhrelu(jnp.float32(t), d=d)
  assert abs(f(knee + eps) - f(knee - eps)) < 1e-3
  df = jax.grad(f)
  assert abs(df(knee + eps) - df(knee - eps)) < 1e-3


def test_hhrelu_default_d_is_papers():
  assert models.activations.HHRELU_DEFAULT_D == 1.0
  np.testing.assert_allclose(models.hhrelu(jnp.array([0.25, 2.0])), [0.0625, 1.75])
  np.testing.assert_allclose(models.get_activation('hhrelu', d=2.0)(jnp.array(2.0)),
                             2.0 - 1 / 8)


def test_get_activation_names_and_errors():
  x = jnp.array([-1.0, 0.5])
  np.testing.assert_allclose(models.get_activation('relu')(x), [0.0, 0.5])
  np.testing.assert_allclose(models.get_activation('softplus')(x), np.log1p(np.exp(x)),
                             rtol=1e-6)
  for name in ('sigmoid', 'tanh', 'hhrelu'):
    assert models.get_activation(name)(x).shape == (2,)
  with pytest.raises(ValueError, match="valid choices: 'relu'.*'hhrelu'"):
    models.get_activation('gelu')


# ---------------------------------------------------------------- registry / shapes


@pytest.mark.parametrize('name,kwargs', [
    ('mlp', {}),
    ('mlp', {'widths': (16,), 'activation': 'softplus'}),
    ('cnn', {'channels': (4, 4, 8, 8)}),
    ('resnet18', {'width_multiplier': 1 / 16}),
    ('resnet44', {'width_multiplier': 0.25, 'activation': 'hhrelu'}),
    ('wrn28_10', {'widen_factor': 0.25, 'depth': 10}),
    ('wrn40_8', {'widen_factor': 0.25, 'depth': 10, 'activation': 'softplus'}),
])
def test_registry_models_output_shapes(name, kwargs):
  # Shapes only: jax.eval_shape traces without compiling, which keeps this cheap.
  model = models.create(name, num_classes=5, **kwargs)
  variables = jax.eval_shape(lambda: models.init(model, KEY, SHAPE))
  params, rest = models.split_variables(variables)
  assert ('batch_stats' in rest) == (name not in ('mlp', 'cnn'))
  logits = jax.eval_shape(lambda p, r, x: models.logits_fn_for(model, r)(p, x), params,
                          rest, _inputs())
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  clean = jax.eval_shape(lambda p, b, x: models.bn_policy(model, p, b, x)[0], params,
                         rest.get('batch_stats'), _inputs())
  assert clean.logits.shape == (3, 5)
  assert jax.tree.structure(clean.batch_stats) == jax.tree.structure(
      rest.get('batch_stats', {}))


def test_small_models_run_on_digits():
  for name, kwargs in (('mlp', {'widths': (32,)}), ('cnn', {'channels': (4, 4, 8, 8)})):
    model = models.create(name, num_classes=10, **kwargs)
    params, rest = models.split_variables(models.init(model, KEY, SHAPE))
    logits = jax.jit(models.logits_fn_for(model, rest))(params, _inputs())
    assert logits.shape == (3, 10) and bool(jnp.all(jnp.isfinite(logits)))


def test_cnn_matches_soar_architecture_on_cifar_shapes():
  model = models.create('cnn', num_classes=10)
  params = jax.eval_shape(lambda: models.init(model, KEY, (32, 32, 3)))['params']
  kernels = [params[f'Conv_{i}']['kernel'].shape for i in range(4)]
  assert kernels == [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64), (3, 3, 64, 64)]
  assert params['Dense_0']['kernel'].shape == (8 * 8 * 64, 10)


def _numpy_conv(x, kernel, bias, stride, pad):
  """Direct convolution by loops over the kernel taps: ``x [B, H, W, C]``, HWIO kernel."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, _, out = kernel.shape
  oh, ow = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
  y = np.zeros((x.shape[0], oh, ow, out)) + bias
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
      y += patch @ kernel[i, j]
  return y


@pytest.mark.parametrize('conv_impl', ['xla', 'patches'])
def test_small_cnn_is_wong_kolters_small_model(conv_impl):
  """28x28 -> 14x14 -> 7x7 by two 4x4 stride-2 convolutions with padding 1, dense 100."""
  mean, std = 0.2860, 0.3530
  model = models.create('small_cnn', num_classes=10, mean=(mean,), std=(std,),
                        conv_impl=conv_impl)
  params = models.init(model, jax.random.PRNGKey(0), (28, 28, 1))['params']
  shapes = jax.tree_util.tree_map(np.shape, params)
  assert shapes == {'Conv_0': {'kernel': (4, 4, 1, 16), 'bias': (16,)},
                    'Conv_1': {'kernel': (4, 4, 16, 32), 'bias': (32,)},
                    'Dense_0': {'kernel': (32 * 7 * 7, 100), 'bias': (100,)},
                    'Dense_1': {'kernel': (100, 10), 'bias': (10,)}}
  x = np.random.default_rng(0).random((3, 28, 28, 1))
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  h = np.maximum(_numpy_conv((x - mean) / std, p['Conv_0']['kernel'], p['Conv_0']['bias'],
                             2, 1), 0)
  h = np.maximum(_numpy_conv(h, p['Conv_1']['kernel'], p['Conv_1']['bias'], 2, 1), 0)
  assert h.shape == (3, 7, 7, 32)
  h = np.maximum(h.reshape(3, -1) @ p['Dense_0']['kernel'] + p['Dense_0']['bias'], 0)
  expected = h @ p['Dense_1']['kernel'] + p['Dense_1']['bias']
  np.testing.assert_allclose(model.apply({'params': params}, jnp.asarray(x, jnp.float32)),
                             expected, rtol=1e-4, atol=1e-4)


def test_default_depths():
  wrn = models.create('wrn28_10', num_classes=10)
  assert (wrn.depth, wrn.widen_factor) == (28, 10)
  assert models.create('wrn40_8', num_classes=10).depth == 40
  assert tuple(models.create('resnet44', num_classes=10).stage_sizes) == (7, 7, 7)
  assert tuple(models.create('resnet18', num_classes=10).stage_sizes) == (2, 2, 2, 2)


def test_create_rejects_unknown_name_and_bad_classes():
  with pytest.raises(ValueError, match="unknown model name 'vgg'.*'resnet44'"):
    models.create('vgg', num_classes=10)
  with pytest.raises(ValueError, match='num_classes'):
    models.create('mlp', num_classes=0)


def test_standardisation_lives_inside_the_model():
  mean, std = (0.3,), (0.2,)
  plain = models.create('mlp', num_classes=4, widths=(8,))
  normed = models.create('mlp', num_classes=4, widths=(8,), mean=mean, std=std)
  params = models.init(plain, KEY, SHAPE)['params']
  x = _inputs()
  np.testing.assert_allclose(normed.apply({'params': params}, x),
                             plain.apply({'params': params}, (x - 0.3) / 0.2), rtol=1e-5)


# ---------------------------------------------------------------- residual blocks


def test_fresh_block_is_identity_on_its_residual_path():
  x = _inputs(shape=(4, 4, 6))
  block = models.PreActBlock(features=6)
  variables = jax.jit(block.init)(KEY, x)
  assert not np.any(variables['params']['conv2']['kernel'])
  np.testing.assert_array_equal(jax.jit(block.apply)(variables, x), x)
  # A projection block outputs its shortcut only.
  proj = models.PreActBlock(features=8, strides=2)
  v = jax.jit(proj.init)(KEY, x)
  pre = jax.nn.relu(x)  # fresh BN at eval: running stats (0, 1), scale 1, bias 0
  pre = pre / jnp.sqrt(1 + 1e-5)
  shortcut = jax.lax.conv_general_dilated(
      pre, v['params']['shortcut']['kernel'], (2, 2), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(jax.jit(proj.apply)(v, x), shortcut, rtol=1e-5, atol=1e-6)


def test_zero_init_can_be_disabled():
  block = models.PreActBlock(features=6, zero_init=False)
  variables = jax.jit(block.init)(KEY, _inputs(shape=(4, 4, 6)))
  assert np.any(variables['params']['conv2']['kernel'])


# ---------------------------------------------------------------- BatchNorm policy


@functools.lru_cache(maxsize=1)
def _trained_tiny_resnet():
  """A tiny ResNet whose params are perturbed away from init so all layers matter."""
  model = _tiny_resnet(zero_init_residual=False)
  variables = jax.jit(lambda k: models.init(model, k, SHAPE))(KEY)
  params, rest = models.split_variables(variables)
  rng = np.random.default_rng(7)
  params = jax.tree.map(
      lambda l: jnp.asarray(np.asarray(l) + 0.1 * rng.standard_normal(l.shape),
                            jnp.float32), params)
  return model, params, rest['batch_stats']


def test_clean_policy_matches_train_mode_on_clean_inputs():
  model, params, batch_stats = _trained_tiny_resnet()
  x = _inputs(batch=4)
  @jax.jit
  def run(params):
    clean, logits_fn = models.bn_policy(model, params, batch_stats, x)
    train_logits = models.logits_fn_for(model, {'batch_stats': batch_stats},
                                        train=True)(params, x)
    return clean, logits_fn(params, x), train_logits
  clean, frozen_logits, train_logits = run(params)
  np.testing.assert_allclose(clean.logits, train_logits, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(frozen_logits, train_logits, rtol=1e-5, atol=1e-5)
  # Running averages moved towards the clean batch's statistics.
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), batch_stats,
                         clean.batch_stats)
  assert all(jax.tree.leaves(changed))
  # The parameter gradient through the frozen pass equals the train-mode one.
  def via_policy(p):
    _, fn = models.bn_policy(model, p, batch_stats, x)
    return jnp.sum(jnp.sin(fn(p, x)))
  def via_train(p):
    return jnp.sum(jnp.sin(models.clean_pass(model, p, batch_stats, x).logits))
  g1, g2 = jax.jit(lambda p: (jax.grad(via_policy)(p), jax.grad(via_train)(p)))(params)
  chex.assert_trees_all_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_clean_policy_perturbed_examples_do_not_interact():
  model, params, batch_stats = _trained_tiny_resnet()
  x = _inputs(batch=3)
  clean = jax.jit(lambda p: models.clean_pass(model, p, batch_stats, x))(params)
  logits_fn = jax.jit(models.frozen_stats_logits_fn(model, clean.clean_stats, batch_stats))
  x_adv = x + 0.05 * _inputs(batch=3, seed=3)
  jac = jax.jit(jax.jacobian(lambda z: logits_fn(params, z)))(x_adv)  # [B,K,B,8,8,1]
  for i in range(3):
    for j in range(3):
      block = jnp.abs(jac[i, :, j]).max()
      assert (block > 0) if i == j else (block == 0), (i, j, block)
  # Changing another example leaves example 0's logits unchanged ...
  moved = x_adv.at[2].set(1.0 - x_adv[2])
  np.testing.assert_allclose(logits_fn(params, moved)[:2], logits_fn(params, x_adv)[:2],
                             rtol=1e-6, atol=1e-7)
  # ... unlike plain train mode, where the batch statistics couple them.
  train_fn = jax.jit(models.logits_fn_for(model, {'batch_stats': batch_stats},
                                          train=True))
  assert jnp.abs(train_fn(params, moved)[0] - train_fn(params, x_adv)[0]).max() > 1e-4
  # Any batch size works for perturbed passes.
  assert logits_fn(params, x_adv[:1]).shape == (1, 3)


def test_clean_policy_for_models_without_batchnorm():
  model = models.create('mlp', num_classes=3, widths=(8,))
  params, rest = models.split_variables(models.init(model, KEY, SHAPE))
  x = _inputs()
  clean, logits_fn = models.bn_policy(model, params, rest.get('batch_stats'), x)
  assert clean.batch_stats == {} and clean.clean_stats == {}
  np.testing.assert_allclose(logits_fn(params, x), clean.logits, rtol=1e-6)
  np.testing.assert_allclose(models.logits_fn_for(model, rest)(params, x), clean.logits,
                             rtol=1e-6)
  empty = models.logits_fn_for(model, {'batch_stats': clean.batch_stats})
  np.testing.assert_allclose(empty(params, x), clean.logits, rtol=1e-6)


def test_eval_mode_uses_running_averages():
  model, params, batch_stats = _trained_tiny_resnet()
  x = _inputs(batch=4)
  eval_fn = jax.jit(models.logits_fn_for(model, {'batch_stats': batch_stats}))
  # Eval-mode logits of one example do not depend on the rest of the batch.
  np.testing.assert_allclose(eval_fn(params, x)[:1], eval_fn(params, x[:1]), rtol=1e-5,
                             atol=1e-6)
