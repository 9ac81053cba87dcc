"""``python -m robustjax.evaluate``: report contents against robustjax.metrics, the worst
case over attacks, resuming, refusing other flags, bad input, certified curves.

One tiny softplus digits MLP is trained once per module (a few seconds); every
evaluation runs on its first 40 test digits in batches of 16 (so the last batch is
padded) with PGD-20 and, where the AutoAttack module is there, a single APGD attack.
"""

import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from robustjax import data
from robustjax import evaluate
from robustjax import evaluation
from robustjax.evaluation import classifiers
from robustjax import metrics
from robustjax.training import feed
from robustjax.training import schema
from robustjax.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_AUTOATTACK = importlib.util.find_spec('robustjax.attacks._src.autoattack') is not None
N, BATCH = 40, 16
EPS = [0.0, 0.05, 0.1]
ATTACKS = ['pgd', 'apgd-ce'] if HAS_AUTOATTACK else ['pgd']
COMMON = dict(eps=EPS, norm='inf', attacks=ATTACKS, num_examples=N, batch_size=BATCH,
              progress=False, seed=3)
VOLATILE = ('timing', 'environment', 'tag')  # what differs between identical runs


CACHE_KEYS = {'jax_compilation_cache_dir': None,
              'jax_persistent_cache_min_compile_time_secs': 0.0,
              'jax_persistent_cache_min_entry_size_bytes': 0}


@pytest.fixture(autouse=True, scope='module')
def compilation_cache(tmp_path_factory):
  """Identical evaluations (uninterrupted, resumed, the CLI's) reuse compiled attacks."""
  previous = {k: getattr(jax.config, k) for k in CACHE_KEYS}
  values = dict(CACHE_KEYS, jax_compilation_cache_dir=str(tmp_path_factory.mktemp('xla')))
  for k, v in values.items():
    jax.config.update(k, v)
  yield values
  for k, v in previous.items():
    jax.config.update(k, v)


