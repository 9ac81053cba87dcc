"""AutoAttack: analytic worst cases, the pointwise worst case of its attacks, masking flags,
gradient-free logits (x1000), metrics and training hooks, sharding, argument errors."""

import math

import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np
import pytest

from robustjax import attacks
from robustjax import metrics
from robustjax.attacks._src import apgd as apgd_lib
from robustjax.attacks._src import autoattack as aa_lib
from robustjax.attacks._src import common as attacks_common
from robustjax.training import schema
from robustjax.training import train
from toy_models import linear, mlp  # pylint: disable=g-bad-import-order

real_external = aa_lib._external  # pylint: disable=protected-access
INF = math.inf
KEY = jax.random.PRNGKey(0)


def scaled(params, x):
  """Logits x1000: softmax saturates, so CE gradients are exactly 0 in float32."""
  return 1000.0 * linear(params, x)


def quantised(params, x):
  """Input rounded to 4 levels with no gradient: every input gradient is exactly 0."""
  return linear(params, jax.lax.stop_gradient(jnp.round(x * 3) / 3))


def _images(seed, classes=10, n=8):
  """A linear model on 8x8x1 images, labels = its predictions (all clean-correct)."""
  kw, kb, kx = jax.random.split(jax.random.PRNGKey(seed), 3)
  params = (0.5 * jax.random.normal(kw, (64, classes)), 0.3 * jax.random.normal(kb, (classes,)))
  x = jax.random.uniform(kx, (n, 8, 8, 1), minval=0.2, maxval=0.8)  # box inactive at eps<=.2
  return params, x, jnp.argmax(linear(params, x), -1).astype(jnp.int32)


LIN_PARAMS, LIN_X, LIN_Y = _images(0)
MLP_PARAMS = ((jax.random.normal(jax.random.PRNGKey(5), (6, 8)) / 2.5, jnp.zeros(8)),
              (2.0 * jax.random.normal(jax.random.PRNGKey(6), (8, 5)), jnp.zeros(5)))
MLP_X = jax.random.uniform(jax.random.PRNGKey(7), (12, 6))
MLP_Y = jnp.argmax(mlp(MLP_PARAMS, MLP_X), -1).astype(jnp.int32).at[0].set(
    (jnp.argmax(mlp(MLP_PARAMS, MLP_X[:1]), -1)[0] + 1) % 5)  # one clean error


def worst_margin(params, x, y, eps, p):
  """Analytic min over the ball of z_y - max_{j != y} z_j for a linear model (no box)."""
  w, b = (np.asarray(a, np.float64) for a in params)
  flat = np.asarray(x, np.float64).reshape(len(y), -1)
  z = flat @ w + b
  q = 1.0 if p == INF else 2.0
  return np.asarray([min(z[i, y[i]] - z[i, j] - eps * np.linalg.norm(w[:, y[i]] - w[:, j], q)
                         for j in range(w.shape[1]) if j != y[i]) for i in range(len(y))])


def assert_feasible(x_adv, x, eps, p, bounds=(0.0, 1.0)):
  x_adv, x = np.asarray(x_adv, np.float64), np.asarray(x, np.float64)
  norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), ord=p, axis=1)
  assert np.all(norms <= eps * (1 + 1e-5) + 1e-6), norms
  assert np.all(x_adv >= bounds[0]) and np.all(x_adv <= bounds[1])


# ---------------------------------------------------------------------------------------
# Strength: analytic worst cases.


def test_standard_autoattack_reaches_the_linear_worst_case_linf():
  eps = 0.04
  want = worst_margin(LIN_PARAMS, LIN_X, np.asarray(LIN_Y), eps, INF)
  assert np.all(np.abs(want) > 0.05) and 0 < np.sum(want < 0) < len(want)
  result = attacks.autoattack(linear, LIN_PARAMS, (LIN_X, LIN_Y), rng=KEY, eps=eps)
  assert result.attack_names == ('apgd-ce', 'apgd-t', 'fab-t', 'square')
  np.testing.assert_array_equal(result.robust, want > 0)
  # Every broken point is misclassified at the returned point; robust ones are x.
  pred = np.asarray(jnp.argmax(linear(LIN_PARAMS, result.inputs), -1))
  broken = ~np.asarray(result.robust)
  assert np.all(pred[broken] != np.asarray(LIN_Y)[broken])
  np.testing.assert_array_equal(np.asarray(result.inputs)[~broken], np.asarray(LIN_X)[~broken])
  np.testing.assert_array_equal(np.asarray(result.broken_by) == attacks.ROBUST,
                                np.asarray(result.robust))
  assert_feasible(result.inputs, LIN_X, eps, INF)


