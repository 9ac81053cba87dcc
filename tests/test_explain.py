"""Tests of robustjax.explain: properties and closed forms on tiny models."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import explain
from robustjax import losses

B, SHAPE, K = 5, (2, 2, 3), 3  # inputs [B, H, W, C]
D = 12


def mlp(params, x):
  hidden = jnp.tanh(jnp.reshape(x, (x.shape[0], -1)) @ params['w1'])
  return hidden @ params['w2']


def linear(params, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ params['w1'][:, :2]


def make(seed=0):
  k1, k2, kx, ky = jax.random.split(jax.random.PRNGKey(seed), 4)
  params = {'w1': jax.random.normal(k1, (D, 8)), 'w2': jax.random.normal(k2, (8, K))}
  x = jax.random.uniform(kx, (B,) + SHAPE)
  y = jax.random.randint(ky, (B,), 0, K)
  return params, x, y


def unit(v):
  v = np.reshape(np.asarray(v, np.float64), (np.shape(v)[0], -1))
  return v / np.linalg.norm(v, axis=1, keepdims=True)


# --- saliency -----------------------------------------------------------------------


def test_saliency_is_the_per_example_logit_gradient():
  params, x, y = make()
  single = lambda xi, c: mlp(params, xi[None])[0, c]
  np.testing.assert_allclose(explain.saliency(mlp, params, x, y),
                             jax.vmap(jax.grad(single))(x, y), rtol=1e-5, atol=1e-6)
  predicted = jnp.argmax(mlp(params, x), axis=-1)
  np.testing.assert_allclose(explain.saliency(mlp, params, x),
                             jax.vmap(jax.grad(single))(x, predicted), rtol=1e-5, atol=1e-6)


def test_saliency_map_reductions():
  grads = jnp.arange(-6.0, 6.0).reshape((1,) + SHAPE)
  g = np.asarray(grads)
  np.testing.assert_allclose(explain.saliency_map(grads), np.abs(g).max(-1))
  np.testing.assert_allclose(explain.saliency_map(grads, reduce='abs_sum'), np.abs(g).sum(-1))
  np.testing.assert_allclose(explain.saliency_map(grads, reduce='l2'),
                             np.linalg.norm(g, axis=-1), rtol=1e-6)
  assert explain.saliency_map(grads).shape == (1, 2, 2)
  with pytest.raises(ValueError, match='unknown reduce'):
    explain.saliency_map(grads, reduce='mean')


# --- loss surface -------------------------------------------------------------------


def test_surface_directions_are_gradient_and_orthonormal():
  params, x, y = make()
  loss_fn = losses.cross_entropy_loss_fn(mlp)
  d1, d2 = explain.surface_directions(loss_fn, params, x, y, rng=jax.random.PRNGKey(1))
  grad = jax.grad(lambda v: jnp.sum(loss_fn(params, v, y)))(x)
  np.testing.assert_allclose(unit(d1), unit(grad), atol=1e-5)
  np.testing.assert_allclose(np.sum(unit(d1) * unit(d2), axis=1), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(np.reshape(d2, (B, -1)), axis=1), 1.0, rtol=1e-5)


def test_loss_surface_values_are_the_loss_on_the_grid():
  params, x, y = make()
  loss_fn = losses.cross_entropy_loss_fn(mlp)
  d1, d2 = explain.surface_directions(loss_fn, params, x, y, rng=jax.random.PRNGKey(2))
  out = explain.loss_surface(loss_fn, params, x, y, directions=(d1, d2), radius=0.5, num=5)
  assert out['values'].shape == (B, 5, 5)
  np.testing.assert_allclose(out['values'][:, 2, 2], loss_fn(params, x, y), rtol=1e-5)
  for i, j in [(0, 4), (3, 1), (4, 4)]:
    a, b = out['alphas'][i], out['betas'][j]
    np.testing.assert_allclose(out['values'][:, i, j], loss_fn(params, x + a * d1 + b * d2, y),
                               rtol=1e-5)
  # Along the gradient direction the loss rises to first order: slope = ||∇ℓ||.
  grad_norm = np.linalg.norm(np.reshape(
      jax.grad(lambda v: jnp.sum(loss_fn(params, v, y)))(x), (B, -1)), axis=1)
  fine = explain.loss_surface(loss_fn, params, x, y, directions=(d1, d2), radius=1e-2,
                              num=3)
  slope = (fine['values'][:, 2, 1] - fine['values'][:, 0, 1]) / 2e-2
  np.testing.assert_allclose(slope, grad_norm, rtol=1e-2, atol=1e-4)


def test_loss_surface_of_a_quadratic_is_closed_form_and_clips_to_the_box():
  quad = lambda prm, v, lab: 0.5 * jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=1)
  x = jnp.full((2,) + SHAPE, 0.5)
  y = jnp.zeros(2, jnp.int32)
  d1 = jnp.zeros_like(x).at[:, 0, 0, 0].set(1.0)
  d2 = jnp.zeros_like(x).at[:, 1, 1, 2].set(1.0)
  out = explain.loss_surface(quad, None, x, y, directions=(d1, d2), radius=1.0, num=3)
  base = 0.5 * D * 0.25
  a = np.asarray(out['alphas'])
  want = base + (a[:, None] * 0.5 + 0.5 * a[:, None] ** 2) + (a[None] * 0.5 + 0.5 * a[None] ** 2)
  np.testing.assert_allclose(out['values'][0], want, rtol=1e-6)
  boxed = explain.loss_surface(quad, None, x, y, directions=(d1, d2), radius=1.0, num=3,
                               bounds=(0.0, 1.0))
  assert float(boxed['values'][0, 2, 2]) == pytest.approx(base + 2 * (0.5 - 0.125))


# --- contrastive and adversarial explanations ---------------------------------------


def test_contrastive_explanations_on_a_linear_two_class_model():
  """Two classes: δ_max / δ_min are ±eps along w_other − w_y (the loss is monotone)."""
  params, x, _ = make()
  y = jnp.array([0, 1, 0, 1, 1], jnp.int32)
  eps = 0.3
  out = explain.contrastive_explanations(linear, params, (x, y), rng=jax.random.PRNGKey(3),
                                         eps=eps, steps=10, init='zero', bounds=None)
  w = np.asarray(params['w1'][:, :2])
  toward_other = (w[:, 1 - np.asarray(y)] - w[:, np.asarray(y)]).T  # [B, D]
  np.testing.assert_allclose(unit(out['delta_max']), unit(toward_other), atol=1e-4)
  np.testing.assert_allclose(unit(out['delta_min']), -unit(toward_other), atol=1e-4)
  for key in ('delta_max', 'delta_min'):
    np.testing.assert_allclose(np.linalg.norm(np.reshape(out[key], (B, -1)), axis=1), eps,
                               rtol=1e-4)
  correct = np.asarray(jnp.argmax(linear(params, x), -1) == y)
  assert 0 < correct.sum() < B  # both roles are exercised
  np.testing.assert_array_equal(out['correct'], correct)
  mask = correct[:, None, None, None]
  np.testing.assert_array_equal(out['pertinent_positive'],
                                np.where(mask, out['delta_min'], out['delta_max']))
  np.testing.assert_array_equal(out['pertinent_negative'],
                                np.where(mask, out['delta_max'], out['delta_min']))


def test_contrastive_explanations_move_the_loss_both_ways():
  params, x, y = make()
  out = explain.contrastive_explanations(mlp, params, (x, y), rng=jax.random.PRNGKey(4),
                                         eps=0.5, steps=4)
  loss = lambda v: losses.cross_entropy(mlp(params, v), y)
  assert np.all(loss(x + out['delta_max']) > loss(x))
  assert np.all(loss(x + out['delta_min']) < loss(x))
  for key in ('delta_max', 'delta_min'):
    assert np.all(np.linalg.norm(np.reshape(out[key], (B, -1)), axis=1) <= 0.5 + 1e-5)
    assert np.all((x + out[key] >= 0) & (x + out[key] <= 1))


@pytest.mark.parametrize('positive', (True, False))
def test_adversarial_explanation_reaches_rho_along_the_class_direction(positive):
  """Linear two-class model: ∂s_t/∂x ∝ w_t − w_other, so the explanation is that line."""
  params, x, _ = make()
  targets = jnp.array([0, 1, 1, 0, 1], jnp.int32)
  rho = 0.05
  out = explain.adversarial_explanation(linear, params, x, targets, rho=rho, steps=150,
                                        positive=positive, bounds=None)
  w = np.asarray(params['w1'][:, :2])
  toward_t = (w[:, np.asarray(targets)] - w[:, 1 - np.asarray(targets)]).T
  sign = 1.0 if positive else -1.0
  np.testing.assert_allclose(unit(out['delta']), sign * unit(toward_t), atol=1e-3)
  np.testing.assert_allclose(out['rmse'], rho, rtol=0.15)  # hovers at the boundary
  p_t = np.take_along_axis(np.asarray(out['probs']), np.asarray(targets)[:, None], 1)[:, 0]
  p_clean = np.take_along_axis(np.asarray(jax.nn.softmax(linear(params, x))),
                               np.asarray(targets)[:, None], 1)[:, 0]
  assert np.all(p_t > p_clean) if positive else np.all(p_t < p_clean)


def test_adversarial_explanation_stays_in_the_box_and_checks_input():
  params, x, y = make()
  out = explain.adversarial_explanation(mlp, params, x, y, rho=0.2, steps=20)
  assert np.all((out['x'] >= 0) & (out['x'] <= 1))
  np.testing.assert_allclose(out['x'] - x, out['delta'], atol=1e-6)
  with pytest.raises(ValueError, match='rho must be > 0'):
    explain.adversarial_explanation(mlp, params, x, y, rho=0.0)
  with pytest.raises(ValueError, match=r'targets must lie in \[0, 3\)'):
    explain.adversarial_explanation(mlp, params, x, y + 5, rho=0.1)
