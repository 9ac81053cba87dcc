"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): statistics, radii, soundness.

Oracles: scipy's Beta quantiles and binomial test; the closed-form radius of a smoothed
linear binary classifier, ``|wᵀx + b| / ‖w‖``; an L2 attack on a trained model's
noise-averaged logits whose points are verified adversarial for the smoothed classifier.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from scipy import stats

from robustjax import attacks
from robustjax import data
from robustjax import losses
from robustjax import regularizers
from robustjax.certify import smoothing

SIGMA = 0.25


# ----------------------------------------------------------------------------- statistics


def test_clopper_pearson_matches_scipy_beta_ppf():
  rows = []
  for n in (1, 2, 7, 100, 1000, 100_000):
    ks = sorted({0, 1, 2, n // 3, n // 2, n // 2 + 1, (9 * n) // 10, (99 * n) // 100,
                 n - 5, n - 1, n} & set(range(n + 1)))
    for alpha in (0.001, 0.05, 0.4):
      rows += [(k, n, alpha) for k in ks]
  k, n, alpha = (np.array(c, np.float64) for c in zip(*rows))
  reference = np.where(k > 0, stats.beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
  got = np.asarray(jax.jit(smoothing.clopper_pearson_lower)(k, n, alpha))
  # p_A_lower is a float32 near 1: its spacing there is 6e-8.
  np.testing.assert_allclose(got, reference, rtol=2e-5, atol=2e-7)
  # The upper bound on 1 - p_A (what the radius uses) is accurate in relative terms and
  # never below the exact one (never optimistic) beyond float noise.
  failures = n - k
  exact = np.where(failures < n, stats.beta.isf(alpha, failures + 1,
                                                np.maximum(n - failures, 1)), 1.0)
  upper = np.asarray(jax.jit(smoothing._upper_bound_failures)(failures, n, alpha))  # pylint: disable=protected-access
  np.testing.assert_allclose(upper, exact, rtol=3e-5)
  assert np.all(upper >= exact)


def test_clopper_pearson_is_never_optimistic_per_element_whatever_the_batch():
  # 324 mixed cases, among them f = 1 failure of n = 1e5 at alpha = 0.05; each element's
  # bound on the failure proportion must be at or above scipy's, and the same (to the
  # bit) as computed alone or in another batch.
  rng = np.random.default_rng(0)
  n = rng.choice([1, 3, 10, 100, 1e4, 1e5], 324)
  failures = np.floor(rng.uniform(0, 1, 324) ** 3 * (n + 1)).clip(0, n)
  alpha = rng.choice([0.001, 0.05, 0.4], 324)
  n[:3], failures[:3], alpha[:3] = 1e5, [1, 0, 2], 0.05
  exact = np.where(failures < n, stats.beta.isf(alpha, failures + 1,
                                                np.maximum(n - failures, 1)), 1.0)
  bound = jax.jit(smoothing._upper_bound_failures)  # pylint: disable=protected-access
  upper = np.asarray(bound(failures, n, alpha))
  assert np.all(upper >= exact), np.flatnonzero(upper < exact)
  np.testing.assert_allclose(upper, exact, rtol=3e-5)
  order = rng.permutation(324)
  np.testing.assert_array_equal(np.asarray(bound(failures[order], n[order], alpha[order])),
                                upper[order])
  for i in range(3):
    np.testing.assert_array_equal(bound(failures[i:i + 1], n[i:i + 1], alpha[i:i + 1]),
                                  upper[i:i + 1])


def test_binomial_test_matches_scipy():
  top, second = np.meshgrid(np.arange(0, 41, 3), np.arange(0, 41, 4))
  top, second = np.maximum(top, second).ravel(), np.minimum(top, second).ravel()
  keep = top + second > 0
  top, second = top[keep], second[keep]
  reference = [stats.binomtest(int(a), int(a + b), 0.5).pvalue for a, b in zip(top, second)]
  got = np.asarray(jax.jit(smoothing.binomial_test_pvalue)(top, second))
  np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-7)


def test_binomial_cdf_matches_scipy_in_both_tails():
  n = np.array([10, 1000, 100_000, 100_000, 100_000], np.float64)
  p = np.array([0.3, 0.01, 0.5, 0.999, 1e-4], np.float32).astype(np.float64)  # as used
  k = np.round(n * p + np.array([-2, 3, -900, -20, 5]))
  got = np.asarray(jax.jit(smoothing.binomial_log_cdf)(k, n, p))
  np.testing.assert_allclose(got, stats.binom.logcdf(k, n, p), rtol=3e-5, atol=1e-6)