def test_autoattack_reaches_the_linear_worst_case_l2():
  eps = 0.3
  want = worst_margin(LIN_PARAMS, LIN_X, np.asarray(LIN_Y), eps, 2.0)
  assert np.all(np.abs(want) > 0.05) and 0 < np.sum(want < 0) < len(want)
  result = attacks.autoattack(linear, LIN_PARAMS, (LIN_X, LIN_Y), rng=KEY, eps=eps, p=2.0,
                              attacks=['apgd-ce', 'apgd-t'])
  np.testing.assert_array_equal(result.robust, want > 0)
  assert_feasible(result.inputs, LIN_X, eps, 2.0)


def test_logits_times_1000_are_broken_by_autoattack():
  eps = 0.04
  # Points whose clean margin (0.8 to 1.3) keeps the x1000 softmax saturated around x
  # while the ball still holds a misclassified point.
  pool = jax.random.uniform(jax.random.PRNGKey(8), (400, 8, 8, 1), minval=0.2, maxval=0.8)
  z = np.asarray(linear(LIN_PARAMS, pool))
  top2 = np.sort(z, axis=1)[:, -2:]
  labels = z.argmax(1)
  keep = ((top2[:, 1] - top2[:, 0] > 0.8) & (top2[:, 1] - top2[:, 0] < 1.3)
          & (worst_margin(LIN_PARAMS, pool, labels, eps, INF) < -0.1))
  x, y = pool[np.flatnonzero(keep)[:8]], jnp.asarray(labels[np.flatnonzero(keep)[:8]])
  assert len(x) == 8
  grad = jax.grad(lambda v: jnp.sum(jax.nn.log_softmax(scaled(LIN_PARAMS, v))[
      jnp.arange(8), y]))(x)
  assert np.all(np.asarray(grad) == 0)  # CE gradients vanish in float32 (eagerly)
  # (Compiled, XLA's fused softmax leaves ~1e-6 of rounding in this gradient, and sign
  # steps on it still move; the DLR loss needs no such luck: it is scale invariant.)
  result = attacks.autoattack(scaled, LIN_PARAMS, (x, y), rng=KEY, eps=eps,
                              attacks=['apgd-ce', 'apgd-t'])
  assert not np.any(result.robust)
  dlr_only = attacks.autoattack(scaled, LIN_PARAMS, (x, y), rng=KEY, eps=eps,
                                attacks=['apgd-t'])
  assert not np.any(dlr_only.robust)
  assert result.flags['zero_gradient'] == 0  # the DLR gradient is fine


# ---------------------------------------------------------------------------------------
# The ensemble is the pointwise worst case of its attacks.


def test_sequential_ensemble_is_the_pointwise_worst_case_of_its_attacks():
  batch = (MLP_X, MLP_Y)
  names = ['apgd-ce', 'apgd-t']
  both = attacks.autoattack(mlp, MLP_PARAMS, batch, rng=KEY, eps=0.4, attacks=names)
  alone = [attacks.autoattack(mlp, MLP_PARAMS, batch, rng=KEY, eps=0.4, attacks=[n])
           for n in names]
  np.testing.assert_array_equal(both.robust, alone[0].robust & alone[1].robust)
  by = np.asarray(both.broken_by)
  assert by[0] == attacks.CLEAN_MISCLASSIFIED and not both.robust[0]
  first = np.asarray(alone[0].broken_by) == 0
  np.testing.assert_array_equal(by == 0, first)
  np.testing.assert_array_equal(by == 1, ~first & (np.asarray(alone[1].broken_by) == 0))
  # Points broken by the first attack are that attack's points run alone.
  np.testing.assert_array_equal(np.asarray(both.inputs)[first],
                                np.asarray(alone[0].inputs)[first])
  assert 0 < np.sum(by == 0) and 0 < np.sum(by == 1)  # both attacks matter here
  again = attacks.autoattack(mlp, MLP_PARAMS, batch, rng=KEY, eps=0.4, attacks=names)
  np.testing.assert_array_equal(again.inputs, both.inputs)  # deterministic given rng