def _snapshot(workdir):
  """``{relative path: sha256}`` of every file outside ``eval/``."""
  out = {}
  for root, dirs, files in os.walk(workdir):
    rel = os.path.relpath(root, workdir)
    if rel.split(os.sep)[0] == evaluation.EVAL_DIR:
      dirs[:] = []
      continue
    for f in files:
      with open(os.path.join(root, f), 'rb') as fh:
        out[os.path.join(rel, f)] = hashlib.sha256(fh.read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A trained softplus MLP 16 on digits (standardised inputs) and its file snapshot."""
  c = schema.base_config()
  c.model.kwargs.widths = (16,)
  c.model.kwargs.activation = 'softplus'
  c.batch_size = 32
  c.num_train_steps = 60
  c.checkpoint_every_steps = 60
  c.log_every_steps = 30
  c.optimizer.schedule = 'constant'
  c.optimizer.lr = 0.1
  c.eval.num_examples = 16
  c.eval.batch_size = 16
  c.eval.steps = 0  # training's own end-of-run PGD is not what is tested here
  workdir = str(tmp_path_factory.mktemp('run'))
  train.train_and_evaluate(c, workdir)
  return workdir, _snapshot(workdir)


@pytest.fixture(scope='module')
def full(run_dir):
  """An uninterrupted evaluation (tag 'full')."""
  workdir, _ = run_dir
  return evaluate.run(workdir, tag='full', **COMMON)


def _data(workdir):
  config = train.load_config(workdir)
  return feed.eval_arrays(config.dataset, split='test', num_examples=N)


def _padded_batches(x, y):
  """The evaluator's batches: 16 examples each, the last padded, padding masked."""
  out = []
  for lo in range(0, len(y), BATCH):
    xb, yb = x[lo:lo + BATCH], y[lo:lo + BATCH]
    pad = BATCH - len(yb)
    mask = np.r_[np.ones(len(yb), bool), np.zeros(pad, bool)]
    out.append((np.concatenate([xb, np.repeat(xb[-1:], pad, 0)]),
                np.concatenate([yb, np.repeat(yb[-1:], pad, 0)]), mask))
  return out


def _out(workdir, tag):
  return os.path.join(workdir, evaluation.EVAL_DIR, tag)


def _stable(report):
  return {k: v for k, v in report.items() if k not in VOLATILE}


def _npz(path):
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


# ------------------------------------------------------------------------ report


def test_report_files_and_numbers_agree_with_metrics(run_dir, full):
  workdir, _ = run_dir
  out = _out(workdir, 'full')
  for name in ('report.json', 'report.md', 'per_example.npz', 'accuracy_vs_eps.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, 'accuracy_vs_eps.png'), 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with open(os.path.join(out, 'report.json'), encoding='utf-8') as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(full))
  assert full['num_examples'] == N and full['norm'] == 'inf' and full['eps'] == EPS
  assert full['attacks'] == ATTACKS and full['seed'] == 3
  assert full['checkpoint_step'] == 60 and full['config']['dataset'] == 'digits'
  assert full['attack_hyperparameters']['pgd']['steps'] == 20
  for key in ('python', 'jax', 'flax', 'robustjax', 'machine'):
    assert key in full['environment']
  assert full['timing']['units'] == len(ATTACKS) * 2 * 3  # 2 nonzero eps x 3 batches

  # The restored model, evaluated by metrics on the same batches and keys.
  _, logits_fn, params = train.restore(workdir, step=60)
  x, y = _data(workdir)
  clean = float(metrics.accuracy(logits_fn, params, x, y))
  assert full['clean_accuracy'] == pytest.approx(clean, abs=1e-9)
  batches = _padded_batches(x, y)
  curve = metrics.accuracy_vs_eps(logits_fn, params, batches,
                                  rng=evaluation.attack_key(3, 'pgd'), eps_list=EPS,
                                  p=np.inf, steps=20, restarts=1, objective='ce')
  np.testing.assert_allclose(full['robust_accuracy']['pgd'], curve['accuracy'], atol=1e-9)
  assert full['results'][0]['robust_accuracy']['pgd'] == pytest.approx(clean)
  if HAS_AUTOATTACK:  # AutoAttack's attacks share one key per batch; real rows only
    want = metrics.robust_accuracy(logits_fn, params, batches,
                                   rng=evaluation.attack_key(3, 'autoattack'), eps=0.1,
                                   p=np.inf, attack='autoattack', attacks=['apgd-ce'])
    assert full['results'][2]['robust_accuracy']['apgd-ce'] == pytest.approx(want,
                                                                             abs=1e-9)
  assert 0 < full['results'][2]['robust_accuracy']['pgd'] < clean  # the attack bites

  per = _npz(os.path.join(out, 'per_example.npz'))
  np.testing.assert_array_equal(per['labels'], y)
  np.testing.assert_array_equal(per['indices'], np.arange(N))
  assert per['robust'].shape == (len(EPS), len(ATTACKS), N)
  for i, row in enumerate(full['results']):
    for j, a in enumerate(ATTACKS):
      assert per['robust'][i, j].mean() == pytest.approx(row['robust_accuracy'][a])
  md = open(os.path.join(out, 'report.md'), encoding='utf-8').read()
  assert f'| 0.1 | {100 * full["results"][2]["robust_accuracy"]["pgd"]:.2f} |' in md


def test_worst_case_is_the_per_example_and_over_attacks(run_dir, full):
  workdir, _ = run_dir
  per = _npz(os.path.join(_out(workdir, 'full'), 'per_example.npz'))
  worst = per['robust'].all(axis=1)
  np.testing.assert_array_equal(per['worst_robust'], worst)
  names = per['broken_by_names'].tolist()
  for i, row in enumerate(full['results']):
    assert row['worst_case'] == pytest.approx(worst[i].mean())
    assert row['worst_case'] <= min(row['robust_accuracy'].values())
    broken_by = per['broken_by'][i]
    np.testing.assert_array_equal(broken_by == evaluation.ROBUST, worst[i])
    np.testing.assert_array_equal(broken_by == evaluation.CLEAN_MISCLASSIFIED,
                                  ~per['clean_correct'])
    for k in np.flatnonzero(broken_by >= 0):  # the first listed attack that broke it
      first = ATTACKS[int(np.argmin(per['robust'][i, :, k]))]
      assert names[broken_by[k]].split(':')[0] == first
    assert sum(row['broken_by'].values()) == int(np.sum(broken_by >= 0))


def test_worst_case_and_broken_by_from_disagreeing_attacks():
  """The assembly on planted per-batch results where the attacks disagree."""
  import ml_collections
  rng = np.random.default_rng(0)
  n, names = 10, ['pgd', 'autoattack']
  settings = evaluation.Settings(
      workdir='/w', checkpoint_step=1, split='test', num_examples=n, norm='inf',
      eps=(0.0, 0.1), attacks=tuple(names), version='standard', batch_size=8, seed=0,
      certify='', sigma=0.0, num_samples=0, num_selection=0, alpha=0.0)
  labels = rng.integers(0, 3, n)
  clean = np.arange(n) != 4  # example 4 is misclassified clean
  robust = {'pgd': clean & (rng.random(n) < 0.6), 'autoattack': clean & (rng.random(n) < 0.5)}
  within = {'pgd': np.zeros(n, np.int32), 'autoattack': rng.integers(0, 4, n)}
  results = {}
  for a in names:
    broken = np.where(robust[a], -1, within[a]).astype(np.int32)
    broken = np.where(clean, broken, -2)
    for b, sl in enumerate((slice(0, 8), slice(8, n))):
      results[('attack', a, 0.1, b)] = {
          'robust': robust[a][sl], 'broken_by': broken[sl], 'seconds': 0.0,
          'flag_names': np.asarray(['square_improved']), 'flag_counts': np.asarray([b])}
  config = ml_collections.ConfigDict({'dataset': {'name': 'digits'}, 'seed': 0,
                                      'model': {'name': 'mlp', 'kwargs': {}},
                                      'regularizers': {}})
  subs = {'pgd': ['pgd'], 'autoattack': ['apgd-ce', 'apgd-t', 'fab-t', 'square']}
  predictions = np.where(clean, labels, (labels + 1) % 3)
  report, per = evaluation.assemble(settings, 't', config, n, labels, predictions,
                                    results, 2, subs)
  assert (robust['pgd'] != robust['autoattack']).any()  # the plant is informative
  worst = robust['pgd'] & robust['autoattack']
  np.testing.assert_array_equal(per['worst_robust'][1], worst)
  np.testing.assert_array_equal(per['worst_robust'][0], clean)
  assert report['results'][1]['worst_case'] == pytest.approx(worst.mean())
  names_flat = per['broken_by_names'].tolist()
  assert names_flat == ['pgd', 'autoattack:apgd-ce', 'autoattack:apgd-t',
                        'autoattack:fab-t', 'autoattack:square']
  for k in range(n):
    got = per['broken_by'][1, k]
    if not clean[k]:
      assert got == evaluation.CLEAN_MISCLASSIFIED
    elif worst[k]:
      assert got == evaluation.ROBUST
    elif not robust['pgd'][k]:
      assert names_flat[got] == 'pgd'
    else:
      assert names_flat[got] == f'autoattack:{subs["autoattack"][within["autoattack"][k]]}'
  assert report['results'][1]['autoattack_flags']['autoattack'] == {'square_improved': 1}
  assert sum(report['results'][1]['broken_by_within']['autoattack'].values()) == int(
      (clean & ~robust['autoattack']).sum())


# ------------------------------------------------------------------------ resuming


class _Killed(Exception):
  pass


def test_resumed_evaluation_equals_an_uninterrupted_one(run_dir, full):
  workdir, _ = run_dir
  out = _out(workdir, 'resumed')
  seen = []

  def kill_after_two(name):
    seen.append(name)
    if len(seen) == 2:
      raise _Killed

  with pytest.raises(_Killed):
    evaluate.run(workdir, tag='resumed', on_unit=kill_after_two, **COMMON)
  assert not any(os.path.exists(os.path.join(out, f)) for f in evaluation.REPORT_FILES)
  units = [f for f in os.listdir(os.path.join(out, 'partial')) if f.endswith('.npz')]
  assert sorted(units) == sorted(seen)

  resumed = evaluate.run(workdir, tag='resumed', **COMMON)
  assert resumed['timing']['units_resumed'] == 2
  assert _stable(resumed) == _stable(full)
  a = _npz(os.path.join(out, 'per_example.npz'))
  b = _npz(os.path.join(_out(workdir, 'full'), 'per_example.npz'))
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)

  # A lost unit (and report) is recomputed to the same result.
  os.remove(os.path.join(out, 'partial', seen[1]))
  os.remove(os.path.join(out, 'report.json'))
  again = evaluate.run(workdir, tag='resumed', **COMMON)
  assert again['timing']['units_resumed'] == again['timing']['units'] - 1
  assert _stable(again) == _stable(full)


def test_resuming_is_refused_for_a_retrained_model(run_dir, full, tmp_path):
  """The same step of a run retrained with another seed: the finished units of the old
  model must not be mixed into the new one's report."""
  import shutil
  workdir, _ = run_dir
  config = train.load_config(workdir)
  config.seed = 1
  other = str(tmp_path / 'retrained')
  train.train_and_evaluate(config, other)
  shutil.copytree(_out(workdir, 'full'), _out(other, 'full'))
  for name in evaluation.REPORT_FILES:  # as if killed before the report was written
    if os.path.exists(os.path.join(_out(other, 'full'), name)):
      os.remove(os.path.join(_out(other, 'full'), name))
  with pytest.raises(ValueError, match=r'^--tag: evaluation in .* was made for other '
                     r'parameters \(checkpoint retrained\?\); use a new --tag') as e:
    evaluate.run(other, tag='full', **COMMON)
  assert '\n' not in str(e.value)
  assert not os.path.exists(os.path.join(_out(other, 'full'), 'report.json'))


def test_resume_identity_names_changed_data_and_version(monkeypatch):
  import ml_collections
  config = ml_collections.ConfigDict({'dataset': {'name': 'digits'}})
  params = {'w': np.arange(6.0).reshape(2, 3)}
  base = evaluation.identity(params, config, 'test', np.arange(40))
  mismatch = evaluation.units.identity_mismatch
  assert mismatch(base, evaluation.identity(params, config, 'test', np.arange(40)),
                  'D') is None
  assert 'other parameters' in mismatch(
      base, evaluation.identity({'w': params['w'] + 1e-7}, config, 'test', np.arange(40)),
      'D')
  assert 'other data (split changed)' in mismatch(
      base, evaluation.identity(params, config, 'train', np.arange(40)), 'D')
  assert 'indices_sha256 changed' in mismatch(
      base, evaluation.identity(params, config, 'test', np.arange(1, 41)), 'D')
  # The source the evaluation reads (what 'auto' resolved to), not the configured one.
  monkeypatch.setattr(data, 'resolve_source', lambda dataset: ('npz', '/elsewhere'))
  assert 'source changed' in mismatch(
      base, evaluation.identity(params, config, 'test', np.arange(40)), 'D')
  assert 'made with robustjax 0.0.0' in mismatch(dict(base, robustjax='0.0.0'), base, 'D')


def test_batch_b_is_attacked_with_fold_in_key_b_whatever_the_order(run_dir, monkeypatch):
  """A stand-in attack whose outcome is its key's coin flips: an interrupted and
  resumed evaluation keys every batch as the documented schedule says."""
  import jax.numpy as jnp

  def coin_attack(logits_fn, *, p):
    del p

    def fn(params, x, y, key, eps):
      del eps
      clean = jnp.argmax(logits_fn(params, x), -1) == y
      robust = clean & jax.random.bernoulli(key, 0.5, y.shape)
      broken_by = jnp.where(clean, jnp.where(robust, -1, 0), -2).astype(jnp.int32)
      return robust, broken_by, {}, x

    return fn

  monkeypatch.setattr(classifiers, 'pgd_fn', coin_attack)
  workdir, _ = run_dir
  kwargs = dict(COMMON, attacks=['pgd'], eps=[0.05, 0.1], tag='coins')

  def kill_at_three(name, seen=[]):  # pylint: disable=dangerous-default-value
    seen.append(name)
    if len(seen) == 3:
      raise _Killed

  with pytest.raises(_Killed):
    evaluate.run(workdir, on_unit=kill_at_three, **kwargs)
  os.remove(os.path.join(_out(workdir, 'coins'), 'partial', 'attack.pgd.eps0.05.b00000.npz'))
  evaluate.run(workdir, **kwargs)
  per = _npz(os.path.join(_out(workdir, 'coins'), 'per_example.npz'))
  key = evaluation.attack_key(3, 'pgd')
  coins = np.concatenate([np.asarray(jax.random.bernoulli(jax.random.fold_in(key, b), 0.5,
                                                          (BATCH,)))
                          for b in range(3)])[:N]
  for i in range(2):  # the same key at every radius
    np.testing.assert_array_equal(per['robust'][i, 0], coins & per['clean_correct'])


def test_same_tag_with_other_flags_is_refused_naming_them(run_dir, full):
  del full
  workdir, _ = run_dir
  before = sorted(os.listdir(os.path.join(_out(workdir, 'full'), 'partial')))
  with pytest.raises(ValueError, match=r'^--tag: .*--eps was .*--seed was') as e:
    evaluate.run(workdir, tag='full', **dict(COMMON, eps=[0.2], seed=4))
  assert '\n' not in str(e.value) and 'num_examples' not in str(e.value)
  assert sorted(os.listdir(os.path.join(_out(workdir, 'full'), 'partial'))) == before


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(eps=[-0.1]), '^--eps: .*>= 0'),
    (dict(eps=[float('nan')]), '^--eps: '),
    (dict(norm='3'), "^--norm: unknown norm '3'"),
    (dict(attacks=['pgd', 'cw']), "^--attacks: unknown attack 'cw'; valid: autoattack, "
     'apgd-ce'),
    (dict(num_examples=-1), '^--num_examples: must be an integer >= 0'),
    (dict(batch_size=2.5), '^--batch_size: '),
    (dict(version='fast'), '^--version: unknown AutoAttack version'),
    (dict(split='valid'), '^--split: '),
    (dict(tag='../x'), '^--tag: '),
    (dict(certify='lp'), '^--certify: unknown method'),
    (dict(certify='crown', norm='1'), '^--norm: --certify=crown certifies the norms inf, 2'),
    (dict(certify='smoothing', sigma=0.0), '^--sigma: must be > 0'),
    (dict(certify='smoothing', alpha=1.5), '^--alpha: '),
    (dict(certify='crc', norm='inf'), '^--norm: certificates here are L2'),
    (dict(radii=[0.1]), '^--radii: only used with --certify'),
])
def test_bad_arguments_raise_one_line_naming_the_flag_and_write_nothing(
    run_dir, kwargs, pattern):
  workdir, snapshot = run_dir
  listing = sorted(os.listdir(workdir))
  args = dict(attacks=['pgd'], progress=False, tag='bad')
  if 'certify' not in kwargs:
    args['eps'] = [0.1]
  args.update(kwargs)
  with pytest.raises(ValueError, match=pattern) as e:
    evaluate.run(workdir, **args)
  assert '\n' not in str(e.value)
  assert sorted(os.listdir(workdir)) == listing
  assert not os.path.exists(_out(workdir, 'bad'))
  assert _snapshot(workdir) == snapshot