# ---------------------------------------------------------------- a linear binary model


def linear_logits(params, x):
  w, b = params
  z = jnp.reshape(x, (x.shape[0], -1)) @ w + b
  return jnp.stack([z, -z], axis=-1)  # class 0 iff wᵀx + b > 0


def linear_problem():
  w = jnp.array([0.8, -0.6, 0.5, 0.3, 0.0, -0.2])
  b = jnp.asarray(0.05)
  rng = np.random.default_rng(0)
  x = rng.uniform(0.1, 0.9, (24, 6)).astype(np.float32)
  distance = np.abs(x @ np.asarray(w) + float(b)) / np.linalg.norm(np.asarray(w))
  # Points whose p_A = Φ(distance / σ) is in (0.7, 0.999): radii the test can resolve.
  keep = (distance > 0.15) & (distance < 0.7)
  return (w, b), jnp.asarray(x[keep][:6]), distance[keep][:6]


def test_linear_radius_converges_to_the_closed_form_from_below():
  params, x, exact = linear_problem()
  assert len(exact) == 6
  gaps = []
  for n in (100, 1000, 10_000, 100_000):
    cert = smoothing.certify(linear_logits, params, x, rng=jax.random.key(n), sigma=SIGMA,
                             num_selection=32, num_estimation=n, batch_size=4096)
    truth = np.where(np.asarray(x) @ np.asarray(params[0]) + float(params[1]) > 0, 0, 1)
    radius = np.asarray(cert.radius)
    certified = np.asarray(cert.prediction) >= 0
    assert np.all(np.asarray(cert.prediction)[certified] == truth[certified])
    assert np.all(radius <= exact), (n, radius, exact)
    assert np.all(np.asarray(cert.counts).sum(-1) == n)
    gaps.append(np.mean(exact - radius))
  assert certified.all()
  assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
  # At n = 1e5 the Clopper-Pearson slack is ~3 sd of p_A's estimate: a few % of σ.
  assert gaps[-1] < 0.03 * SIGMA, gaps


def test_votes_of_the_linear_model_follow_its_exact_probability():
  params, x, exact = linear_problem()
  n = 20_000
  counts = smoothing.sample_counts(linear_logits, params, x, rng=jax.random.key(3),
                                   sigma=SIGMA, num_samples=n, batch_size=3000)
  p_a = stats.norm.cdf(exact / SIGMA)
  observed = np.asarray(counts).max(-1) / n
  assert np.all(np.abs(observed - p_a) < 5 * np.sqrt(p_a * (1 - p_a) / n))


def test_noise_is_standard_normal_and_uncorrelated_across_coordinates_and_samples():
  keys = jax.vmap(lambda b: jax.random.fold_in(jax.random.key(5), b))(jnp.arange(3))
  noise = np.asarray(smoothing._sample_noise(keys, jnp.arange(20_000, dtype=jnp.uint32),
                                             (5, 3), jnp.float32), np.float64)
  assert noise.shape == (3, 20_000, 5, 3)
  flat = noise.reshape(3 * 20_000, 15)
  assert stats.kstest(flat.ravel(), 'norm').pvalue > 1e-3
  corr = np.corrcoef(flat, rowvar=False)  # coordinates 0..14: pairs (m, m + 8) share a hash
  off_diagonal = corr[~np.eye(15, dtype=bool)]
  assert np.max(np.abs(off_diagonal)) < 5 / np.sqrt(flat.shape[0])
  lagged = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]  # sample j, j + 1
  across = np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]  # two examples
  assert abs(lagged) < 5 / np.sqrt(noise[:, 1:].size) and abs(across) < 5 / np.sqrt(
      noise[0].size)
  # Tails: counts beyond 3 and 4 sd match the Gaussian's (Poisson, 5 sd).
  for t in (3.0, 4.0):
    expected = 2 * stats.norm.sf(t) * flat.size
    assert abs(np.sum(np.abs(flat) > t) - expected) < 5 * np.sqrt(expected) + 1