def test_sharded_inputs_give_the_same_result():
  assert len(jax.devices()) == 4
  shard = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))
  kw = dict(rng=KEY, eps=0.4, attacks=['apgd-ce', 'apgd-t'])
  plain = attacks.autoattack(mlp, MLP_PARAMS, (MLP_X, MLP_Y), **kw)
  sharded = attacks.autoattack(mlp, MLP_PARAMS, (jax.device_put(MLP_X, shard),
                                                 jax.device_put(MLP_Y, shard)), **kw)
  np.testing.assert_array_equal(sharded.broken_by, plain.broken_by)
  np.testing.assert_allclose(sharded.inputs, plain.inputs, atol=1e-6)


@hypothesis.settings(max_examples=3, deadline=None, derandomize=True)
@hypothesis.given(eps=st.floats(0.0, 0.5), edge=st.sampled_from([0.0, 1.0]))
def test_standard_autoattack_stays_in_ball_and_box(eps, edge):
  x = LIN_X.at[:, :2].set(edge)
  result = attacks.autoattack(linear, LIN_PARAMS, (x, LIN_Y), rng=KEY, eps=eps)
  assert_feasible(result.inputs, x, eps, INF)


# ---------------------------------------------------------------------------------------
# Flags (the reference code's checks) and versions.


def test_masking_flags_when_only_the_black_box_attack_breaks_points(monkeypatch):
  eps = 0.2
  params, x, y = LIN_PARAMS, LIN_X, jnp.argmax(quantised(LIN_PARAMS, LIN_X), -1)
  w = np.asarray(params[0])

  def fake_square(logits_fn, prm, batch, *, rng, eps, p, bounds, **kw):
    """Stands in for Square: the linear part's worst corner toward the runner-up."""
    xs, ys = batch
    z = np.array(linear(prm, xs))
    z[np.arange(len(ys)), np.asarray(ys)] = -np.inf
    other = z.argmax(1)
    direction = (w[:, other] - w[:, np.asarray(ys)]).T.reshape(xs.shape)
    return jnp.clip(xs + eps * np.sign(direction), 0, 1)

  monkeypatch.setattr(aa_lib, '_external', lambda name: fake_square if name == 'square'
                      else real_external(name))
  result = attacks.autoattack(quantised, params, (x, y), rng=KEY, eps=eps,
                              attacks=['apgd-ce', 'apgd-t', 'square'])
  square_broke = int(np.sum(np.asarray(result.broken_by) == 2))
  assert square_broke > 0
  assert result.flags['square_improved'] == square_broke
  assert result.flags['zero_gradient'] == len(y)  # every clean-correct point
  assert result.flags['randomized'] == 0 and result.flags['softmax_output'] == 0
  # Square first: nothing for it to improve on, so no flag.
  alone = attacks.autoattack(quantised, params, (x, y), rng=KEY, eps=eps, attacks=['square'])
  assert int(np.sum(np.asarray(alone.broken_by) == 0)) > 0
  assert alone.flags['square_improved'] == 0


def noisy(params, x, rng=None):
  """A stochastic model: Gaussian logit noise when given a key."""
  z = linear(params, x)
  return z if rng is None else z + 0.5 * jax.random.normal(rng, z.shape)


def test_randomized_and_softmax_checks_count_examples():
  kw = dict(inputs=LIN_X, labels=LIN_Y, correct=jnp.ones(8, bool), num_classes=10, rng=KEY)
  det = aa_lib._flag_checks(linear, LIN_PARAMS, stochastic=False, **kw)
  assert det == {'randomized': 0, 'softmax_output': 0, 'zero_gradient': 0}
  rand = aa_lib._flag_checks(noisy, LIN_PARAMS, stochastic=True, **kw)
  assert rand['randomized'] == 8
  probs = aa_lib._flag_checks(lambda p, x: jax.nn.softmax(linear(p, x)), LIN_PARAMS,
                              stochastic=False, **kw)
  assert probs['softmax_output'] == 8


def jittery(params, x, rng=None):
  """A linear model whose input gradient carries strong noise (scale 8 per coordinate) that
  averages out, while its values move by at most 0.008: one gradient sample is a poor
  ascent direction, the EoT mean of 20 a good one."""
  z = linear(params, x)
  if rng is None:
    return z
  s = jax.random.normal(rng, (x[0].size, z.shape[1]))
  return z + 0.008 * jnp.sin(1000.0 * (jnp.reshape(x, (len(x), -1)) @ s))


