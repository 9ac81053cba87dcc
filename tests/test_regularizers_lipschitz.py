"""Stochastic Lipschitz penalty (Woods et al. eq. 9, 12) and the adaptive-ψ controller (eq. 15)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax.regularizers import controllers
from robustjax.regularizers import registry
from robustjax.regularizers.lipschitz import draw_outputs
from robustjax.regularizers.lipschitz import lipschitz

V = 4  # outputs
SHAPE = (2, 3)  # non-flat inputs: N = 6


def _params(key, scale=1.0):
  k1, k2, k3 = jax.random.split(key, 3)
  return {'w1': scale * jax.random.normal(k1, (6, 5)), 'b1': jax.random.normal(k3, (5,)),
          'w2': scale * jax.random.normal(k2, (5, V)), 'b2': jnp.arange(V, dtype=jnp.float32)}


def logits_fn(params, x):
  h = jnp.tanh(jnp.reshape(x, (x.shape[0], -1)) @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


def _batch(key, b=3):
  x = jax.random.uniform(key, (b,) + SHAPE)
  return x, jnp.array([0, 3, 1][:b], jnp.int32)


def _jacobians(params, x):
  """Dense per-example Jacobians [B, V, N] by jax.jacobian, one example at a time."""
  jac = jax.vmap(jax.jacobian(lambda xi: logits_fn(params, xi[None])[0]))(x)
  return jnp.reshape(jac, (x.shape[0], V, -1))


def _reference(jac, rows, *, psi, power, q, dead_zone):
  """ψ/(K N) Σ_k (Σ_l a)^q Σ_j a^z with a = max(|∂y/∂x| − σ, 0), straight from eq. 9."""
  out = []
  for b in range(jac.shape[0]):
    total = 0.0
    for row in rows[b]:
      a = np.maximum(np.abs(np.asarray(row)) - dead_zone, 0.0)
      total += (a.sum() ** q) * (a ** power).sum()
    out.append(psi * total / (len(rows[b]) * jac.shape[-1]))
  return np.array(out)


@pytest.mark.parametrize('power,q,dead_zone', [(2.0, 0.0, 0.0), (1.0, 0.0, 0.0),
                                               (3.0, 1.0, 0.0), (2.0, 2.0, 0.5),
                                               (1.5, 0.5, 0.3)])
def test_all_outputs_matches_dense_jacobian(power, q, dead_zone):
  params = _params(jax.random.PRNGKey(0))
  x, y = _batch(jax.random.PRNGKey(1))
  values, aux = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(2), psi=3.0,
                          num_outputs=V, power=power, q=q, dead_zone=dead_zone,
                          output_zeroing=0.0)
  jac = _jacobians(params, x)
  if dead_zone:  # the dead zone must cut some entries and keep others
    assert 0.1 < float(jnp.mean(jnp.abs(jac) < dead_zone)) < 0.9
  ref = _reference(jac, [list(jac[b]) for b in range(3)], psi=3.0, power=power, q=q,
                   dead_zone=dead_zone)
  np.testing.assert_allclose(values, ref, rtol=2e-5, atol=1e-7)
  np.testing.assert_array_equal(np.sort(aux['indices'], axis=1),
                                np.tile(np.arange(V), (3, 1)))


def test_k_one_uses_the_drawn_rows():
  params = _params(jax.random.PRNGKey(3))
  x, y = _batch(jax.random.PRNGKey(4))
  values, aux = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(5), psi=2.0,
                          num_outputs=2, output_zeroing=0.0)
  jac = _jacobians(params, x)
  rows = [[jac[b, i] for i in aux['indices'][b]] for b in range(3)]
  ref = _reference(jac, rows, psi=2.0, power=2.0, q=0.0, dead_zone=0.0)
  np.testing.assert_allclose(values, ref, rtol=2e-5)
  assert all(len(set(np.asarray(r))) == 2 for r in aux['indices'])  # no replacement


def test_tandem_penalises_true_minus_runner_up():
  params = _params(jax.random.PRNGKey(6))
  x, y = _batch(jax.random.PRNGKey(7))
  values, _ = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(8), psi=1.0,
                        num_outputs=1, zeta=1.0, tandem=True, output_zeroing=0.0)
  jac = _jacobians(params, x)
  logits = np.asarray(logits_fn(params, x))
  rows = []
  for b in range(3):
    masked = logits[b].copy()
    masked[int(y[b])] = -np.inf
    r = int(np.argmax(masked))
    rows.append([jac[b, int(y[b])] - jac[b, r]])
  ref = _reference(jac, rows, psi=1.0, power=2.0, q=0.0, dead_zone=0.0)
  np.testing.assert_allclose(values, ref, rtol=2e-5)
  # Without tandem, ζ = 1 penalises the true logit's gradient alone.
  plain, _ = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(8), psi=1.0,
                       zeta=1.0, output_zeroing=0.0)
  ref_plain = _reference(jac, [[jac[b, int(y[b])]] for b in range(3)], psi=1.0,
                         power=2.0, q=0.0, dead_zone=0.0)
  np.testing.assert_allclose(plain, ref_plain, rtol=2e-5)


def test_zeta_sets_the_probability_of_the_true_label():
  labels = jnp.full((4000,), 2, jnp.int32)
  for zeta in (0.0, 0.5, 1.0):
    idx, forced = draw_outputs(jax.random.PRNGKey(9), labels, num_classes=V,
                               num_outputs=1, zeta=zeta)
    freq = float(jnp.mean(idx[:, 0] == 2))
    assert abs(freq - (zeta + (1 - zeta) / V)) < 0.03, (zeta, freq)
    assert abs(float(jnp.mean(forced)) - zeta) < 0.03
  # K = V with ζ = 1: still a permutation (no repeats), label first.
  idx, _ = draw_outputs(jax.random.PRNGKey(10), jnp.array([1, 3], jnp.int32),
                        num_classes=V, num_outputs=V, zeta=1.0)
  np.testing.assert_array_equal(idx[:, 0], [1, 3])
  np.testing.assert_array_equal(np.sort(idx, axis=1), np.tile(np.arange(V), (2, 1)))
  # ζ = 0: every output is drawn about equally often in slot 1.
  idx, _ = draw_outputs(jax.random.PRNGKey(11), labels, num_classes=V, num_outputs=2,
                        zeta=0.0)
  counts = np.bincount(np.asarray(idx).ravel(), minlength=V) / idx.size
  np.testing.assert_allclose(counts, 1.0 / V, atol=0.03)


def test_output_zeroing_closed_form_and_aux_split():
  params = _params(jax.random.PRNGKey(12))
  x, y = _batch(jax.random.PRNGKey(13))
  values, aux = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(0), psi=0.0,
                          output_zeroing=0.25)
  logits = logits_fn(params, x)
  np.testing.assert_allclose(values, 0.25 * jnp.sum(logits ** 2, axis=-1), rtol=1e-6)
  both, aux = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(0), psi=2.0,
                        output_zeroing=0.25)
  np.testing.assert_allclose(both, aux['lipschitz'] + aux['output_zeroing'], rtol=1e-6)
  np.testing.assert_allclose(aux['output_zeroing'], values, rtol=1e-6)
  np.testing.assert_allclose(aux['logits'], logits, rtol=1e-6)


@pytest.mark.parametrize('scale,zero_first', [(1e4, False), (1.0, True)])
def test_finite_values_and_param_grads_when_saturated_or_flat(scale, zero_first):
  params = _params(jax.random.PRNGKey(14), scale=scale)
  if zero_first:  # zero input gradient everywhere
    params = dict(params, w1=jnp.zeros_like(params['w1']))
  x, y = _batch(jax.random.PRNGKey(15))

  def total(p):
    values, _ = lipschitz(logits_fn, p, (x, y), rng=jax.random.PRNGKey(1), num_outputs=2,
                          power=1.5, q=0.5, dead_zone=0.01, zeta=0.5, tandem=True)
    return jnp.sum(values), values

  (_, values), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(params)
  chex.assert_tree_all_finite((values, grads))
  if zero_first:
    _, aux = lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(1))
    np.testing.assert_allclose(aux['lipschitz'], 0.0)


def test_registered_and_jittable_with_traced_psi():
  assert registry.get('lipschitz').takes == 'logits_fn'
  params = _params(jax.random.PRNGKey(16))
  x, y = _batch(jax.random.PRNGKey(17))
  fn = jax.jit(lambda psi: lipschitz(logits_fn, params, x, y, rng=jax.random.PRNGKey(0),
                                     psi=psi)[0])
  np.testing.assert_allclose(fn(2.0), 2.0 * fn(1.0) - fn(0.0), rtol=1e-5)


@pytest.mark.parametrize('kwargs,name', [({'num_outputs': V + 1}, 'num_outputs'),
                                         ({'num_outputs': 0}, 'num_outputs'),
                                         ({'psi': -1.0}, 'psi'),
                                         ({'power': -1.0}, 'power'),
                                         ({'q': -0.5}, 'q'),
                                         ({'dead_zone': -0.1}, 'dead_zone'),
                                         ({'zeta': 1.5}, 'zeta'),
                                         ({'output_zeroing': -1.0}, 'output_zeroing')])
def test_bad_hyperparameters_raise(kwargs, name):
  params = _params(jax.random.PRNGKey(0))
  x, y = _batch(jax.random.PRNGKey(1))
  with pytest.raises(ValueError, match=name):
    lipschitz(logits_fn, params, (x, y), rng=jax.random.PRNGKey(0), **kwargs)


def _eq15(losses, *, target, k0, gain, better, worse):
  """Eq. 15 by hand: S_b = max(0, S_{b−1} + clip(−ln(L_b/L_t))), ψ_b = k0 exp(gain S_b)."""
  s, out = 0.0, []
  for loss in losses:
    d = -math.log(loss / target)
    s = max(0.0, s + min(max(d, -worse), better))
    out.append(k0 * math.exp(gain * s))
  return out


def test_adaptive_psi_matches_eq15_sequence():
  # Hand-computed: S: 0.6931 (ln 2), then 0.6931−0.1 (clip), 0.5931+0.1054,
  # then clamp at 0 after two worse steps from small S, then +1 (clip better).
  losses = [0.5, 3.0, 0.9, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 0.01, 1.0]
  kw = dict(target=1.0, k0=2.0, gain=0.5, better=1.0, worse=0.1)
  expected = _eq15(losses, **kw)
  assert expected[0] == pytest.approx(2.0 * math.exp(0.5 * math.log(2.0)))
  assert expected[10] == pytest.approx(2.0)  # clamped: ψ never below k_ψ,0
  assert expected[11] == pytest.approx(2.0 * math.exp(0.5))  # clipped at ε_better
  ctrl = controllers.adaptive_psi(target_loss=1.0, initial_psi=2.0, gain=0.5,
                                  eps_better=1.0, eps_worse=0.1)
  state = ctrl.init()
  assert float(state.psi) == 2.0
  update = jax.jit(ctrl.update)
  got = []
  for loss in losses:
    psi, state = update(jnp.float32(loss), state)
    got.append(float(psi))
    assert float(state.psi) == float(psi)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert int(state.count) == len(losses)


def test_adaptive_psi_defaults_and_bad_input():
  state = controllers.adaptive_psi_init()
  assert float(state.psi) == 220.0
  psi, state = controllers.adaptive_psi_update(jnp.float32(math.nan), state,
                                               target_loss=1.0)
  assert float(psi) == 220.0 and float(state.integral) == 0.0
  with pytest.raises(ValueError, match='target_loss'):
    controllers.adaptive_psi(target_loss=0.0)
  with pytest.raises(ValueError, match='eps_worse'):
    controllers.adaptive_psi(target_loss=1.0, eps_worse=-1.0)