def test_sampler_reaches_beyond_6_6_sd_and_certify_subtracts_the_mass_it_cannot_draw():
  # The transform's extreme inputs: all-zero radius words give its largest output. A
  # 23-bit uniform through erfinv stopped at 5.42 (1.5e-7 of Gaussian mass beyond, per
  # coordinate); Box-Muller on 32-bit words reaches sqrt(64 ln 2) = 6.660.
  words = jnp.array([0, 0, 0, 0], jnp.uint32)
  angles = jnp.array([0, 2**30, 2**31, 3 * 2**30], jnp.uint32)
  extreme = np.abs(np.asarray(smoothing._bits_to_normal(words, angles), np.float64))  # pylint: disable=protected-access
  reach = extreme.max()
  assert reach > 6.66 and np.allclose(np.sort(extreme)[-4:], reach, rtol=1e-6)
  rng = np.random.default_rng(1)
  grid = rng.integers(0, 2**32, (2, 100_000), dtype=np.uint64).astype(np.uint32)
  draws = np.abs(np.asarray(smoothing._bits_to_normal(jnp.asarray(grid[0]),  # pylint: disable=protected-access
                                                      jnp.asarray(grid[1]))))
  assert draws.max() <= reach * (1 + 1e-6)
  # An exact Gaussian pair lies beyond that radius with probability exp(-reach²/2) (the
  # Rayleigh tail): over an input's ⌈d/2⌉ pairs that mass leaves p_A_lower.
  d = 3 * 32 * 32
  mass = (d // 2) * np.exp(-reach**2 / 2)
  selection = jnp.array([[100, 0], [100, 0]], jnp.int32)
  estimation = jnp.array([[99_990, 10], [60_000, 40_000]], jnp.int32)
  cert = smoothing._certify_from_counts(selection, estimation, 0.5, 100_000, 0.001,  # pylint: disable=protected-access
                                        smoothing.tail_mass(d))
  plain = np.asarray(smoothing.clopper_pearson_lower(estimation[:, 0], 100_000, 0.001),
                     np.float64)
  got = np.asarray(cert.p_a_lower, np.float64)
  assert np.all(got <= plain - mass + 1e-7) and np.all(got >= plain - 1.01 * mass - 2e-7)
  np.testing.assert_allclose(np.asarray(cert.radius), 0.5 * stats.norm.ppf(got), rtol=1e-4)


def test_ties_abstain():
  # On the decision boundary p_A = 1/2: both algorithms must abstain.
  params = (jnp.array([1.0, -1.0, 0.0, 0.0, 0.0, 0.0]), jnp.asarray(0.0))
  levels = np.linspace(0.2, 0.8, 6, dtype=np.float32)
  boundary = jnp.asarray(np.stack([levels, levels] + [levels[::-1]] * 4, axis=1))
  cert = smoothing.certify(linear_logits, params, boundary, rng=jax.random.key(0),
                           sigma=SIGMA, num_selection=32, num_estimation=1000,
                           batch_size=4096)
  assert np.all(np.asarray(cert.prediction) == smoothing.ABSTAIN)
  assert np.all(np.asarray(cert.radius) == 0)
  pred = smoothing.predict(linear_logits, params, boundary, rng=jax.random.key(1),
                           sigma=SIGMA, num_samples=1000, batch_size=4096)
  assert np.all(np.asarray(pred) == smoothing.ABSTAIN)
  # Exactly tied top counts among three classes; clear and unclear winners for contrast.
  counts = jnp.array([[50, 50, 0], [0, 40, 40], [100, 0, 0], [60, 38, 2], [0, 0, 20],
                      [1, 0, 0]], jnp.int32)
  got = np.asarray(smoothing._predict_from_counts(counts, 0.001))  # pylint: disable=protected-access
  np.testing.assert_array_equal(got, [-1, -1, 0, -1, 2, -1])
  np.testing.assert_array_equal(  # the same decisions as scipy's test
      got >= 0, [stats.binomtest(int(a), int(a + b)).pvalue <= 0.001
                 for a, b in np.sort(np.asarray(counts), -1)[:, ::-1][:, :2]])
  estimation = jnp.array([[500, 500, 0], [0, 999, 1], [0, 1, 999], [1000, 0, 0],
                          [499, 501, 0], [0, 0, 1000]], jnp.int32)
  selection = estimation.at[4].set(jnp.array([10, 0, 0]))  # select class 0 at row 4
  cert = smoothing._certify_from_counts(selection, estimation, 0.5, 1000, 0.001)  # pylint: disable=protected-access
  np.testing.assert_array_equal(np.asarray(cert.prediction), [-1, 1, 2, 0, -1, 2])
  for row, n_a in ((1, 999), (3, 1000)):
    assert float(cert.radius[row]) == pytest.approx(
        0.5 * stats.norm.ppf(stats.beta.ppf(0.001, n_a, 1000 - n_a + 1)), rel=1e-4)


def test_same_answer_under_jit_eager_one_device_and_any_chunking():
  params, x, _ = linear_problem()
  kwargs = dict(rng=jax.random.key(7), sigma=SIGMA, num_selection=32, num_estimation=1000)
  assert len(jax.devices()) == 4  # conftest
  eager = smoothing.certify(linear_logits, params, x, batch_size=4096, **kwargs)
  one_device = smoothing.certify(linear_logits, params, x, batch_size=4096,
                                 mesh=Mesh(np.asarray(jax.devices()[:1]), ('data',)), **kwargs)
  rechunked = smoothing.certify(linear_logits, params, x, batch_size=96, **kwargs)

  @jax.jit
  def jitted(params, x, rng):
    return smoothing.certify(linear_logits, params, x, batch_size=4096,
                             **{**kwargs, 'rng': rng})

  under_jit = jitted(params, x, kwargs['rng'])
  for other in (one_device, rechunked, under_jit):
    for field in ('prediction', 'count', 'counts', 'selected', 'selection_counts'):
      np.testing.assert_array_equal(getattr(other, field), getattr(eager, field), field)
    np.testing.assert_allclose(other.radius, eager.radius, rtol=1e-6)
  different = smoothing.certify(linear_logits, params, x, batch_size=4096,
                                **{**kwargs, 'rng': jax.random.key(8)})
  assert not np.array_equal(different.counts, eager.counts)


def test_memory_is_bounded_by_batch_size():
  seen = []

  def recording_logits(params, x):
    seen.append(x.shape[0])
    return linear_logits(params, x)

  params, x, _ = linear_problem()
  for n, batch_size in ((1000, 128), (10, 32), (7, 1000)):
    seen.clear()
    counts = smoothing.sample_counts(recording_logits, params, x, rng=jax.random.key(0),
                                     sigma=SIGMA, num_samples=n, batch_size=batch_size)
    assert np.all(np.asarray(counts).sum(-1) == n)
    assert seen and max(seen) <= batch_size, (n, batch_size, seen)


# -------------------------------------------------------------- soundness on digits


def mlp_logits(params, x):
  h = jnp.reshape(x, (x.shape[0], -1))
  for w, b in params[:-1]:
    h = jax.nn.relu(h @ w + b)
  w, b = params[-1]
  return h @ w + b


@functools.lru_cache(maxsize=1)
def trained_digits_mlp():
  """An MLP 64-48-10 trained 400 steps with the gaussian_augmentation term (σ = 0.25)."""
  x_train, y_train = data.digits('train')
  keys = jax.random.split(jax.random.key(0), 3)
  sizes = (64, 48, 10)
  params = [(jax.random.normal(k, (i, o)) * np.sqrt(2.0 / i), jnp.zeros(o))
            for k, i, o in zip(keys, sizes[:-1], sizes[1:])]
  loss_fn = losses.cross_entropy_loss_fn(mlp_logits)
  term = regularizers.get('gaussian_augmentation')
  x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)

  def step(carry, i):
    params, velocity = carry
    idx = jax.random.choice(jax.random.fold_in(keys[2], i), x_train.shape[0], (128,))
    batch = (x_train[idx], y_train[idx])
    objective = lambda p: jnp.mean(term(loss_fn, p, batch, rng=jax.random.fold_in(
        keys[1], i), sigma=SIGMA)[0])
    grads = jax.grad(objective)(params)
    velocity = jax.tree.map(lambda v, g: 0.9 * v + g, velocity, grads)
    params = jax.tree.map(lambda p, v: p - 0.05 * v, params, velocity)
    return (params, velocity), None

  velocity = jax.tree.map(jnp.zeros_like, params)
  (params, _), _ = jax.jit(lambda c: jax.lax.scan(step, c, jnp.arange(400)))(
      (params, velocity))
  return params