def test_rand_version_needs_its_eot_samples_on_a_stochastic_model():
  params, x, y = _images(3, n=32)
  eps = 0.03
  kw = dict(rng=KEY, eps=eps, version='rand')
  first = attacks.autoattack(jittery, params, (x, y), **kw)
  assert first.attack_names == ('apgd-ce', 'apgd-dlr')
  assert first.flags['randomized'] == 32
  assert_feasible(first.inputs, x, eps, INF)
  want = worst_margin(params, x, np.asarray(y), eps, INF)
  robust = np.asarray(first.robust)
  assert not np.any(~robust & (want > 0.01))  # nothing beyond the analytic worst case
  breakable = want < -0.05
  # 20 samples break 23 of the 26 clearly breakable points; one sample (no EoT) 15.
  assert breakable.sum() == 26 and np.sum(~robust & breakable) >= 22


def official_objects(version, norm):
  """The four attack objects of fra31/auto-attack's AutoAttack: constructor values, then
  set_version's assignments, transcribed (norm: 'Linf', 'L2' or 'L1')."""
  apgd = dict(n_iter=100, n_restarts=5, eot_iter=1, use_largereps=False)
  apgd_t = dict(n_iter=100, n_restarts=1, eot_iter=1, use_largereps=False,
                n_target_classes=9)
  fab = dict(n_iter=100, n_restarts=5, n_target_classes=9)
  square = dict(n_queries=5000, p_init=0.8, n_restarts=1, rescale_schedule=False)
  if version == 'standard':
    if norm in ('Linf', 'L2'):
      apgd['n_restarts'] = 1
      apgd_t['n_target_classes'] = 9
    else:
      apgd['use_largereps'] = apgd_t['use_largereps'] = True
      apgd['n_restarts'] = 5
      apgd_t['n_target_classes'] = 5
    fab['n_restarts'] = apgd_t['n_restarts'] = 1
    fab['n_target_classes'], square['n_queries'] = 9, 5000
  elif version == 'plus':
    apgd['n_restarts'] = fab['n_restarts'] = 5
    apgd_t['n_restarts'] = 1
    fab['n_target_classes'] = apgd_t['n_target_classes'] = 9
    square['n_queries'] = 5000
  else:  # rand
    apgd['n_restarts'], apgd['eot_iter'] = 1, 20
  return apgd, apgd_t, fab, square


def per_attack(apgd, apgd_t, fab, square):
  """What each name runs with (run_standard_evaluation: 'apgd-ce'/'apgd-dlr' set only the
  loss of the one APGD object; 'fab-t' sets fab.n_restarts = 1)."""
  get = lambda o, k: o[k] if isinstance(o, dict) else getattr(o, k)
  apgd_kw = lambda o: dict(steps=get(o, 'n_iter'), restarts=get(o, 'n_restarts'),
                           eot_samples=get(o, 'eot_iter'),
                           decreasing_eps=bool(get(o, 'use_largereps')))
  return {
      'apgd-ce': dict(apgd_kw(apgd), loss='ce'),
      'apgd-dlr': dict(apgd_kw(apgd), loss='dlr'),
      'apgd-t': dict(apgd_kw(apgd_t), loss='dlr-targeted',
                     num_targets=get(apgd_t, 'n_target_classes')),
      'fab': dict(steps=get(fab, 'n_iter'), restarts=get(fab, 'n_restarts')),
      'fab-t': dict(steps=get(fab, 'n_iter'), restarts=1,
                    num_targets=get(fab, 'n_target_classes')),
      'square': dict(queries=get(square, 'n_queries'), p_init=get(square, 'p_init'),
                     restarts=get(square, 'n_restarts'),
                     rescale_schedule=bool(get(square, 'rescale_schedule'))),
  }


NORM_NAMES = {INF: 'Linf', 2.0: 'L2', 1.0: 'L1'}


@pytest.mark.parametrize('version', ['standard', 'plus', 'rand'])
def test_every_attack_gets_the_settings_the_reference_gives_it(version):
  for p, norm in NORM_NAMES.items():
    assert aa_lib.ensemble_settings(version, p) == per_attack(
        *official_objects(version, norm)), (version, norm)
  # Pinned: L1 standard gives apgd-ce AND apgd-dlr 5 restarts and the 3ε/2ε/ε schedule;
  # AutoAttack's Square follows the raw window schedule.
  l1 = aa_lib.ensemble_settings('standard', 1.0)
  assert l1['apgd-dlr']['restarts'] == 5 and l1['apgd-dlr']['decreasing_eps']
  assert not aa_lib.ensemble_settings(version, INF)['square']['rescale_schedule']
  assert aa_lib.check_attacks(None, version) == {
      'standard': ('apgd-ce', 'apgd-t', 'fab-t', 'square'),
      'plus': ('apgd-ce', 'apgd-dlr', 'fab', 'square', 'apgd-t', 'fab-t'),
      'rand': ('apgd-ce', 'apgd-dlr')}[version]


