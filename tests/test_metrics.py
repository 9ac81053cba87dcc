"""Tests of robustjax.metrics against closed forms on linear models.

For a linear two-class model ``z = x W + b`` the margin ``m(x) = Δwᵀx + Δb`` is linear in
x, so (without a box) the worst case over ``ball_p(eps)`` is ``m − eps ||Δw||_q``, the
minimal L2 distance to the boundary is ``m / ||Δw||_2``, and every attack objective (CE,
margin, targeted with the only other class) is monotone in m: PGD is exact.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import metrics

B, SHAPE = 16, (2, 3)
D = 6
INF = math.inf


def linear(params, x):
  return jnp.reshape(x, (x.shape[0], -1)) @ params['w'] + params['b']


def make_problem(num_classes=2, seed=0):
  kw, kb, kx, ky = jax.random.split(jax.random.PRNGKey(seed), 4)
  params = {'w': jax.random.normal(kw, (D, num_classes)),
            'b': 0.3 * jax.random.normal(kb, (num_classes,))}
  x = jax.random.normal(kx, (B,) + SHAPE)
  # Mostly the model's own predictions (so accuracy beats the naive rate), 3 flipped.
  pred = jnp.argmax(linear(params, x), axis=-1)
  shift = jax.random.randint(ky, (B,), 1, num_classes)
  y = jnp.where(jnp.arange(B) < 3, (pred + shift) % num_classes, pred).astype(jnp.int32)
  return params, x, y


def closed_form(params, x, y):
  """Margins m [B] and Δw = w_y − w_other [B, D] of the two-class linear model."""
  w = np.asarray(params['w'])
  z = np.asarray(linear(params, x))
  yy = np.asarray(y)
  other = 1 - yy
  margins = z[np.arange(B), yy] - z[np.arange(B), other]
  dw = (w[:, yy] - w[:, other]).T
  return margins, dw


def q_norm(dw, p):
  q = 1.0 if p == INF else (INF if p == 1 else p / (p - 1))
  return np.linalg.norm(dw, ord=q, axis=1)


def expected_robust_accuracy(params, x, y, eps, p):
  margins, dw = closed_form(params, x, y)
  worst = margins - eps * q_norm(dw, p)
  # Keep the test away from ties at the threshold, where any attack is ambiguous.
  assert np.min(np.abs(worst)) > 1e-3
  return float(np.mean(worst > 0))


# --- accuracy and robust accuracy ---------------------------------------------------


def test_accuracy_and_mask():
  params, x, y = make_problem()
  hits = np.asarray(jnp.argmax(linear(params, x), -1) == y)
  assert float(metrics.accuracy(linear, params, x, y)) == pytest.approx(hits.mean())
  mask = np.arange(B) < 5
  assert float(metrics.accuracy(linear, params, x, y, mask=mask)) == pytest.approx(
      hits[:5].mean())


@pytest.mark.parametrize('p,eps', [(2.0, 0.4), (INF, 0.15)])
@pytest.mark.parametrize('objective', ('ce', 'margin'))
def test_robust_accuracy_matches_closed_form(p, eps, objective):
  params, x, y = make_problem()
  got = metrics.robust_accuracy(linear, params, (x, y), rng=jax.random.PRNGKey(1), eps=eps,
                                p=p, steps=10, objective=objective, bounds=None)
  want = expected_robust_accuracy(params, x, y, eps, p)
  assert 0.0 < want < float(metrics.accuracy(linear, params, x, y))  # non-trivial
  assert got == pytest.approx(want)


def test_robust_accuracy_over_padded_batches_counts_each_example_once():
  params, x, y = make_problem()
  batches = []
  for start in range(0, B, 6):  # 6, 6, 4 real rows, the last padded to 6
    xs, ys = x[start:start + 6], y[start:start + 6]
    pad = 6 - xs.shape[0]
    mask = jnp.arange(6) < xs.shape[0]
    # Padded rows: points the model gets right, which would inflate an unmasked mean.
    xs = jnp.concatenate([xs, jnp.zeros((pad,) + SHAPE)])
    ys = jnp.concatenate([ys, jnp.full((pad,), int(jnp.argmax(params['b'])))])
    batches.append((xs, ys, mask))
  kwargs = dict(rng=jax.random.PRNGKey(1), eps=0.4, p=2.0, steps=10, bounds=None)
  got = metrics.robust_accuracy(linear, params, batches, **kwargs)
  assert got == pytest.approx(expected_robust_accuracy(params, x, y, 0.4, 2.0))
  clean = metrics.robust_accuracy(linear, params, iter(batches), rng=jax.random.PRNGKey(0),
                                  eps=0.0, p=2.0, steps=0, bounds=None)
  assert clean == pytest.approx(float(metrics.accuracy(linear, params, x, y)))


def test_accuracy_vs_eps_follows_the_closed_form_curve():
  params, x, y = make_problem()
  eps_list = [0.0, 0.2, 0.5, 1.0]
  curve = metrics.accuracy_vs_eps(linear, params, (x, y), rng=jax.random.PRNGKey(2),
                                  eps_list=eps_list, p=2.0, steps=10, objective='margin',
                                  bounds=None)
  np.testing.assert_allclose(curve['eps'], eps_list)
  want = [float(metrics.accuracy(linear, params, x, y))] + [
      expected_robust_accuracy(params, x, y, e, 2.0) for e in eps_list[1:]]
  np.testing.assert_allclose(curve['accuracy'], want)
  assert np.all(np.diff(curve['accuracy']) <= 0)


def test_scorpio_attack_suite_on_a_linear_two_class_model():
  params, x, y = make_problem()
  out = metrics.scorpio_attack_accuracies(linear, params, (x, y), rng=jax.random.PRNGKey(3),
                                          eps=0.15, p=INF, steps=3, bounds=None)
  assert set(out) == {'clean', 'ul', 'tl', 'um', 'tm'}
  want = expected_robust_accuracy(params, x, y, 0.15, INF)
  assert out['clean'] == pytest.approx(float(metrics.accuracy(linear, params, x, y)))
  for name in ('ul', 'tl', 'um', 'tm'):  # with K = 2 every attack is the exact worst case
    assert out[name] == pytest.approx(want), name


def test_bad_input_raises():
  params, x, y = make_problem()
  kwargs = dict(rng=jax.random.PRNGKey(0), p=2.0, steps=2)
  with pytest.raises(ValueError, match='eps must be >= 0'):
    metrics.robust_accuracy(linear, params, (x, y), eps=-0.1, **kwargs)
  with pytest.raises(ValueError, match='unknown objective'):
    metrics.robust_accuracy(linear, params, (x, y), eps=0.1, objective='hinge', **kwargs)
  with pytest.raises(ValueError, match='unknown attack'):
    metrics.robust_accuracy(linear, params, (x, y), eps=0.1, attack='cw', **kwargs)
  with pytest.raises(ValueError, match='p must be in'):
    metrics.robust_accuracy(linear, params, (x, y), eps=0.1, rng=kwargs['rng'], p=0.5,
                            steps=2)
  with pytest.raises(ValueError, match='mask must have shape'):
    metrics.robust_accuracy(linear, params, (x, y, jnp.ones(3, bool)), eps=0.1, **kwargs)
  with pytest.raises(ValueError, match='inputs must be a floating'):
    metrics.accuracy(linear, params, x.astype(jnp.int32), y)
  with pytest.raises(ValueError, match='eps_list'):
    metrics.accuracy_vs_eps(linear, params, (x, y), eps_list=[0.1, -1.0], **kwargs)


# --- ARA ----------------------------------------------------------------------------


def test_ara_from_distances_by_hand_and_by_riemann_sum():
  # sorted [0.3, 0.2, 0.1, 0]: acc 1/4 on [0.2,0.3), 2/4 on [0.1,0.2), 3/4 on [0,0.1)
  assert metrics.ara_from_distances([0.1, 0.0, 0.3, 0.2], naive_accuracy=0.25) == (
      pytest.approx(0.1 * 0.25 + 0.1 * 0.5))
  rng = np.random.default_rng(0)
  d = np.where(rng.uniform(size=200) < 0.3, 0.0, rng.exponential(0.05, size=200))
  r = np.linspace(0, d.max() + 1e-3, 200001)
  riemann = np.sum(np.maximum(metrics.accuracy_at(d, r) - 0.1, 0)) * (r[1] - r[0])
  assert metrics.ara_from_distances(d, naive_accuracy=0.1) == pytest.approx(riemann,
                                                                            rel=1e-3)
  # the triangle of Woods sec. II-A: accuracy falls linearly from A to N at S -> ½S(A−N)
  a, n, s, total = 0.8, 0.1, 0.05, 10000
  tri = np.concatenate([np.linspace(0, s, int(total * (a - n)) + 1)[1:],  # spread on (0, S]
                        np.full(int(total * n), 2 * s),  # N of them survive past S
                        np.zeros(int(total * (1 - a)))])  # misclassified
  assert metrics.ara_from_distances(tri, naive_accuracy=n) == pytest.approx(
      0.5 * s * (a - n), rel=1e-3)
  assert metrics.ara_from_distances(np.zeros(5), naive_accuracy=0.1) == 0.0


def test_ara_rejects_bad_distances():
  with pytest.raises(ValueError, match='distances must be finite'):
    metrics.ara_from_distances([0.1, np.inf], naive_accuracy=0.1)
  with pytest.raises(ValueError, match='naive_accuracy must be in'):
    metrics.ara_from_distances([0.1], naive_accuracy=1.5)
  params, x, y = make_problem()
  with pytest.raises(ValueError, match='unknown goal'):
    metrics.ara(linear, params, (x, y), goal='explain')
  with pytest.raises(ValueError, match='unknown method'):
    metrics.ara(linear, params, (x, y), method='deepfool')


@pytest.mark.parametrize('goal', ('adv', 'btr'))
def test_min_norm_distances_match_the_linear_closed_form(goal):
  """Two classes: p_y < 1/2 iff the margin is negative, so both goals have one answer."""
  params, x, y = make_problem()
  margins, dw = closed_form(params, x, y)
  want = np.where(margins > 0, margins / np.linalg.norm(dw, axis=1), 0.0) / math.sqrt(D)
  max_rmse = float(1.2 * want.max())
  got = metrics.min_norm_distances(linear, params, (x, y), goal=goal, max_rmse=max_rmse,
                                   search_steps=12, steps=10, bounds=None)
  np.testing.assert_allclose(got, want, atol=2 * max_rmse / 2**12)


def test_ticktock_distances_bound_the_closed_form_from_above_and_approach_it():
  """Woods Alg. 1 only records goal-reaching points, so it can never beat the minimum."""
  params, x, y = make_problem()
  margins, dw = closed_form(params, x, y)
  want = np.where(margins > 0, margins / np.linalg.norm(dw, axis=1), 0.0) / math.sqrt(D)
  got = np.asarray(metrics.min_norm_distances(linear, params, (x, y), goal='adv',
                                              max_rmse=1.0, steps=150, bounds=None,
                                              method='ticktock'))
  assert np.all(got >= want - 1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-4)  # measured: within 0.4%


def test_attack_ara_end_to_end_matches_closed_form():
  params, x, y = make_problem()
  margins, dw = closed_form(params, x, y)
  want = np.where(margins > 0, margins / np.linalg.norm(dw, axis=1), 0.0) / math.sqrt(D)
  max_rmse = float(1.2 * want.max())
  out = metrics.attack_ara(linear, params, [(x[:8], y[:8]), (x[8:], y[8:])],
                           max_rmse=max_rmse, search_steps=12, steps=10, bounds=None)
  naive = 0.5  # 1/K: a naive classifier on balanced classes, whatever the subset's labels
  assert max(np.mean(np.asarray(y) == 0), np.mean(np.asarray(y) == 1)) != naive
  assert out['naive_accuracy'] == pytest.approx(naive)
  assert out['clean_accuracy'] == pytest.approx(np.mean(margins > 0))
  assert out['ara'] == pytest.approx(
      metrics.ara_from_distances(want, naive_accuracy=naive), abs=2 * max_rmse / 2**12)
  assert out['ara'] > 0
  majority = metrics.naive_accuracy(y)  # a user's baseline for unbalanced data
  mine = metrics.attack_ara(linear, params, (x, y), max_rmse=max_rmse, search_steps=12,
                            steps=10, bounds=None, naive=majority)
  assert mine['naive_accuracy'] == majority
  assert mine['ara'] == pytest.approx(
      metrics.ara_from_distances(want, naive_accuracy=majority), abs=2 * max_rmse / 2**12)
  with pytest.raises(ValueError, match='naive must be'):
    metrics.attack_ara(linear, params, (x, y), naive=1.5)


def test_btr_distance_is_at_least_the_adversarial_distance():
  """p_y < 1/K forces a misclassification, so g_btr is reached no earlier than g_adv.

  With K = 3 the adversarial distance of the linear model is still closed form:
  ``min_{j≠y} (z_y − z_j) / ||w_y − w_j||_2``.
  """
  params, x, y = make_problem(num_classes=3, seed=4)
  z, w, yy = np.asarray(linear(params, x)), np.asarray(params['w']), np.asarray(y)
  adv = np.array([max(0.0, min((z[b, yy[b]] - z[b, j]) / np.linalg.norm(w[:, yy[b]] - w[:, j])
                               for j in range(3) if j != yy[b])) for b in range(B)])
  adv = adv / math.sqrt(D)
  btr = np.asarray(metrics.min_norm_distances(linear, params, (x, y), goal='btr',
                                              max_rmse=1.0, search_steps=8, steps=10,
                                              bounds=None))
  assert np.all(btr >= adv - 1e-5)
  assert np.any(btr > adv + 1e-2)  # and strictly later somewhere
  p_true = np.asarray(jax.nn.softmax(linear(params, x)))[np.arange(B), yy]
  # 0 exactly where p_y < 1/K already at x: misclassification alone does not count.
  np.testing.assert_array_equal(btr == 0, p_true < 1 / 3)


def test_btr_distance_of_a_misclassified_example_above_random_is_positive():
  """K = 3, p = (0.45, 0.5, 0.05) at x with y = 0: wrong top-1, but p_y >= 1/3.

  Only z_0 depends on x (z_0 = log 0.45 − a x_1), so the nearest point with p_0 < 1/3 is
  along e_1 at t* = ln(0.9 / 0.55) / a (0.9 e^{−a t} = 0.55 solves p_0 = 1/3).
  """
  a = 2.0
  w = np.zeros((D, 3), np.float32)
  w[0, 0] = -a
  params = {'w': jnp.asarray(w), 'b': jnp.log(jnp.array([0.45, 0.5, 0.05]))}
  x = jnp.zeros((1,) + SHAPE)
  y = jnp.zeros((1,), jnp.int32)
  want = math.log(0.9 / 0.55) / a / math.sqrt(D)
  btr = metrics.min_norm_distances(linear, params, (x, y), goal='btr', max_rmse=1.0,
                                   search_steps=12, steps=20, bounds=None)
  assert float(btr[0]) == pytest.approx(want, abs=2.0 / 2**12)
  adv = metrics.min_norm_distances(linear, params, (x, y), goal='adv', max_rmse=1.0,
                                   search_steps=4, steps=5, bounds=None)
  assert float(adv[0]) == 0.0  # the attack ARA still counts it as broken


# --- gradient masking ---------------------------------------------------------------


def test_classification_margin_is_scorpio_eq_12():
  params, x, y = make_problem(num_classes=3)
  log_p = np.asarray(jax.nn.log_softmax(linear(params, x)))
  yy = np.asarray(y)
  others = np.where(np.eye(3, dtype=bool)[yy], -np.inf, log_p)
  want = log_p[np.arange(B), yy] - others.max(axis=1)
  np.testing.assert_allclose(metrics.classification_margin(linear, params, x, y), want,
                             rtol=1e-5, atol=1e-5)


def test_simba_vs_pgd_flags_a_masked_model_but_not_a_linear_one():
  params, x, y = make_problem()
  kwargs = dict(rng=jax.random.PRNGKey(5), pgd_eps=0.2, p=INF, pgd_steps=3,
                simba_eps=0.2, simba_steps=D, bounds=None)  # SimBA stays in the Linf ball
  honest = metrics.simba_vs_pgd(linear, params, (x, y), **kwargs)
  margins, dw = closed_form(params, x, y)
  np.testing.assert_allclose(honest['pgd_margin'], margins - 0.2 * q_norm(dw, INF),
                             rtol=1e-4, atol=1e-4)
  assert float(honest['fraction_simba_stronger']) == 0.0  # PGD is exact on a linear model
  masked_fn = lambda prm, inp: jax.lax.stop_gradient(linear(prm, inp))  # zero gradients
  masked = metrics.simba_vs_pgd(masked_fn, params, (x, y), **kwargs)
  assert float(masked['fraction_simba_stronger']) > 0.8
  np.testing.assert_allclose(masked['clean_margin'], margins, rtol=1e-5, atol=1e-5)


def test_mean_confidence():
  params, x, y = make_problem(num_classes=3)
  top = np.max(np.asarray(jax.nn.softmax(linear(params, x))), axis=1)
  assert float(metrics.mean_confidence(linear, params, x)) == pytest.approx(top.mean(),
                                                                             rel=1e-5)
  mask = np.arange(B) >= 10
  assert float(metrics.mean_confidence(linear, params, x, mask=mask)) == pytest.approx(
      top[10:].mean(), rel=1e-5)


def test_local_linearity_of_a_quadratic_loss():
  """ℓ = ½ xᵀAx: g(δ) = ½|δᵀAδ|, so γ(ε) = ½ ε² max|λ(A)| over the L2 ball."""
  a = jnp.diag(jnp.array([1.0, 3.0, 0.5, 0.5, 0.0, 0.1]))  # PSD: ascent = power iteration
  quad = lambda prm, inp, lab: 0.5 * jnp.einsum('bi,ij,bj->b', jnp.reshape(inp, (B, D)),
                                               prm, jnp.reshape(inp, (B, D)))
  _, x, y = make_problem()
  exact = 0.5 * 0.25 * 3.0
  kwargs = dict(rng=jax.random.PRNGKey(6), eps=0.5, p=2.0, bounds=None, unroll=1)
  gamma, delta = metrics.local_linearity(quad, a, x, y, steps=30, step_size=0.1,
                                         step_rule='steepest', **kwargs)
  np.testing.assert_allclose(gamma, exact, rtol=1e-2)
  assert np.all(np.linalg.norm(np.reshape(delta, (B, D)), axis=1) <= 0.5 + 1e-5)
  gap = 0.5 * np.abs(np.einsum('bi,ij,bj->b', np.reshape(delta, (B, D)), a,
                               np.reshape(delta, (B, D))))
  np.testing.assert_allclose(gamma, gap, rtol=1e-4)  # the value is attained at delta
  adam, _ = metrics.local_linearity(quad, a, x, y, steps=20, **kwargs)  # paper default
  assert np.all(np.asarray(adam) <= exact * (1 + 1e-5)) and np.all(np.asarray(adam) > 0)


def test_transfer_accuracy():
  params, x, y = make_problem()
  kwargs = dict(rng=jax.random.PRNGKey(7), eps=0.15, p=INF, steps=3, bounds=None)
  same = metrics.transfer_accuracy(linear, params, linear, params, (x, y), **kwargs)
  assert same == pytest.approx(expected_robust_accuracy(params, x, y, 0.15, INF))
  flipped = jax.tree.map(lambda a: -a, params)  # its attacks push the target toward y
  helped = metrics.transfer_accuracy(linear, flipped, linear, params, (x, y), **kwargs)
  assert helped == pytest.approx(float(metrics.accuracy(linear, params, x, y)))
