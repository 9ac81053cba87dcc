"""Tests of robustjax.curvature against dense jax.hessian / jax.jacobian on tiny models.

Most tests run in float64 (``jax.enable_x64``) so finite-difference convergence orders
are visible above round-off.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import curvature
from robustjax import losses

B, SHAPE, HIDDEN, K = 3, (2, 2), 5, 3
D = SHAPE[0] * SHAPE[1]


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def init_params(seed=0, scale=1.0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  dtype = jnp.result_type(float)  # float64 under enable_x64, else float32
  return {
      'w1': scale * jax.random.normal(k1, (D, HIDDEN), dtype),
      'b1': 0.1 * jax.random.normal(k2, (HIDDEN,), dtype),
      'w2': scale * jax.random.normal(k3, (HIDDEN, K), dtype),
  }


def logits_fn(params, x):
  """A tiny smooth MLP on ``[B, 2, 2]`` inputs."""
  hidden = jnp.tanh(jnp.reshape(x, (x.shape[0], -1)) @ params['w1'] + params['b1'])
  return hidden @ params['w2']


loss_fn = losses.cross_entropy_loss_fn(logits_fn)


def make_batch(seed=1):
  kx, kv = jax.random.split(jax.random.PRNGKey(seed))
  x = jax.random.uniform(kx, (B,) + SHAPE, jnp.result_type(float))
  v = jax.random.normal(kv, (B,) + SHAPE, jnp.result_type(float))
  y = jnp.array([0, 2, 1], jnp.int32)
  return x, y, v


def dense_hessians(fn, params, x, y):
  """Per-example input Hessians ``[B, D, D]`` of ``fn`` by ``jax.hessian``."""

  def single(xi, yi):
    return fn(params, xi[None], yi[None])[0]

  return jnp.reshape(jax.vmap(jax.hessian(single))(x, y), (x.shape[0], D, D))


def dense_hvp(fn, params, x, y, v):
  hess = dense_hessians(fn, params, x, y)
  return jnp.reshape(jnp.einsum('bij,bj->bi', hess, jnp.reshape(v, (B, D))), x.shape)


# --- gradients ----------------------------------------------------------------------


def test_value_and_input_grad_matches_per_example_grad():
  params = init_params()
  x, y, _ = make_batch()
  values, grads = curvature.value_and_input_grad(loss_fn, params, x, y)
  np.testing.assert_allclose(values, loss_fn(params, x, y), rtol=1e-12)
  single = lambda xi, yi: loss_fn(params, xi[None], yi[None])[0]
  np.testing.assert_allclose(grads, jax.vmap(jax.grad(single))(x, y), rtol=1e-10)
  np.testing.assert_allclose(curvature.input_grad(loss_fn, params, x, y), grads)


def test_input_grad_is_differentiable_wrt_params():
  params = init_params()
  x, y, w = make_batch()
  single = lambda p, xi, yi: loss_fn(p, xi[None], yi[None])[0]

  def via_lib(p):
    return jnp.sum(w * curvature.input_grad(loss_fn, p, x, y))

  def reference(p):
    grads = jax.vmap(jax.grad(single, argnums=1), in_axes=(None, 0, 0))(p, x, y)
    return jnp.sum(w * grads)

  got, want = jax.grad(via_lib)(params), jax.grad(reference)(params)
  chex.assert_trees_all_close(got, want, rtol=1e-9, atol=1e-12)


# --- Hessian-vector products --------------------------------------------------------


def test_exact_hvp_matches_dense_hessian():
  params = init_params()
  x, y, v = make_batch()
  got = curvature.hvp(loss_fn, params, x, y, v, method='exact')
  np.testing.assert_allclose(got, dense_hvp(loss_fn, params, x, y, v), rtol=1e-9, atol=1e-12)


def test_exact_hvp_in_float32_within_float_tolerance():
  params64, (x64, y, v64) = init_params(), make_batch()
  to32 = lambda a: np.asarray(a, np.float32)
  with jax.enable_x64(False):
    params, x, v = jax.tree.map(to32, params64), to32(x64), to32(v64)
    got = curvature.hvp(loss_fn, params, x, y, v, method='exact')
    assert got.dtype == jnp.float32
  want = dense_hvp(loss_fn, params64, x64, y, v64)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def fd_error(method, h):
  params = init_params()
  x, y, v = make_batch()
  exact = dense_hvp(loss_fn, params, x, y, v)
  approx = curvature.hvp(loss_fn, params, x, y, v, method=method, h=h)
  return float(jnp.linalg.norm(approx - exact))


@pytest.mark.parametrize('method,order', [('forward', 1), ('central', 2)])
def test_finite_difference_error_shrinks_like_h_to_the_order(method, order):
  errors = [fd_error(method, h) for h in (1e-2, 5e-3, 2.5e-3)]
  ratios = [errors[0] / errors[1], errors[1] / errors[2]]
  # Halving h divides the truncation error by 2 (forward Euler) or 4 (central).
  np.testing.assert_allclose(ratios, 2.0 ** order, rtol=0.12)
  assert errors[-1] < 5e-2 * np.linalg.norm(dense_hvp(loss_fn, init_params(), *make_batch()))


def test_forward_hvp_recycles_the_given_gradient():
  params = init_params()
  x, y, v = make_batch()
  g0 = curvature.input_grad(loss_fn, params, x, y)
  h = 1e-3
  fresh = curvature.hvp(loss_fn, params, x, y, v, method='forward', h=h)
  recycled = curvature.hvp(loss_fn, params, x, y, v, method='forward', h=h, grad=g0)
  np.testing.assert_allclose(recycled, fresh, rtol=1e-12, atol=1e-12)
  # The given gradient is really used (not recomputed): shifting it shifts the result.
  shifted = curvature.hvp(loss_fn, params, x, y, v, method='forward', h=h, grad=g0 + 1.0)
  np.testing.assert_allclose(shifted, fresh - 1.0 / h, rtol=1e-9)


@pytest.mark.parametrize('method,with_grad,gradients', [
    ('exact', False, 1), ('forward', False, 2), ('forward', True, 1), ('central', False, 2)])
def test_hvp_cost_in_gradient_evaluations(method, with_grad, gradients):
  """Counts loss_fn traces: each gradient evaluation traces the loss once."""
  params = init_params()
  x, y, v = make_batch()
  calls = []

  def counted(p, inputs, labels):
    calls.append(1)
    return loss_fn(p, inputs, labels)

  grad = jnp.zeros_like(x) if with_grad else None
  jax.make_jaxpr(lambda xx: curvature.hvp(counted, params, xx, y, v, method=method,
                                          grad=grad))(x)
  assert len(calls) == gradients


@pytest.mark.parametrize('method', ('exact', 'forward', 'central'))
def test_hvp_is_differentiable_wrt_params(method):
  params = init_params()
  x, y, v = make_batch()
  w = jax.random.normal(jax.random.PRNGKey(5), x.shape, jnp.float64)

  def objective(p):
    return jnp.sum(w * curvature.hvp(loss_fn, p, x, y, v, method=method, h=1e-2))

  grad = jax.jit(jax.grad(objective))(params)
  # Directional derivative along a random params direction u by central differences.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(6), len(leaves))
  u = jax.tree.unflatten(treedef, [jax.random.normal(k, l.shape, l.dtype)
                                   for k, l in zip(keys, leaves)])
  t = 1e-5
  shift = lambda s: jax.tree.map(lambda a, b: a + s * b, params, u)
  fd = (objective(shift(t)) - objective(shift(-t))) / (2 * t)
  directional = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(u)))
  np.testing.assert_allclose(directional, fd, rtol=1e-6)
  if method == 'exact':  # and against differentiating the dense Hessian itself
    dense = jax.grad(lambda p: jnp.sum(w * dense_hvp(loss_fn, p, x, y, v)))(params)
    chex.assert_trees_all_close(grad, dense, rtol=1e-8, atol=1e-11)


def test_hvp_examples_do_not_interact_and_jit_agrees():
  params = init_params()
  x, y, v = make_batch()
  batched = jax.jit(lambda a, b, c: curvature.hvp(loss_fn, params, a, b, c))(x, y, v)
  for b in range(B):
    single = curvature.hvp(loss_fn, params, x[b:b + 1], y[b:b + 1], v[b:b + 1])
    np.testing.assert_allclose(batched[b:b + 1], single, rtol=1e-10, atol=1e-13)


# --- Gauss-Newton -------------------------------------------------------------------


def dense_ggn_vp(params, x, v):
  """``Jᵀ (diag(p) − p pᵀ) J v`` per example from dense Jacobians ``[K, D]``."""

  def single(xi, vi):
    jac = jnp.reshape(jax.jacobian(lambda a: logits_fn(params, a[None])[0])(xi), (K, D))
    prob = jax.nn.softmax(logits_fn(params, xi[None])[0])
    ggn = jac.T @ (jnp.diag(prob) - jnp.outer(prob, prob)) @ jac
    return jnp.reshape(ggn @ jnp.reshape(vi, (D,)), xi.shape)

  return jax.vmap(single)(x, v)


def test_ggn_vp_matches_dense_gauss_newton():
  params = init_params()
  x, _, v = make_batch()
  got = curvature.ggn_vp(logits_fn, params, x, v)
  np.testing.assert_allclose(got, dense_ggn_vp(params, x, v), rtol=1e-9, atol=1e-12)
  assert np.all(jnp.sum(got * v, axis=(1, 2)) >= -1e-12)  # positive semi-definite


def test_ggn_equals_hessian_for_a_linear_model():
  params = init_params()
  linear = lambda p, x: jnp.reshape(x, (x.shape[0], -1)) @ p['w1'][:, :K]
  x, y, v = make_batch()
  ggn = curvature.ggn_vp(linear, params, x, v)
  hess = curvature.hvp(losses.cross_entropy_loss_fn(linear), params, x, y, v)
  np.testing.assert_allclose(ggn, hess, rtol=1e-9, atol=1e-12)


# --- top eigenvalue -----------------------------------------------------------------


def shifted_loss_fn(params, x, labels):
  """CE plus a quadratic whose dominant eigenvalue (-4) is negative and well separated."""
  flat = jnp.reshape(x, (x.shape[0], -1))
  diag = jnp.array([-4.0, 1.0, 0.5, -0.2])
  rot, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(9), (D, D), jnp.float64))
  quad = 0.5 * jnp.sum((flat @ rot) ** 2 * diag, axis=1)
  return loss_fn(params, x, labels) + quad


@pytest.mark.parametrize('fn', (loss_fn, shifted_loss_fn), ids=('ce', 'ce_plus_quadratic'))
def test_top_hessian_eigenvalue_matches_eigh(fn):
  params = init_params(scale=2.0)
  x, y, _ = make_batch()
  value, vector = curvature.top_hessian_eigenvalue(fn, params, x, y,
                                                   rng=jax.random.PRNGKey(3), num_iters=300)
  eigvals, eigvecs = jnp.linalg.eigh(dense_hessians(fn, params, x, y))
  top = jnp.argmax(jnp.abs(eigvals), axis=1)
  expected = jnp.take_along_axis(eigvals, top[:, None], axis=1)[:, 0]
  gap = jnp.sort(jnp.abs(eigvals), axis=1)
  assert np.all(gap[:, -2] < 0.9 * gap[:, -1])  # power iteration converges on this model
  np.testing.assert_allclose(value, expected, rtol=1e-5)
  top_vec = jnp.take_along_axis(eigvecs, top[:, None, None], axis=2)[..., 0]
  overlap = jnp.abs(jnp.sum(jnp.reshape(vector, (B, D)) * top_vec, axis=1))
  np.testing.assert_allclose(overlap, 1.0, atol=1e-4)
  if fn is shifted_loss_fn:
    assert np.all(value < -3.0)  # the signed eigenvalue, not its magnitude


def test_top_hessian_eigenvalue_with_finite_differences():
  params = init_params(scale=2.0)
  x, y, _ = make_batch()
  exact, _ = curvature.top_hessian_eigenvalue(shifted_loss_fn, params, x, y,
                                              rng=jax.random.PRNGKey(3), num_iters=60)
  for method in ('forward', 'central'):
    approx, _ = curvature.top_hessian_eigenvalue(shifted_loss_fn, params, x, y,
                                                 rng=jax.random.PRNGKey(3), num_iters=60,
                                                 method=method, h=1e-4)
    np.testing.assert_allclose(approx, exact, rtol=1e-3)


# --- bad input ----------------------------------------------------------------------


def test_bad_input_raises_naming_the_argument():
  params = init_params()
  x, y, v = make_batch()
  with pytest.raises(ValueError, match="unknown method 'backward'.*'exact'"):
    curvature.hvp(loss_fn, params, x, y, v, method='backward')
  for h in (0.0, -1e-3):
    with pytest.raises(ValueError, match='h must be > 0'):
      curvature.hvp(loss_fn, params, x, y, v, method='central', h=h)
  with pytest.raises(ValueError, match='v must have the shape of inputs'):
    curvature.hvp(loss_fn, params, x, y, v[:, :1])
  with pytest.raises(ValueError, match='grad must have the shape of inputs'):
    curvature.hvp(loss_fn, params, x, y, v, method='forward', grad=v[:1])
  with pytest.raises(ValueError, match='inputs must be a floating'):
    curvature.input_grad(loss_fn, params, x.astype(jnp.int32), y)
  with pytest.raises(ValueError, match='inputs must be a floating'):
    curvature.hvp(loss_fn, params, x.astype(jnp.int32), y, v.astype(jnp.int32))
  with pytest.raises(ValueError, match='v must be a floating'):
    curvature.ggn_vp(logits_fn, params, x, v.astype(jnp.int32))
  scalar_loss = lambda p, a, b: jnp.mean(loss_fn(p, a, b))
  with pytest.raises(ValueError, match=r'loss_fn must return per-example values.*\(3,\)'):
    curvature.hvp(scalar_loss, params, x, y, v)
  with pytest.raises(ValueError, match=r'loss_fn must return per-example'):
    curvature.input_grad(scalar_loss, params, x, y)
  with pytest.raises(ValueError, match='num_iters must be an integer >= 1'):
    curvature.top_hessian_eigenvalue(loss_fn, params, x, y, rng=jax.random.PRNGKey(0),
                                     num_iters=0)
  with pytest.raises(ValueError, match='unknown method'):
    curvature.top_hessian_eigenvalue(loss_fn, params, x, y, rng=jax.random.PRNGKey(0),
                                     method='lanczos')