def test_settings_equal_the_official_autoattack_objects():
  torch = pytest.importorskip('torch')
  official = pytest.importorskip('pyautoattack')
  model = torch.nn.Linear(4, 3)
  for version in ('standard', 'plus', 'rand'):
    for p, norm in NORM_NAMES.items():
      adversary = official.AutoAttack(model, norm=norm, eps=0.1, version=version,
                                      device='cpu')
      want = per_attack(adversary.apgd, adversary.apgd_targeted, adversary.fab,
                        adversary.square)
      assert aa_lib.ensemble_settings(version, p) == want, (version, norm)
      assert aa_lib.check_attacks(None, version) == tuple(adversary.attacks_to_run)


def test_a_custom_list_runs_each_attack_with_its_version_settings(monkeypatch):
  # The attacks are stubbed (they return x): what is checked is what they are called with.
  calls = []
  monkeypatch.setattr(aa_lib.apgd_lib, 'run', lambda params, x, *a, **kw: (
      calls.append(('apgd', kw['steps'], kw['decreasing_eps'], kw['eot_samples'])), (x,))[1])
  monkeypatch.setattr(aa_lib.square_lib, 'run', lambda fn, params, batch, **kw: (
      calls.append(('square', kw['queries'], kw['restarts'], kw['rescale_schedule'])),
      aa_lib.square_lib.SquareResult(batch[0], None, None))[1])
  attacks.autoattack(linear, LIN_PARAMS, (LIN_X, LIN_Y), rng=KEY, eps=0.1, p=1.0,
                     attacks=['apgd-dlr', 'square'])
  # L1 standard: apgd-dlr is the configured APGD (5 restarts, the 3ε/2ε/ε schedule).
  assert calls == [('apgd', 100, True, 1)] * 5 + [('square', 5000, 1, False)]
  del calls[:]
  attacks.autoattack(linear, LIN_PARAMS, (LIN_X, LIN_Y), rng=KEY, eps=0.1, p=INF,
                     version='plus', attacks=['apgd-dlr'])
  assert calls == [('apgd', 100, False, 1)] * 5


def test_bucket_sizes_pad_under_one_over_per_octave_with_that_many_shapes_per_octave():
  assert [attacks_common.bucket_size(n, 100) for n in (1, 8, 9, 33, 64, 65, 99)] == [
      8, 8, 10, 40, 64, 80, 100]
  assert [attacks_common.bucket_size(n, 1000, per_octave=8) for n in (9, 163, 278)] == [
      9, 176, 288]
  for per_octave in (1, 2, 4, 8):
    sizes = [attacks_common.bucket_size(n, 4096, per_octave=per_octave)
             for n in range(1, 4097)]
    assert all(n <= s <= max(8, n + n / per_octave) for n, s in zip(range(1, 4097), sizes))
    assert sizes == sorted(sizes)  # a shrinking set never grows its batch
    assert len(set(sizes)) <= per_octave * 9 + 1  # per_octave * log2(4096 / 8) + 1 shapes
  assert attacks_common.bucket_size(300, 100) == 100


def test_autoattack_pads_a_stage_by_under_an_eighth(monkeypatch):
  # Class 0's logit is 10 (x0 − 0.3), the others constant: at L∞ 0.1, exactly the 39
  # points at x0 = 0.35 are breakable, so the second attack runs on the other 33.
  sizes = []
  run = apgd_lib.run

  def spy(params, inputs, *args, **kwargs):
    sizes.append(inputs.shape[0])
    return run(params, inputs, *args, **kwargs)

  monkeypatch.setattr(apgd_lib, 'run', spy)
  w = jnp.zeros((2, 4)).at[0, 0].set(10.0)
  b = jnp.array([-3.0, 0.0, -10.0, -10.0])
  x0 = jnp.concatenate([jnp.full(33, 0.8), jnp.full(39, 0.35)])
  x = jnp.stack([x0, jnp.full(72, 0.5)], axis=1)
  y = jnp.zeros(72, jnp.int32)
  result = attacks.autoattack(linear, (w, b), (x, y), rng=KEY, eps=0.1, p=INF,
                              attacks=['apgd-ce', 'apgd-dlr'])
  np.testing.assert_array_equal(result.robust, np.arange(72) < 33)
  assert sizes == [72, 36]  # 33 rounded up to a multiple of 4 (quarter octaves: 40)


