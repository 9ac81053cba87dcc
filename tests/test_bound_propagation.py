"""IBP / CROWN / CROWN-IBP bounds against sampling, PGD, an LP, a MILP and closed forms."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks.bounds_vs_lp import relu_mlp
from experiments.benchmarks.bounds_vs_lp import relu_program
from robustjax import attacks
from robustjax import models
from robustjax.certify import bound_propagation as bp

INF = math.inf


def _mlp(key, widths, act, scale=1.0):
  net = list(relu_mlp(key, widths, scale=scale))
  return tuple(bp.activation(act) if l.kind == 'act' else l for l in net)


def _conv_net(key, act):
  k = jax.random.split(key, 3)
  return (bp.affine(jnp.array([2.0]), jnp.array([-1.0])),
          bp.conv(0.5 * jax.random.normal(k[0], (3, 3, 1, 3)), 0.1 * jnp.ones(3),
                  strides=(2, 2), padding=((1, 1), (1, 1))),
          bp.activation(act), bp.flatten(),
          bp.dense(0.6 * jax.random.normal(k[1], (12, 6)), jnp.zeros(6)),
          bp.activation(act), bp.dense(jax.random.normal(k[2], (6, 3)), jnp.zeros(3)))


def _sample_ball(key, x, eps, p, n):
  shape = (n,) + x.shape
  if p == INF:
    d = jax.random.uniform(key, shape, minval=-1.0, maxval=1.0)
    d = jnp.where(jax.random.bernoulli(jax.random.fold_in(key, 1), 0.3, shape),
                  jnp.sign(d), d)  # many corners
  else:
    g = jax.random.normal(key, (n, x.shape[0], int(np.prod(x.shape[1:]))))
    g = g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    r = jax.random.uniform(jax.random.fold_in(key, 2), (n, x.shape[0], 1)) ** 0.25
    d = jnp.reshape(g * r, shape)
  return jnp.clip(x + eps * d, 0.0, 1.0)


def _margins(net, pts, y):
  z = bp.apply(net, pts)
  return jnp.take_along_axis(z, y[:, None], -1) - z


_SAMPLED_CASES = [('relu', 'mlp', INF), ('tanh', 'conv', INF), ('sigmoid', 'mlp', 2.0),
                  ('softplus', 'mlp', INF), ('relu', 'conv', 2.0)]


@jax.jit
def _sampled_minimum(net, x, y, eps, key):
  """Smallest margins [B, K] over 10^4 points of the ball ∩ box (L∞: eps > 0; L2: eps < 0)."""
  lin = _sample_ball(key, x, jnp.abs(eps), INF, 10_000)
  l2 = _sample_ball(key, x, jnp.abs(eps), 2.0, 10_000)
  pts = jnp.where(eps > 0, lin, l2)
  return jnp.min(jax.lax.map(lambda q: _margins(net, q, y), pts, batch_size=1000), axis=0)


@pytest.mark.parametrize('act,kind,p', _SAMPLED_CASES)
def test_bounds_never_violated_by_samples_or_pgd(act, kind, p):
  eps = 0.15 if p == INF else 0.6
  if kind == 'conv':
    net, shape = _conv_net(jax.random.PRNGKey(5), act), (4, 4, 4, 1)
  else:
    net, shape = _mlp(jax.random.PRNGKey(1), (16, 12, 12, 3), act, 1.5), (4, 16)
  x = jax.random.uniform(jax.random.PRNGKey(7), shape)
  y = jnp.argmax(bp.apply(net, x), -1)
  sampled = _sampled_minimum(net, x, y, eps if p == INF else -eps, jax.random.PRNGKey(8))
  logits_fn = lambda params, v: bp.apply(params, v)
  x_adv = attacks.pgd(logits_fn, net, (x, y), rng=jax.random.PRNGKey(9), eps=eps, p=p,
                      steps=30, objective='margin')
  worst = jnp.minimum(sampled, _margins(net, x_adv, y))
  own = np.asarray(jax.nn.one_hot(y, 3, dtype=bool))
  for method in bp.METHODS:
    res = bp.certify(net, x, y, eps, p=p, method=method, chunk_size=3)
    assert res.margins.shape == (4, 3)
    assert np.all(np.isinf(np.asarray(res.margins)[own]))
    gap = np.asarray(worst - res.margins)[~own]
    assert np.all(gap >= -1e-5), (kind, act, method, gap.min())
    np.testing.assert_array_equal(res.certified, np.all(res.margins > 0, -1))


def test_relaxations_enclose_the_activation_on_the_interval():
  key = jax.random.PRNGKey(3)
  centres = 4.0 * jax.random.normal(key, (400,))
  widths = jnp.abs(3.0 * jax.random.normal(jax.random.fold_in(key, 1), (400,)))
  l, u = centres - widths, centres + widths
  grid = l[:, None] + (u - l)[:, None] * jnp.linspace(0.0, 1.0, 501)[None]
  for name in bp.ACTIVATIONS:
    r = bp.relaxation(name, l, u)
    value = {'relu': jax.nn.relu, 'softplus': jax.nn.softplus,
             'sigmoid': jax.nn.sigmoid, 'tanh': jnp.tanh}[name](grid)
    below = r.lo_slope[:, None] * grid + r.lo_bias[:, None]
    above = r.up_slope[:, None] * grid + r.up_bias[:, None]
    assert np.all(below <= value + 1e-5), name
    assert np.all(above >= value - 1e-5), name
    # Not trivially loose: the lines touch the function somewhere on the interval.
    assert np.median(np.min(value - below, 1)) < 1e-3, name
    assert np.median(np.min(above - value, 1)) < 1e-3, name


def test_crown_between_ibp_and_the_lp_and_the_lp_below_the_exact_minimum():
  gaps = []
  for seed in range(3):
    net = relu_mlp(jax.random.PRNGKey(seed), (5, 7, 6, 3), scale=1.5)
    x = jax.random.uniform(jax.random.PRNGKey(10 + seed), (3, 5))
    y = jnp.argmax(bp.apply(net, x), -1)
    eps = 0.1
    crown = bp.certify(net, x, y, eps, method='crown')
    ibp = bp.certify(net, x, y, eps, method='ibp')
    lower, upper = bp.input_interval(x, eps)
    sampled = _sampled_minimum(net, x, y, eps, jax.random.PRNGKey(seed))
    for i in range(3):
      ivs = [(l[i], u[i]) for l, u in crown.intervals]
      for t in range(3):
        if t == int(y[i]):
          continue
        args = (net, np.asarray(x[i]), np.asarray(lower[i]), np.asarray(upper[i]), ivs,
                int(y[i]), t)
        lp = relu_program(*args)
        exact = relu_program(*args, exact=True)
        assert crown.margins[i, t] <= lp + 1e-4
        assert lp <= exact + 1e-5
        assert exact <= sampled[i, t] + 1e-5
        gaps.append((float(ibp.margins[i, t]), float(crown.margins[i, t]), lp))
  gaps = np.array(gaps)
  assert np.mean(gaps[:, 1] - gaps[:, 0]) > 0  # CROWN tighter than IBP on average


@pytest.mark.parametrize('act', bp.ACTIVATIONS)
def test_crown_is_tighter_than_ibp_on_average_over_random_nets(act):
  diffs = []
  for seed in range(4):
    net = _mlp(jax.random.PRNGKey(seed), (8, 10, 10, 4), act, scale=1.5)
    x = jax.random.uniform(jax.random.PRNGKey(20 + seed), (6, 8))
    y = jnp.argmax(bp.apply(net, x), -1)
    own = np.asarray(jax.nn.one_hot(y, 4, dtype=bool))
    crown = bp.certify(net, x, y, 0.1, method='crown').margins
    ibp = bp.certify(net, x, y, 0.1, method='ibp').margins
    diffs.append(np.asarray(crown - ibp)[~own])
  assert np.mean(np.concatenate(diffs)) > 0


def test_both_are_exact_on_a_linear_net():
  key = jax.random.PRNGKey(4)
  w = jax.random.normal(key, (2, 2, 1, 4))
  net = (bp.affine(jnp.array([0.5]), jnp.array([0.2])), bp.flatten(),
         bp.dense(jnp.reshape(w, (4, 4)), jnp.arange(4.0)))
  x = jax.random.uniform(jax.random.fold_in(key, 1), (5, 2, 2, 1))
  y = jnp.argmax(bp.apply(net, x), -1)
  eps = 0.3
  a = 0.5 * jnp.reshape(w, (4, 4))  # effective input weights
  c = a[:, y].T[:, :, None] - a[None]  # [B, d, K]
  lo, up = bp.input_interval(x, eps)
  lo, up = jnp.reshape(lo, (5, 4, 1)), jnp.reshape(up, (5, 4, 1))
  z0 = _margins(net, x, y)
  x0 = jnp.reshape(x, (5, 4, 1))
  exact_inf = z0 + jnp.sum(jnp.minimum(c * (lo - x0), c * (up - x0)), axis=1)
  own = np.asarray(jax.nn.one_hot(y, 4, dtype=bool))
  for method in bp.METHODS:
    got = bp.certify(net, x, y, eps, method=method).margins
    np.testing.assert_allclose(np.asarray(got)[~own], np.asarray(exact_inf)[~own],
                               rtol=1e-5, atol=1e-5)
  exact_l2 = z0 - eps * jnp.linalg.norm(c, axis=1)  # no box: a·x0 − eps ||a||
  got = bp.certify(net, x, y, eps, p=2.0, method='crown', bounds=None).margins
  np.testing.assert_allclose(np.asarray(got)[~own], np.asarray(exact_l2)[~own], rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('sign', [1.0, -1.0])
def test_crown_on_one_relu_neuron_is_the_closed_form_relaxation(sign):
  # z = w x + b over x ∈ [x0 − eps, x0 + eps]; logits (0, c relu(z)) with label 0.
  w, b, eps = 2.0, -0.5, 0.4
  x0 = jnp.array([[0.3], [0.5], [0.6], [0.15]])
  net = (bp.flatten(), bp.dense(jnp.array([[w]]), jnp.array([b])), bp.activation('relu'),
         bp.dense(jnp.array([[0.0, sign * -1.5]]), jnp.zeros(2)))
  y = jnp.zeros(4, jnp.int32)
  got = bp.certify(net, x0, y, eps, method='crown', bounds=None).margins[:, 1]
  l, u = w * (x0[:, 0] - eps) + b, w * (x0[:, 0] + eps) + b
  coef = sign * 1.5  # margin = coef * relu(z)
  if sign > 0:  # minimise the lower line: slope 1 if u >= −l else 0 (CROWN's adaptive)
    slope = jnp.where(l >= 0, 1.0, jnp.where(u <= 0, 0.0, (u >= -l).astype(float)))
    expected = coef * jnp.minimum(slope * l, slope * u)
  else:  # maximise the chord u (z − l)/(u − l) of the triangle: at z = u, value u
    expected = coef * jnp.maximum(u, 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_converters_match_the_flax_models_and_reject_other_layers():
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1))
  for name, kwargs in (('mlp', {'widths': (12, 7), 'activation': 'tanh'}),
                       ('small_cnn', {'activation': 'relu', 'hidden': 9})):
    model = models.create(name, num_classes=4, mean=0.4, std=0.3, **kwargs)
    params = models.init(model, jax.random.PRNGKey(1), (8, 8, 1))['params']
    net = bp.network_from_module(model, params)
    np.testing.assert_allclose(bp.apply(net, x), model.apply({'params': params}, x),
                               rtol=1e-5, atol=1e-5)
    y = jnp.zeros(3, jnp.int32)
    res = bp.certify(net, x, y, 0.0, method='crown')  # eps 0: exact margins
    z = model.apply({'params': params}, x)
    np.testing.assert_allclose(res.margins[:, 1:], z[:, :1] - z[:, 1:], atol=1e-4)
  with pytest.raises(ValueError, match='BatchNorm_0'):
    bp.network_from_flax({'Dense_0': {}, 'BatchNorm_0': {}}, model='mlp')
  with pytest.raises(ValueError, match='CNN'):
    bp.network_from_module(models.create('cnn', num_classes=3), {})


def test_batchnorm_folds_into_an_affine_layer():
  mean, var = jnp.array([0.2, -0.1]), jnp.array([0.5, 2.0])
  scale, bias = jnp.array([1.5, -0.7]), jnp.array([0.1, 0.3])
  layer = bp.fold_batchnorm(mean, var, scale, bias, epsilon=1e-5)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 2))
  ref = (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias
  np.testing.assert_allclose(bp.apply((layer,), x), ref, rtol=1e-5)


def test_bad_input_is_one_clear_error_before_compiling(monkeypatch):
  net = relu_mlp(jax.random.PRNGKey(0), (4, 5, 3))
  x, y = jnp.full((2, 4), 0.5), jnp.array([0, 1])
  compiled = []
  monkeypatch.setattr(bp, '_certify_jit', lambda *a, **k: compiled.append(1))
  cases = [(dict(eps=-0.1), 'eps'), (dict(eps=0.1, p=1.0), 'p must be one of'),
           (dict(eps=0.1, method='lp'), 'method'),
           (dict(eps=0.1, chunk_size=0), 'chunk_size')]
  for kwargs, match in cases:
    with pytest.raises(ValueError, match=match):
      bp.certify(net, x, y, **kwargs)
  with pytest.raises(ValueError, match='unsupported activation'):
    bp.certify(net[:2] + (bp.activation('gelu'),) + net[3:], x, y, 0.1)
  with pytest.raises(ValueError, match='unsupported layer'):
    bp.certify(net[:2] + ('maxpool',) + net[2:], x, y, 0.1)
  with pytest.raises(ValueError, match='labels'):
    bp.certify(net, x, jnp.array([0, 3]), 0.1)
  assert not compiled


def test_certified_radius_is_certified_and_chunks_agree():
  net = _mlp(jax.random.PRNGKey(5), (6, 10, 3), 'relu', 1.0)
  x = jax.random.uniform(jax.random.PRNGKey(6), (5, 6))
  y = jnp.argmax(bp.apply(net, x), -1)
  radius = bp.certified_radius(net, x, y, p=2.0, method='crown', max_eps=2.0, steps=10)
  assert np.all(radius > 0)
  at = bp.certify(net, x, y, radius, p=2.0, method='crown', chunk_size=2)
  whole = bp.certify(net, x, y, radius, p=2.0, method='crown', chunk_size=64)
  assert np.all(at.certified)
  np.testing.assert_allclose(at.margins, whole.margins, rtol=1e-5)