def test_gaussian_augmentation_is_the_loss_at_noisy_inputs():
  params = trained_digits_mlp()
  x, y = data.digits('test')
  x, y = jnp.asarray(x[:16]), jnp.asarray(y[:16])
  loss_fn = losses.cross_entropy_loss_fn(mlp_logits)
  key = jax.random.key(5)
  values, _ = regularizers.gaussian_augmentation(loss_fn, params, x, y, rng=key,
                                                 sigma=SIGMA)
  expected = loss_fn(params, x + SIGMA * jax.random.normal(key, x.shape), y)
  np.testing.assert_allclose(values, expected, rtol=1e-6)
  clean, _ = regularizers.gaussian_augmentation(loss_fn, params, (x, y), rng=key, sigma=0.0)
  np.testing.assert_allclose(clean, loss_fn(params, x, y), rtol=1e-6)
  assert regularizers.takes('gaussian_augmentation') == 'loss_fn'
  with pytest.raises(ValueError, match='sigma'):
    regularizers.gaussian_augmentation(loss_fn, params, x, y, rng=key, sigma=-0.1)


def test_no_certified_radius_exceeds_an_adversarial_example_of_the_smoothed_classifier():
  params = trained_digits_mlp()
  x, y = data.digits('test')
  x, y = jnp.asarray(x[:16]), jnp.asarray(y[:16])
  cert = smoothing.certify(mlp_logits, params, x, rng=jax.random.key(11), sigma=SIGMA,
                           num_selection=64, num_estimation=4000, batch_size=8192)
  certified = np.asarray(cert.prediction) >= 0
  assert certified.sum() >= 12 and np.mean(np.asarray(cert.prediction) == y) >= 0.75

  # An L2 attack on the base model's logits averaged over 32 fixed noise draws.
  noise = SIGMA * jax.random.normal(jax.random.key(12), (32,) + x.shape[1:])

  def averaged_logits(params, xs):
    noisy = xs[:, None] + noise[None]
    flat = noisy.reshape((-1,) + xs.shape[1:])
    return mlp_logits(params, flat).reshape(xs.shape[0], noise.shape[0], -1).mean(1)

  labels = jnp.asarray(np.where(certified, np.asarray(cert.prediction), 0))
  x_adv, _ = attacks.min_norm(averaged_logits, params, (x, labels), p=2.0, max_eps=4.0,
                              search_steps=8, steps=20, inner='pgd')
  # Step 10% past the point found, then check with PREDICT (fresh noise, 10k votes) that
  # the smoothed classifier really answers another class there.
  x_far = jnp.clip(x + 1.1 * (x_adv - x), 0.0, 1.0)
  smoothed = np.asarray(smoothing.predict(mlp_logits, params, x_far, rng=jax.random.key(13),
                                          sigma=SIGMA, num_samples=10_000, alpha=0.001))
  flipped = certified & (smoothed >= 0) & (smoothed != np.asarray(labels))
  assert flipped.sum() >= 8, flipped
  distance = np.linalg.norm(np.asarray(x_far - x).reshape(len(x), -1), axis=-1)
  radius = np.asarray(cert.radius)
  margin = distance[flipped] - radius[flipped]
  print(f'smoothed-classifier adversarial distance minus certified radius on '
        f'{flipped.sum()} points: min {margin.min():.3f}, median {np.median(margin):.3f}; '
        f'ratio radius/distance max {np.max(radius[flipped] / distance[flipped]):.3f}')
  assert np.all(radius[flipped] < distance[flipped])


