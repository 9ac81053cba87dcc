"""robustjax.models.conv against XLA's own convolution and flax's max-pool.

Values, first derivatives and dense Hessians (float64) equal ``lax.conv_general_dilated``
/ ``flax.linen.max_pool`` for both kernel-derivative routes (patch GEMM and XLA's),
strides, padding modes and kernel dilation; the models give the same logits, HVPs,
``jax.linearize`` and ``vmap`` results with either ``conv_impl``; a sharded step runs on
the 4 simulated devices; attacks still see the convolutions (``auto_unroll``).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax
import numpy as np
import optax
import pytest

from robustjax import models
from robustjax.attacks import loop
from robustjax.models import conv
from robustjax.training import step as step_lib

NHWC = ('NHWC', 'HWIO', 'NHWC')
CASES = [  # (strides, padding, kernel dilation, kernel [kh, kw, C, O])
    ((1, 1), 'SAME', (1, 1), (3, 3, 2, 3)),
    ((2, 2), 'SAME', (1, 1), (3, 3, 2, 3)),
    ((1, 2), 'VALID', (1, 1), (3, 2, 2, 3)),
    ((1, 1), ((2, 1), (0, 2)), (2, 1), (2, 3, 2, 3)),
    ((2, 1), 'SAME', (1, 2), (1, 3, 2, 3)),
]


def _pair(strides, padding, dilation):
  def ref(x, w):
    return lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=NHWC)

  def new(x, w):
    return conv.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                     dimension_numbers=NHWC)
  return ref, new


def _max_abs(a, b):
  return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v))))
             for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _derivatives(conv_fn):
  """Jitted (value, gradient, dense Hessian, JVP) of a scalar loss of ``conv_fn(x, w)``."""
  def loss(x, w):
    out = conv_fn(x, w)
    return jnp.sum(jnp.tanh(out) ** 2 * jnp.cos(out))

  @jax.jit
  def run(x, w, dx, dw):
    return (conv_fn(x, w), jax.grad(loss, (0, 1))(x, w), jax.hessian(loss, (0, 1))(x, w),
            jax.jvp(conv_fn, (x, w), (dx, dw))[1])
  return run


@pytest.mark.parametrize('depth', [0, 1000], ids=['xla_kernel_term', 'patch_gemm'])
def test_conv_value_gradients_and_hessian_equal_lax(monkeypatch, depth):
  monkeypatch.setattr(conv, 'MAX_PATCH_DEPTH', depth)
  with jax.enable_x64(True):
    key = jax.random.PRNGKey(0)
    for strides, padding, dilation, kshape in CASES:
      x = jax.random.normal(key, (2, 5, 6, kshape[2]), jnp.float64)
      w = jax.random.normal(jax.random.fold_in(key, 1), kshape, jnp.float64)
      dx = jax.random.normal(jax.random.fold_in(key, 2), x.shape, x.dtype)
      dw = jax.random.normal(jax.random.fold_in(key, 3), w.shape, w.dtype)
      ref, new = _pair(strides, padding, dilation)
      got = _derivatives(new)(x, w, dx, dw)
      want = _derivatives(ref)(x, w, dx, dw)
      case = (strides, padding, dilation)
      for name, g, v, tol in zip(('value', 'gradient', 'hessian', 'jvp'), got, want,
                                 (1e-12, 1e-11, 1e-10, 1e-11)):
        assert _max_abs(g, v) < tol, (name, case)


def test_patches_gemm_is_the_convolution():
  key = jax.random.PRNGKey(3)
  for strides, padding, dilation, kshape in CASES:
    if isinstance(padding, str):
      continue
    x = jax.random.normal(key, (2, 5, 6, kshape[2]))
    w = jax.random.normal(key, kshape)
    cols = conv.patches(x, kshape[:2], strides, padding, dilation)
    got = cols @ w.reshape(-1, kshape[3])
    ref = _pair(strides, padding, dilation)[0](x, w)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_unsupported_layouts_fall_back_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 6, 5))  # NCHW
  w = jax.random.normal(jax.random.PRNGKey(1), (4, 3, 3, 3))  # OIHW
  args = ((1, 1), 'SAME')
  kw = {'dimension_numbers': ('NCHW', 'OIHW', 'NCHW')}
  np.testing.assert_array_equal(conv.conv_general_dilated(x, w, *args, **kw),
                                lax.conv_general_dilated(x, w, *args, **kw))
  grouped = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 1, 4))
  xg = jnp.moveaxis(x, 1, -1)[..., :2]
  kw = {'dimension_numbers': NHWC, 'feature_group_count': 2}
  np.testing.assert_array_equal(conv.conv_general_dilated(xg, grouped, *args, **kw),
                                lax.conv_general_dilated(xg, grouped, *args, **kw))


def test_max_pool_values_and_derivatives_equal_flax_including_ties():
  with jax.enable_x64(True):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (2, 7, 6, 3), jnp.float64)  # odd height: VALID crops
    x = x.at[0, 0, 0, 0].set(x[0, 0, 1, 0])  # a tie between two entries
    x = x.at[0, 2:4, 2:4, 1].set(0.0)  # a four-way tie (a dead ReLU block)
    x = x.at[1, 4, 1, 2].set(x[1, 5, 0, 2])  # a tie on the diagonal
    ref = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    new = lambda x: conv.max_pool(x, (2, 2), strides=(2, 2), impl='patches')
    weights = jnp.arange(1.0, 4.0)
    t = jax.random.normal(jax.random.fold_in(key, 1), x.shape, x.dtype)

    def run(pool):
      loss = lambda x: jnp.sum(jnp.tanh(pool(x)) ** 2 * weights)
      return jax.jit(lambda x: (pool(x), jax.grad(loss)(x), jax.jvp(pool, (x,), (t,))[1],
                                jax.grad(lambda x: jnp.sum(pool(x)))(x),
                                jax.hessian(loss)(x)))(x)
    got, want = run(new), run(ref)
    for g, v in zip(got[:4], want[:4]):
      np.testing.assert_array_equal(g, v)
    assert _max_abs(got[4], want[4]) < 1e-12
    # at the four-way tie the whole cotangent goes to the window's first entry
    np.testing.assert_array_equal(got[3][0, 2:4, 2:4, 1], [[1.0, 0.0], [0.0, 0.0]])


def test_max_pool_overlapping_windows_use_flax():
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, 6, 2))
  np.testing.assert_array_equal(conv.max_pool(x, (3, 3), strides=(2, 2), impl='patches'),
                                nn.max_pool(x, (3, 3), strides=(2, 2)))


def test_conv_impl_is_validated_and_resolved():
  with pytest.raises(ValueError, match='conv_impl'):
    models.create('cnn', num_classes=10, conv_impl='im2col')
  with pytest.raises(ValueError, match="'auto', 'xla', 'patches'"):
    conv.for_backend('fast')
  assert conv.resolve('auto') == ('patches' if jax.default_backend() == 'cpu' else 'xla')
  assert conv.for_backend('xla') is lax.conv_general_dilated
  assert conv.for_backend('patches') is conv.conv_general_dilated


def _pair_of_models(name='cnn', shape=(8, 8, 1), **kwargs):
  """(xla model, patches model, params, rest, x, y): the same parameters serve both."""
  xla = models.create(name, num_classes=3, conv_impl='xla', **kwargs)
  fast = models.create(name, num_classes=3, conv_impl='patches', **kwargs)
  variables = models.init(xla, jax.random.PRNGKey(0), shape)
  dummy = jnp.zeros((1, *shape))
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), variables)
          == jax.tree.map(lambda a: (a.shape, a.dtype), dict(jax.eval_shape(
              lambda: fast.init(jax.random.PRNGKey(0), dummy)))))
  params, rest = models.split_variables(variables)
  x = jax.random.uniform(jax.random.PRNGKey(1), (4, *shape))
  y = jnp.arange(4) % 3
  return xla, fast, params, rest, x, y


@pytest.fixture(scope='module')
def cnn_pair():
  return _pair_of_models(channels=(3, 3, 4, 4))


def _ce(model, rest, train=False):
  logits_fn = models.logits_fn_for(model, rest, train=train)

  def loss(params, x, y):
    logp = jax.nn.log_softmax(logits_fn(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
  return logits_fn, loss


def _model_derivatives(loss, logits_fn):
  """Jitted logits, gradients, HVPs, linearize and per-example gradients of one model."""
  @jax.jit
  def run(params, x, y, v, dx):
    out, lin = jax.linearize(lambda p: logits_fn(p, x), params)
    return {
        'logits': out,
        'params grad': jax.grad(loss)(params, x, y),
        'input grad': jax.grad(loss, 1)(params, x, y),
        'params hvp': jax.jvp(lambda p: jax.grad(loss)(p, x, y), (params,), (v,))[1],
        'input hvp': jax.jvp(lambda z: jax.grad(loss, 1)(params, z, y), (x,), (dx,))[1],
        'linearize': lin(v),
        'per-example': jax.vmap(
            lambda xi, yi: jax.grad(loss)(params, xi[None], yi[None]))(x, y),
    }
  return run


def test_cnn_logits_gradients_hvps_linearize_vmap_match_xla(cnn_pair):
  xla, fast, params, rest, x, y = cnn_pair
  v = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  dx = jnp.full_like(x, 0.1)
  got = _model_derivatives(*_ce(fast, rest)[::-1])(params, x, y, v, dx)
  want = _model_derivatives(*_ce(xla, rest)[::-1])(params, x, y, v, dx)
  for key in want:
    assert _max_abs(got[key], want[key]) < 1e-4, key


def test_resnet_with_batchnorm_and_strides_matches_xla():
  xla, fast, params, rest, x, y = _pair_of_models(
      'resnet44', shape=(8, 8, 3), stage_sizes=(1, 1), stage_widths=(4, 8),
      zero_init_residual=False)

  def run(loss):
    # value and gradient, and double backprop (the gradient-norm regulariser's pattern)
    gnorm = lambda p: jnp.sum(jax.grad(loss, 1)(p, x, y) ** 2)
    return jax.jit(lambda p: (jax.value_and_grad(loss)(p, x, y), jax.grad(gnorm)(p)))(
        params)
  got, want = run(_ce(fast, rest, train=True)[1]), run(_ce(xla, rest, train=True)[1])
  assert _max_abs(got, want) < 1e-5


def test_sharded_sgd_step_on_four_devices_matches_xla_unsharded(cnn_pair):
  assert len(jax.devices()) == 4
  xla, fast, params, rest, x, y = cnn_pair
  (_, loss_x), (_, loss_f) = _ce(xla, rest), _ce(fast, rest)
  tx = optax.sgd(0.1)

  def make_step(loss):
    def train_step(params, opt, batch):
      grads = jax.grad(loss)(params, *batch)
      updates, opt = tx.update(grads, opt, params)
      return optax.apply_updates(params, updates), opt
    return train_step

  mesh = step_lib.make_mesh()
  rep, shard = step_lib.replicated(mesh), step_lib.batch_sharded(mesh)
  sharded = jax.jit(make_step(loss_f), in_shardings=(rep, rep, shard),
                    out_shardings=(rep, rep))
  batch = step_lib.global_batch((np.asarray(x), np.asarray(y)), mesh)
  got = sharded(params, tx.init(params), batch)[0]
  want = jax.tree.map(lambda p, g: p - 0.1 * g, params, jax.jit(jax.grad(loss_x))(params, x, y))
  assert _max_abs(got, want) < 1e-5


def test_patches_model_routes_through_the_custom_derivatives(cnn_pair):
  xla, fast, params, rest, x, _ = cnn_pair
  text = {impl: str(jax.make_jaxpr(models.logits_fn_for(m, rest))(params, x))
          for impl, m in (('xla', xla), ('patches', fast))}
  assert text['xla'].count('reduce_window') == 2  # flax's two max-pools
  assert 'reduce_window' not in text['patches']
  # 4 convolutions and 2 pools wrapped in custom JVPs (the ReLUs are in both)
  assert (text['patches'].count('custom_jvp_call')
          == text['xla'].count('custom_jvp_call') + 6)


def test_auto_unroll_still_sees_convolutions(cnn_pair):
  _, fast, params, rest, x, y = cnn_pair
  logits_fn = models.logits_fn_for(fast, rest)
  objective = lambda z: -jax.nn.log_softmax(logits_fn(params, z))[jnp.arange(4), y]
  expected = True if jax.default_backend() == 'cpu' else 1
  assert loop.auto_unroll(objective, x) == expected
  linear = lambda z: jnp.sum(z.reshape(4, -1), axis=1)  # no convolution: a rolled loop
  assert loop.auto_unroll(linear, x) == 1