# ---------------------------------------------------------------------------------------
# Metrics and training.


def test_metrics_with_autoattack_match_the_ensemble():
  names = ['apgd-ce', 'apgd-t']
  mask = jnp.arange(12) < 8
  batches = [(MLP_X, MLP_Y), (MLP_X, MLP_Y, mask)]
  got = metrics.robust_accuracy(mlp, MLP_PARAMS, batches, rng=KEY, eps=0.4, p=INF,
                                attack='autoattack', attacks=names)
  r0 = attacks.autoattack(mlp, MLP_PARAMS, (MLP_X, MLP_Y),
                          rng=jax.random.fold_in(KEY, 0), eps=0.4, attacks=names).robust
  r1 = attacks.autoattack(mlp, MLP_PARAMS, (MLP_X[:8], MLP_Y[:8]),
                          rng=jax.random.fold_in(KEY, 1), eps=0.4, attacks=names).robust
  assert got == pytest.approx((np.sum(r0) + np.sum(r1)) / 20)
  per_example = metrics.robust_correct(mlp, MLP_PARAMS, (MLP_X, MLP_Y),
                                       rng=jax.random.fold_in(KEY, 0), eps=0.4, p=INF,
                                       attack='autoattack', attacks=names)
  np.testing.assert_array_equal(per_example, r0)
  curve = metrics.accuracy_vs_eps(mlp, MLP_PARAMS, batches, rng=KEY, eps_list=[0.0, 0.4],
                                  p=INF, attack='autoattack', attacks=names)
  assert curve["accuracy"][0] == pytest.approx(18 / 20)  # example 0 twice: a clean error
  assert curve['accuracy'][1] == pytest.approx(got)


def test_training_evaluation_accepts_autoattack():
  x, y = np.asarray(LIN_X), np.asarray(LIN_Y)
  got = train.evaluate(linear, LIN_PARAMS, x, y, eps=0.04, attack='autoattack',
                       batch_size=8, seed=3)
  want = attacks.autoattack(linear, LIN_PARAMS, (LIN_X, LIN_Y),
                            rng=jax.random.fold_in(jax.random.PRNGKey(3), 0), eps=0.04)
  assert got['robust_accuracy'] == pytest.approx(float(np.mean(want.robust)))
  assert got['clean_accuracy'] == 1.0
  config = schema.base_config()
  config.eval.attack = 'autoattack'
  assert train._describe_attack(config.eval).startswith('AutoAttack')
  config.eval.attack = 'cw'
  with pytest.raises(ValueError, match='eval.attack'):
    schema.validate(config)


# ---------------------------------------------------------------------------------------
# Bad input: one clear message before anything compiles.


@pytest.fixture
def no_compile(monkeypatch):
  def fail(*args, **kwargs):
    raise AssertionError('an attack ran before the argument check')
  monkeypatch.setattr(apgd_lib, 'run_single', fail)
  monkeypatch.setattr(aa_lib, '_external', fail)
  monkeypatch.setattr(aa_lib, '_flag_checks', fail)


K3 = (LIN_PARAMS[0][:, :3], LIN_PARAMS[1][:3])


@pytest.mark.parametrize('kwargs,batch,match', [
    (dict(eps=-0.1), None, 'eps'),
    (dict(eps=0.1, p=3), None, 'p must be one of 1, 2, inf'),
    (dict(eps=0.1, attacks=['apgd-ce', 'cw']), None,
     "unknown attack 'cw'; valid choices: 'apgd-ce', 'apgd-dlr', 'apgd-t', 'fab'"),
    (dict(eps=0.1, version='fast'), None, 'version'),
    (dict(eps=0.1, attacks=[]), None, 'non-empty'),
    (dict(eps=0.1), (LIN_X * 255, LIN_Y), 'bounds'),
    (dict(eps=0.1, params=K3), (LIN_X, LIN_Y % 3), 'at least 4 classes'),
    (dict(eps=0.1, attacks=['square']), (LIN_X.reshape(8, 2, 2, 4, 4), LIN_Y),
     r'\[B, H, W, C\]'),
])
def test_bad_input_raises_before_any_attack(no_compile, kwargs, batch, match):
  params = kwargs.pop('params', LIN_PARAMS)
  with pytest.raises(ValueError, match=match):
    attacks.autoattack(linear, params, batch or (LIN_X, LIN_Y), rng=KEY, **kwargs)