# ------------------------------------------------------------------------- bad input


def _counting_logits():
  calls = []

  def logits_fn(params, x):
    calls.append(1)
    return linear_logits(params, x)

  return logits_fn, calls


@pytest.mark.parametrize('change, match', [
    ({'sigma': 0.0}, 'sigma'),
    ({'sigma': -0.5}, 'sigma'),
    ({'sigma': float('nan')}, 'sigma'),
    ({'alpha': 0.0}, 'alpha'),
    ({'alpha': 1.0}, 'alpha'),
    ({'alpha': 1.5}, 'alpha'),
    ({'num_estimation': 0}, 'num_estimation'),
    ({'num_selection': 0}, 'num_selection'),
    ({'num_estimation': 10.5}, 'num_estimation'),
    ({'batch_size': 0}, 'batch_size'),
    ({'inputs': 'pixels'}, r'inputs must lie in bounds \(0.0, 1.0\)'),
    ({'inputs': 'int'}, 'inputs must be a floating array'),
])
def test_bad_input_raises_before_anything_runs(change, match):
  params, x, _ = linear_problem()
  logits_fn, calls = _counting_logits()
  kwargs = dict(rng=jax.random.key(0), sigma=SIGMA, num_selection=10, num_estimation=100,
                alpha=0.001, batch_size=64)
  change = dict(change)
  kind = change.pop('inputs', None)
  inputs = {None: x, 'pixels': x * 255.0, 'int': (x * 255).astype(jnp.int32)}[kind]
  kwargs.update(change)
  with pytest.raises(ValueError, match=match):
    smoothing.certify(logits_fn, params, inputs, **kwargs)
  assert not calls
  predict_kwargs = {k: v for k, v in kwargs.items()
                    if k not in ('num_selection', 'num_estimation')}
  if 'num_selection' not in change and 'num_estimation' not in change:
    with pytest.raises(ValueError, match=match):
      smoothing.predict(logits_fn, params, inputs, num_samples=100, **predict_kwargs)
    assert not calls