def test_workdir_without_checkpoint_or_config_is_refused(tmp_path, run_dir):
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match='^--workdir: no config.json'):
    evaluate.run(str(empty), eps=[0.1], attacks=['pgd'])
  with open(os.path.join(run_dir[0], 'config.json'), encoding='utf-8') as f:
    (empty / 'config.json').write_text(f.read())
  with pytest.raises(ValueError, match='^--workdir: no checkpoint in'):
    evaluate.run(str(empty), eps=[0.1], attacks=['pgd'])
  assert sorted(os.listdir(empty)) == ['config.json']
  with pytest.raises(ValueError, match='^--certify: crc certifies smooth MLPs'):
    (empty / 'config.json').write_text(json.dumps(dict(
        json.load(open(os.path.join(run_dir[0], 'config.json'), encoding='utf-8')),
        model={'name': 'cnn', 'kwargs': {}})))
    os.symlink(os.path.join(run_dir[0], 'checkpoints'), empty / 'checkpoints')
    evaluate.run(str(empty), certify='crc', attacks=['pgd'])


def _cli(cache, *args):
  """The command line in a fresh process (same 4 CPU devices, same compilation cache)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4',
             **{k.upper(): str(v) for k, v in cache.items()})
  args += (f'--compilation_cache_dir={cache["jax_compilation_cache_dir"]}',)
  return subprocess.run([sys.executable, '-m', 'robustjax.evaluate', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300, check=False)


def test_cli_bad_flag_is_one_line_and_good_flags_print_the_table(run_dir, full,
                                                                 compilation_cache):
  workdir, snapshot = run_dir
  bad = _cli(compilation_cache, f'--workdir={workdir}', '--eps=0.1,-0.5', '--attacks=pgd', '--tag=cli')
  assert bad.returncode == 1
  assert bad.stderr.strip() == 'error: --eps: every radius must be a finite number >= 0, got -0.5'
  assert not os.path.exists(_out(workdir, 'cli'))

  good = _cli(compilation_cache, f'--workdir={workdir}', '--eps=0,0.05,0.1', f'--attacks={",".join(ATTACKS)}',
              f'--num_examples={N}', f'--batch_size={BATCH}', '--seed=3', '--tag=cli')
  assert good.returncode == 0, good.stderr[-2000:]
  assert evaluation.format_table(full) in good.stdout
  with open(os.path.join(_out(workdir, 'cli'), 'report.json'), encoding='utf-8') as f:
    assert _stable(json.load(f)) == json.loads(json.dumps(_stable(full)))
  assert _snapshot(workdir) == snapshot


# ------------------------------------------------------------------------ certificates


def test_crc_certified_curve_is_below_the_empirical_one(run_dir):
  from robustjax.certify import crc_mlp
  from robustjax.certify.crc import certified_accuracy
  workdir, _ = run_dir
  radii = [0.0, 0.1, 0.3]
  report = evaluate.run(workdir, certify='crc', radii=radii, attacks=['pgd'],
                        num_examples=BATCH, batch_size=BATCH, progress=False, tag='crc')
  cert = report['certification']
  assert report['norm'] == '2' and report['eps'] == radii and cert['radii'] == radii
  assert cert['total_violations'] == 0 and cert['warning'] is None
  assert os.path.exists(os.path.join(_out(workdir, 'crc'), 'certified_accuracy.png'))
  for row in cert['curve']:
    assert row['certified_accuracy'] <= row['empirical_accuracy']
  assert 0 < cert['curve'][1]['certified_accuracy']

  # Oracle: CRC on the MLP written out in pixel space here (standardisation folded),
  # counted by robustjax.certify's own certified_accuracy.
  _, _, params = train.restore(workdir)
  x, y = _data(workdir)
  x, y = x[:BATCH], y[:BATCH]
  mean, std = np.float32(0.3054), np.float32(0.3760)  # digits' statistics (the model's)
  w0, b0 = np.asarray(params['Dense_0']['kernel']), np.asarray(params['Dense_0']['bias'])
  layers = [(w0 / std, b0 - (mean / std) * w0.sum(0)),
            (params['Dense_1']['kernel'], params['Dense_1']['bias'])]
  result = crc_mlp(layers, x, y, activation='softplus')
  want = np.asarray(certified_accuracy(result, np.asarray(radii)))
  np.testing.assert_allclose(cert['certified_accuracy'], want, atol=1e-6)
  assert cert['curve'][0]['certified_accuracy'] <= report['clean_accuracy']


@pytest.mark.parametrize('method,norm', [('ibp', 'inf'), ('crown', '2')])
def test_bound_certified_curve_is_below_the_empirical_one(run_dir, method, norm):
  from robustjax import models
  from robustjax.certify import bound_propagation as bp
  workdir, _ = run_dir
  radii = [0.0, 0.02, 0.1] if norm == 'inf' else [0.0, 0.1, 0.3]
  report = evaluate.run(workdir, certify=method, norm=norm, radii=radii, attacks=['pgd'],
                        num_examples=BATCH, batch_size=BATCH, progress=False, tag=method)
  cert = report['certification']
  assert report['norm'] == norm and cert['radii'] == radii
  assert cert['total_violations'] == 0 and cert['warning'] is None
  for row in cert['curve']:
    assert row['certified_accuracy'] <= row['empirical_accuracy']
  assert 0 < cert['curve'][1]['certified_accuracy']
  # Oracle: the bound at each radius on the layers written out here (standardisation as
  # an affine layer), counted directly.
  _, _, params = train.restore(workdir)
  x, y = _data(workdir)
  x, y = jnp.asarray(x[:BATCH]), jnp.asarray(y[:BATCH])
  mean, std = 0.3054, 0.3760  # digits' statistics (the model's)
  net = (bp.affine(jnp.array([1 / std]), jnp.array([-mean / std])), bp.flatten(),
         bp.dense(params['Dense_0']['kernel'], params['Dense_0']['bias']),
         bp.activation('softplus'),
         bp.dense(params['Dense_1']['kernel'], params['Dense_1']['bias']))
  p = math.inf if norm == 'inf' else 2.0
  for i, r in enumerate(radii[1:], 1):
    at = bp.certify(net, x, y, r, p=p, method=method).certified
    # The bisected radius certifies at r whenever the bound at r does, up to the
    # search's resolution (a radius just above r may be missed): never more.
    assert cert['curve'][i]['certified_accuracy'] <= float(np.mean(at)) + 1e-9
    assert cert['curve'][i]['certified_accuracy'] >= float(np.mean(at)) - 2.0 / BATCH


def test_certified_points_broken_by_an_attack_are_reported_as_violations(run_dir,
                                                                          monkeypatch):
  import robustjax.certify as certify_lib
  real = certify_lib.crc_mlp

  def inflated(*args, **kwargs):  # a wrong certificate: 100x the radius
    result = real(*args, **kwargs)
    return result._replace(radius=100 * result.radius)

  monkeypatch.setattr(certify_lib, 'crc_mlp', inflated)
  workdir, _ = run_dir
  report = evaluate.run(workdir, certify='crc', radii=[0.0, 0.3], attacks=['pgd'],
                        num_examples=BATCH, batch_size=BATCH, progress=False, tag='bad-crc')
  cert = report['certification']
  broken = BATCH * (cert['curve'][1]['certified_accuracy'] - cert['curve'][1]
                ['empirical_accuracy'])
  assert cert['total_violations'] == cert['curve'][1]['violations'] == round(broken) > 0
  assert 'certified' in cert['warning']
  assert cert['violations'][0]['radius'] == 0.3
  md = open(os.path.join(_out(workdir, 'bad-crc'), 'report.md'), encoding='utf-8').read()
  assert 'WARNING' in md


def test_smoothing_certified_curve_never_counts_abstentions(run_dir):
  workdir, _ = run_dir
  # n0 = n = PREDICT's samples: one compiled vote counter serves all three.
  # sigma 0.75: noise large enough that the smoothed classifier and the model disagree.
  report = evaluate.run(workdir, certify='smoothing', sigma=0.75,
                        num_samples=evaluation.SMOOTHING_PREDICT_SAMPLES,
                        num_selection=evaluation.SMOOTHING_PREDICT_SAMPLES,
                        radii=[0.0, 0.25], attacks=['pgd'],
                        num_examples=BATCH, batch_size=BATCH, progress=False,
                        tag='smoothing')
  cert = report['certification']
  per = _npz(os.path.join(_out(workdir, 'smoothing'), 'per_example.npz'))
  prediction, radius = per['certified_prediction'], per['certified_radius']
  abstain = prediction == -1
  assert cert['abstentions'] == int(abstain.sum())
  assert not per['certified'][:, abstain].any()
  assert np.all(radius[abstain] == 0)
  want = [(prediction == per['labels']) & (radius > r) for r in (0.0, 0.25)]
  np.testing.assert_array_equal(per['certified'], np.stack(want))
  assert cert['total_violations'] == 0
  for row in cert['curve']:
    assert row['certified_accuracy'] <= row['empirical_accuracy']

  # One classifier per table: the smoothed one. Its clean accuracy is PREDICT's at x
  # (1000 samples, key fold_in(attack_key(seed, 'predict:clean'), batch)), abstentions
  # wrong; a point it gets wrong at x is non-robust at every radius, in the tables, in
  # broken_by and in the violation check.
  from robustjax.certify import smoothing
  from robustjax.training import step as step_lib
  assert 'smoothed classifier' in report['classifier'] == cert['classifier']
  _, logits_fn, params = train.restore(workdir, step=60)
  x, y = _data(workdir)
  x, y = x[:BATCH], y[:BATCH]
  oracle = np.asarray(smoothing.predict(
      logits_fn, params, x, sigma=0.75, num_samples=evaluation.SMOOTHING_PREDICT_SAMPLES,
      alpha=0.001, rng=jax.random.fold_in(evaluation.attack_key(0, 'predict:clean'), 0),
      mesh=step_lib.make_mesh(jax.local_devices()[:1])))
  smoothed_ok = oracle == y
  model_ok = np.asarray(metrics.correct(logits_fn, params, x, y))
  assert (smoothed_ok != model_ok).any()  # the two classifiers differ on these points
  np.testing.assert_array_equal(per['clean_correct'], smoothed_ok)
  assert report['clean_accuracy'] == pytest.approx(smoothed_ok.mean())
  assert report['model_clean_accuracy'] == pytest.approx(model_ok.mean())
  assert not per['robust'][:, :, ~smoothed_ok].any()
  assert not per['empirical'][:, ~smoothed_ok].any()
  assert (per['broken_by'][:, ~smoothed_ok] == evaluation.CLEAN_MISCLASSIFIED).all()
  for i, row in enumerate(report['results']):
    assert row['worst_case'] <= report['clean_accuracy']
    broken = smoothed_ok & ~per['worst_robust'][i]
    assert sum(row['broken_by'].values()) == int(broken.sum())


def test_training_files_are_untouched(run_dir, full):
  del full
  workdir, snapshot = run_dir
  assert _snapshot(workdir) == snapshot
  assert 'final_metrics.json' in {os.path.basename(k) for k in snapshot}


def _module_imports():
  """``{module: robustjax modules it imports at module level}`` for the whole package."""
  import ast
  import pathlib
  package = pathlib.Path(ROOT) / 'robustjax'
  graph = {}
  for path in package.rglob('*.py'):
    name = '.'.join(path.relative_to(ROOT).with_suffix('').parts).removesuffix('.__init__')
    deps = set()
    for node in ast.parse(path.read_text(encoding='utf-8')).body:  # module level only
      if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('robustjax'):
        for alias in node.names:
          full = f'{node.module}.{alias.name}'
          is_module = (pathlib.Path(ROOT, *full.split('.')).with_suffix('.py').exists()
                       or pathlib.Path(ROOT, *full.split('.')).is_dir())
          deps.add(full if is_module else node.module)
      elif isinstance(node, ast.Import):
        deps |= {a.name for a in node.names if a.name.startswith('robustjax')}
    graph[name] = deps - {name}
  return graph


def test_the_evaluation_package_has_no_import_circles_and_nothing_below_imports_it():
  graph = _module_imports()
  inside = {m for m in graph if m.startswith('robustjax.evaluation.')}
  order, state = [], {}

  def visit(module, path):
    assert state.get(module) != 'open', f'import circle: {" -> ".join(path + [module])}'
    if state.get(module) is None:
      state[module] = 'open'
      for dep in sorted(graph[module] & inside):
        visit(dep, path + [module])
      state[module] = 'done'
      order.append(module)

  for module in sorted(inside):
    visit(module, [])
  assert 'robustjax.evaluation.settings' in order
  users = {m for m, deps in graph.items() if any(
      d == 'robustjax.evaluate' or d.startswith('robustjax.evaluation') for d in deps)}
  assert users <= {'robustjax.evaluate', 'robustjax.evaluation'} | inside, users
