"""End-to-end training runs: learning, sharding, resume, preemption, bad input, NaNs."""

import glob
import importlib.util
import json
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from robustjax import geometry
from robustjax import losses
from robustjax import models
from robustjax.regularizers import registry
from robustjax.training import checkpoints
from robustjax.training import feed
from robustjax.training import observe
from robustjax.training import schema
from robustjax.training import step as step_lib
from robustjax.training import train
from robustjax.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


pytestmark = pytest.mark.usefixtures('persistent_compilation_cache')


def tiny(**overrides):
  """A digits config that runs in a second or two on 4 simulated devices."""
  c = schema.base_config()
  c.model.kwargs.widths = (16,)
  c.batch_size = 16
  c.num_train_steps = 6
  c.checkpoint_every_steps = 2
  c.log_every_steps = 2
  c.optimizer.schedule = 'constant'
  c.optimizer.lr = 0.05
  c.eval.num_examples = 16
  c.eval.batch_size = 16
  c.eval.steps = 2
  for key, value in overrides.items():
    obj = c
    *path, last = key.split('.')
    for part in path:
      obj = obj[part]
    obj[last] = value
  return c


def params_of(workdir):
  return checkpoints_params(workdir)


def checkpoints_params(workdir):
  _, _, params = train.restore(workdir)
  return jax.tree.map(np.asarray, params)


def assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def metric_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def tensorboard_scalars(workdir):
  """``{(tag, step): value}`` from every events file; fails on a repeated (tag, step)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  found = {}
  for path in observe.event_files(os.path.join(workdir, 'tensorboard')):
    for record in observe.read_event_records(path):
      event = event_pb2.Event.FromString(record[12:-4])
      for value in event.summary.value:
        key = (value.tag, event.step)
        assert key not in found, f'{key} recorded twice'
        found[key] = value.simple_value
  return found


# ------------------------------------------------------------------ full digits run


def test_short_digits_run_learns_writes_everything_and_restores(tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  config = tiny(**{'model.kwargs.widths': (32,), 'num_train_steps': 120,
                   'checkpoint_every_steps': 40, 'keep_checkpoints': 2,
                   'log_every_steps': 20,
                   'batch_size': 32, 'optimizer.lr': 0.1, 'optimizer.schedule': 'cosine',
                   'eval.num_examples': 0, 'eval.batch_size': 360, 'eval.steps': 5})
  final = train.train_and_evaluate(config, workdir)
  assert final['step'] == 120 and final['num_examples'] == 360
  assert final['clean_accuracy'] >= 0.9
  assert 0 <= final['robust_accuracy'] <= final['clean_accuracy']
  out = capsys.readouterr().out
  assert 'final: clean_accuracy=' in out and 'PGD-5 Linf eps=0.1' in out
  with open(os.path.join(workdir, 'final_metrics.json')) as f:
    assert json.load(f)['clean_accuracy'] == final['clean_accuracy']
  records = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  train_steps = [r['step'] for r in records if r['split'] == 'train']
  assert train_steps == list(range(20, 121, 20))
  assert records[0]['loss'] > records[-2]['loss']  # it learned
  assert glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))
  assert checkpoints.latest_step(workdir) == 120
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['120', '80']  # keep-K
  # restore() gives an inference-mode model with the same accuracy.
  loaded, logits_fn, params = train.restore(workdir)
  assert loaded.num_train_steps == 120
  x, y = feed.eval_arrays(loaded.dataset)
  again = train.evaluate(logits_fn, params, x, y, eps=0.0, steps=0)
  assert again['clean_accuracy'] == pytest.approx(final['clean_accuracy'])
  # Re-running the same command resumes: nothing left to train, same result.
  assert train.train_and_evaluate(config, workdir)['clean_accuracy'] == final['clean_accuracy']


# ------------------------------------------------------------------ sharding


def test_one_and_four_devices_agree(tmp_path):
  assert len(jax.devices()) == 4
  config = tiny(**{'num_train_steps': 3, 'eval.steps': 0})
  config.regularizers.llr = schema.term('llr', weight=1.0, eps=0.1, steps=2)
  config.regularizers.gn = schema.term('gradient_norm', weight=0.1)
  one = train.train_and_evaluate(config, str(tmp_path / 'one'), devices=jax.devices()[:1])
  four = train.train_and_evaluate(config, str(tmp_path / 'four'))
  a, b = params_of(str(tmp_path / 'one')), params_of(str(tmp_path / 'four'))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)
  assert one['clean_accuracy'] == four['clean_accuracy']


# ------------------------------------------------------------------ resume


def _stochastic_config():
  config = tiny(**{'eval.steps': 0})
  config.optimizer.momentum = 0.9
  config.regularizers.llr = schema.term('llr', weight=1.0, eps=0.1, steps=1,
                                        eps_ramp_steps=4)
  return config


def test_killed_run_resumes_to_identical_params(tmp_path):
  config = _stochastic_config()
  train.train_and_evaluate(config, str(tmp_path / 'whole'))
  killed = str(tmp_path / 'killed')
  train.train_and_evaluate(config, killed)
  # A kill at any moment leaves a prefix of the checkpoints on disk (orbax commits a
  # checkpoint by renaming a finished temporary directory): keep only step 2.
  import shutil  # pylint: disable=g-import-not-at-top
  for step in (4, 6):
    shutil.rmtree(os.path.join(killed, 'checkpoints', str(step)))
  assert checkpoints.latest_step(killed) == 2
  final = train.train_and_evaluate(config, killed)
  assert final['step'] == 6
  assert_trees_equal(params_of(str(tmp_path / 'whole')), params_of(killed))
  # Each step is recorded once, with the uninterrupted run's values (steps 4 and 6 were
  # logged by the first attempt, and again after the resume).
  whole = str(tmp_path / 'whole')
  assert metric_rows(killed) == metric_rows(whole)
  assert [r['step'] for r in metric_rows(killed)] == [2, 4, 6, 6]  # train x3, eval
  assert tensorboard_scalars(killed) == tensorboard_scalars(whole)
  (evaluation,) = [r for r in metric_rows(killed) if r['split'] == 'eval']
  assert (evaluation['attack'], evaluation['eps'], evaluation['p']) == (
      final['eval_attack'], 0.1, 'inf')
  # Re-running a finished run adds nothing; evaluating it again replaces its eval row.
  train.train_and_evaluate(config, killed)
  os.remove(os.path.join(killed, train.FINAL_METRICS_FILE))
  assert train.train_and_evaluate(config, killed) == final
  assert metric_rows(killed) == metric_rows(whole)
  assert tensorboard_scalars(killed) == tensorboard_scalars(whole)


def test_sigterm_saves_exits_and_resumes_identically(tmp_path, monkeypatch):
  config = _stochastic_config()
  config.checkpoint_every_steps = 100  # only the SIGTERM and final saves
  train.train_and_evaluate(config, str(tmp_path / 'whole'))
  original = feed.train_batches

  def batches_with_sigterm(*args, start_step, **kwargs):
    for step, batch in enumerate(original(*args, start_step=start_step, **kwargs),
                                 start_step):
      if step == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  workdir = str(tmp_path / 'preempted')
  monkeypatch.setattr(feed, 'train_batches', batches_with_sigterm)
  stopped = train.train_and_evaluate(config, workdir)
  assert stopped == {'preempted': True, 'stage': 'training', 'step': 4,
                     'preemption_count': 1}
  assert checkpoints.latest_step(workdir) == 4
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))
  monkeypatch.setattr(feed, 'train_batches', original)
  final = train.train_and_evaluate(config, workdir)
  assert final['step'] == 6 and final['preemption_count'] == 1
  assert_trees_equal(params_of(str(tmp_path / 'whole')), params_of(workdir))


def test_init_from_starts_from_another_runs_params(tmp_path):
  train.train_and_evaluate(tiny(**{'num_train_steps': 2, 'eval.steps': 0}),
                           str(tmp_path / 'a'))
  config = tiny(**{'num_train_steps': 0, 'eval.steps': 0,
                   'init_from': str(tmp_path / 'a')})
  train.train_and_evaluate(config, str(tmp_path / 'b'))
  assert_trees_equal(params_of(str(tmp_path / 'a')), params_of(str(tmp_path / 'b')))
  with pytest.raises(ValueError, match='config.init_from'):
    train.train_and_evaluate(tiny(init_from=str(tmp_path / 'nothing')), str(tmp_path / 'c'))


def _reject_non_standard(constant):
  raise ValueError(f'non-standard JSON constant {constant}')


def test_workdir_belongs_to_one_run(tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny(**{'num_train_steps': 2, 'eval.steps': 0})
  config.regularizers.llr = schema.term('llr', weight=1.0, eps=0.1, steps=1)
  first = train.train_and_evaluate(config, workdir)
  files = {n: open(os.path.join(workdir, n), 'rb').read()
           for n in ('config.json', 'final_metrics.json', 'metrics.jsonl')}
  # Standard JSON: JSON.parse / jq accept it; 'inf' reads back as a float.
  saved = json.loads(files['config.json'], parse_constant=_reject_non_standard)
  assert saved['eval']['p'] == 'inf'
  json.loads(files['final_metrics.json'], parse_constant=_reject_non_standard)
  assert train.load_config(workdir).eval.p == float('inf')
  # The same config resumes (nothing to train: the saved result, nothing rewritten).
  assert train.train_and_evaluate(config, workdir) == first
  # Another method in this workdir is refused, naming what differs; nothing is written.
  other = tiny(**{'num_train_steps': 2, 'eval.steps': 0, 'optimizer.lr': 0.1})
  other.regularizers.scorpio = schema.term('scorpio', weight=1.0, eps=0.1, steps=1)
  with pytest.raises(workdir_lib.WorkdirConflictError) as info:
    train.train_and_evaluate(other, workdir)
  message = str(info.value)
  assert message.startswith('workdir:') and '\n' not in message
  for field in ('optimizer.lr: 0.05 -> 0.1', "regularizers.llr: {name='llr', ...} -> (absent)",
                "regularizers.scorpio: (absent) -> {name='scorpio', ...}"):
    assert field in message, message
  for name, content in files.items():
    assert open(os.path.join(workdir, name), 'rb').read() == content, name
  # Where things are (data directory, cluster settings) may change between runs.
  moved = tiny(**{'num_train_steps': 2, 'eval.steps': 0, 'distributed.process_id': 0})
  moved.regularizers.llr = config.regularizers.llr
  assert train.train_and_evaluate(moved, workdir) == first
  # More steps only with extend=True, recorded beside the untouched config.json.
  longer = tiny(**{'num_train_steps': 4, 'eval.steps': 0})
  longer.regularizers.llr = config.regularizers.llr
  with pytest.raises(workdir_lib.WorkdirConflictError, match='num_train_steps: 2 -> 4'):
    train.train_and_evaluate(longer, workdir)
  assert train.train_and_evaluate(longer, workdir, extend=True)['step'] == 4
  assert open(os.path.join(workdir, 'config.json'), 'rb').read() == files['config.json']
  assert workdir_lib.segments(workdir) == [{'segment': 1, 'start_step': 2,
                                           'previous_num_train_steps': 2,
                                           'num_train_steps': 4}]
  assert train.load_config(workdir).num_train_steps == 4
  assert train.train_and_evaluate(longer, workdir)['step'] == 4  # now its own config
  with pytest.raises(workdir_lib.WorkdirConflictError, match='can only raise'):
    train.train_and_evaluate(config, workdir, extend=True)


_SPY = 'test_random_start_spy'
if _SPY not in registry.names():

  @registry.register(_SPY)
  def _random_start_spy(loss_fn, params, batch, *, rng, eps=0.1):
    """Each example's PGD random start in the Linf ball, summed; no gradient."""
    del loss_fn, params
    inputs, _ = batch
    start = geometry.random_ball(rng, inputs.shape, eps, float('inf'))
    return jax.lax.stop_gradient(jnp.sum(start.reshape(len(inputs), -1), -1)), {}


def test_every_step_draws_new_random_starts_and_a_resume_replays_them(tmp_path):
  """Fails when steps share a key (fold_in(rng, 0) instead of fold_in(rng, step))."""
  config = tiny(**{'num_train_steps': 4, 'log_every_steps': 1, 'eval.steps': 0})
  config.regularizers.spy = schema.term(_SPY, weight=1.0, eps=0.1)
  whole, killed = str(tmp_path / 'whole'), str(tmp_path / 'killed')
  train.train_and_evaluate(config, whole)
  starts = [r['spy'] for r in metric_rows(whole) if r['split'] == 'train']
  assert len(starts) == 4 and len(set(starts)) == 4, starts
  # Batch means of sums of 64 draws from U[-0.1, 0.1]: mean 0, sd 0.1 * sqrt(64 / 3) / 4.
  assert all(abs(s) < 1.0 for s in starts), starts
  train.train_and_evaluate(config, killed)
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(killed, 'checkpoints', '4'))
  train.train_and_evaluate(config, killed)
  assert [r['spy'] for r in metric_rows(killed) if r['split'] == 'train'] == starts


# ------------------------------------------------------------------ objective pieces


def _linear_problem():
  model = models.create('mlp', num_classes=3, widths=())
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 4))
  y = jnp.arange(8) % 3
  return model, (x, y)


def test_grad_clip_bounds_the_terms_update():
  """SGD(lr=1) on a clipped term alone moves params by exactly the clip norm."""
  model, batch = _linear_problem()
  mesh = step_lib.make_mesh(jax.devices()[:1])
  tx = optax.sgd(1.0)
  schema.load_regularizers()
  penalty = registry.get('gradient_norm')
  for clip in (1e-3,):  # far below the gradient norm (~1): the clip binds
    term = step_lib.Term('gn', 'gradient_norm', penalty, 'loss_fn', 50.0, {}, clip, '',
                         1.0)
    fn = step_lib.make_train_step(model=model, terms=[term], tx=tx,
                                  schedule=lambda s: 1.0, nominal_weight=0.0)
    state = step_lib.init_state(model, tx, rng=jax.random.PRNGKey(0), input_shape=(4,),
                                mesh=mesh)
    before = jax.tree.map(np.asarray, state.params)
    new, metrics = jax.jit(fn)(state, batch)
    moved = optax.tree.norm(jax.tree.map(lambda a, b: a - b, new.params, before))
    # Oracle: the unclipped gradient of 50 * mean(||grad_x CE||^2).
    def objective(p):
      loss_fn = losses.cross_entropy_loss_fn(models.logits_fn_for(model))
      return 50.0 * jnp.mean(penalty(loss_fn, p, batch, rng=jax.random.PRNGKey(0))[0])
    full = optax.tree.norm(jax.grad(objective)(before))
    assert float(metrics['gn/grad_norm']) == pytest.approx(float(full), rel=1e-4)
    assert float(full) > 100 * clip
    assert float(moved) == pytest.approx(clip, rel=1e-4)


def _step_flops(compiled):
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])


@pytest.mark.parametrize('names', [('gradient_norm', 'scorpio'), ('lipschitz',)])
def test_nominal_shared_with_penalty_clean_pass_is_identical_and_cheaper(names):
  """The nominal CE from a penalty's aux['loss'] / aux['logits'] equals the clean pass's.

  SGD with lr 1 makes the parameter change the gradient, so equal updates mean equal
  gradients; the shared step (the trainer's default) has fewer flops.
  """
  model = models.create('mlp', num_classes=4, widths=(16,), activation='softplus')
  x = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 8, 1))
  batch = (x, jnp.arange(16, dtype=jnp.int32) % 4)
  mesh = step_lib.make_mesh(jax.devices()[:1])
  tx = optax.sgd(1.0)
  schema.load_regularizers()
  hparams = {'scorpio': {'eps': 0.1, 'steps': 2, 'h': 0.5}, 'gradient_norm': {},
             'lipschitz': {'psi': 1.0, 'num_outputs': 2}}
  terms = [step_lib.Term(f't{i}', n, registry.get(n), registry.takes(n), 0.5 + i,
                         hparams[n], 0.0, '', 1.0) for i, n in enumerate(names)]
  state = step_lib.init_state(model, tx, rng=jax.random.PRNGKey(0), input_shape=(8, 8, 1),
                              mesh=mesh)
  before = jax.tree.map(np.asarray, state.params)
  results = {}
  for share in (False, True):
    kwargs = {} if share else {'share_nominal': False}  # default: shared
    fn = jax.jit(step_lib.make_train_step(model=model, terms=terms, tx=tx,
                                          schedule=lambda s: 1.0, nominal_weight=1.5,
                                          **kwargs))
    compiled = fn.lower(state, batch).compile()
    new, metrics = compiled(state, batch)
    grads = jax.tree.map(lambda a, b: a - np.asarray(b), before, new.params)
    results[share] = (metrics, grads, _step_flops(compiled))
  (m0, g0, f0), (m1, g1, f1) = results[False], results[True]
  for key in ('loss', 'nominal', 'accuracy', 'grad_norm', *[t.label for t in terms]):
    np.testing.assert_allclose(m1[key], m0[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert float(optax.tree.norm(g0)) > 1e-3
  # The unshared step's separate clean backward is gone: at least its weight gradients,
  # 2 flops per weight and example (XLA already merges the two clean forwards).
  weights = sum(l.size for l in jax.tree.leaves(before))
  assert f1 < f0 - 1.5 * weights * x.shape[0], (f1, f0)


def test_eps_ramp_and_adaptive_psi_follow_their_formulas():
  assert float(step_lib.ramp(jnp.int32(50), 200)) == pytest.approx(0.25)
  assert float(step_lib.ramp(jnp.int32(500), 200)) == 1.0
  assert float(step_lib.ramp(jnp.int32(3), 0)) == 1.0
  from robustjax.regularizers import controllers  # pylint: disable=g-import-not-at-top
  ctl = controllers.adaptive_psi(target_loss=1.0, initial_psi=2.0, gain=0.5,
                                 eps_better=1.0, eps_worse=0.01)
  state = ctl.init()
  assert float(state.output) == pytest.approx(2.0)
  psi, state = ctl.update(jnp.float32(np.exp(-0.4)), state)  # better: integral += 0.4
  assert float(state.output) == float(psi)
  assert float(psi) == pytest.approx(2.0 * np.exp(0.5 * 0.4), rel=1e-5)


def test_controller_scales_the_term_and_is_checkpointed(tmp_path):
  config = tiny(**{'num_train_steps': 4, 'eval.steps': 0})
  config.regularizers.lip = schema.term('lipschitz', weight=1.0, psi=1.0)
  config.controller.name = 'adaptive_psi'
  config.controller.term = 'lip'
  config.controller.target_loss = 100.0  # always "better": psi grows by exp(k) per step
  config.controller.k0 = 0.5
  config.controller.k = 0.1
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  records = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  psis = [r['psi'] for r in records if r['split'] == 'train']
  # Logged psi is the mean over the 2 steps of each log interval: psi_s = 0.5 e^{0.1 s}.
  expected = [0.5 * (np.exp(0.1 * a) + np.exp(0.1 * (a + 1))) / 2 for a in (0, 2)]
  np.testing.assert_allclose(psis, expected, rtol=1e-5)


# ------------------------------------------------------------------ bad input


@pytest.fixture
def no_compilation(monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError('compiled or initialised before validation')
  monkeypatch.setattr(step_lib, 'init_state', boom)


@pytest.mark.parametrize('overrides, field', [
    ({'eval.eps': -0.1}, 'config.eval.eps'),
    ({'batch_size': 30}, 'config.batch_size'),
    ({'model.name': 'resnet7'}, 'config.model.name'),
])
def test_bad_config_fails_before_compilation_and_leaves_workdir(
    tmp_path, no_compilation, overrides, field):
  del no_compilation
  workdir = tmp_path / 'existing'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('keep me')
  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(tiny(**overrides), str(workdir))
  assert str(info.value).startswith(field), str(info.value)
  assert sorted(os.listdir(workdir)) == ['notes.txt']


def test_unknown_regularizer_and_missing_dataset_and_bad_workdir(tmp_path, no_compilation):
  del no_compilation
  config = tiny()
  config.regularizers.r = schema.term('curvy')
  with pytest.raises(ValueError, match=r"config.regularizers.r.name.*'llr'"):
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  config = tiny(**{'dataset.name': 'cifar10',
                   'dataset.data_dir': str(tmp_path / 'no_data')})
  with pytest.raises(ValueError, match=r'config.dataset.name') as info:
    train.train_and_evaluate(config, str(tmp_path / 'w'))
  assert 'digits' in str(info.value)
  a_file = tmp_path / 'file'
  a_file.write_text('')
  with pytest.raises(ValueError, match='workdir'):
    train.train_and_evaluate(tiny(), str(a_file / 'sub'))
  assert not (tmp_path / 'w').exists()


_NAN_TERM = 'test_nan_after_ramp'
if _NAN_TERM not in registry.names():

  @registry.register(_NAN_TERM)
  def _nan_after_ramp(loss_fn, params, batch, *, rng, eps=1.0):
    """Finite while the ramped eps <= 0.5, NaN after: sqrt(0.5 - eps) * mean loss."""
    del rng
    inputs, labels = batch
    return jnp.sqrt(0.5 - eps) * loss_fn(params, inputs, labels), {}


def test_non_finite_penalty_stops_naming_term_and_step_keeping_good_checkpoint(tmp_path):
  config = tiny(**{'num_train_steps': 8, 'log_every_steps': 4})
  # eps = s / 4 at step s: finite for steps 0, 1, 2, NaN from step 3 on.
  config.regularizers.bad = schema.term(_NAN_TERM, weight=1.0, eps=1.0, eps_ramp_steps=4)
  workdir = str(tmp_path / 'run')
  with pytest.raises(train.NonFiniteError,
                     match=r"regularizer term 'bad'.*at step 3.*last good checkpoint "
                           r"\(step 2\)"):
    train.train_and_evaluate(config, workdir)
  assert checkpoints.latest_step(workdir) == 2
  assert not os.path.exists(os.path.join(workdir, 'final_metrics.json'))


# ------------------------------------------------------------------ every config family


def _load(path):
  spec = importlib.util.spec_from_file_location('cfg_' + os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


FAMILY_CONFIGS = ['standard_cifar', 'at_mnist', 'trades_cifar', 'gradnorm_svhn',
                  'cure_cifar', 'scorpio_svhn', 'soar_cifar', 'llr_cifar',
                  'lipschitz_cifar', 'crt_mnist']


def shrink(config):
  """The same method at toy size: 1 step, batch 8, tiny model, 1-step inner loops."""
  config.num_train_steps = 1
  config.batch_size = 8
  config.init_from = ''
  config.eval.num_examples = 8
  config.eval.batch_size = 8
  config.eval.steps = 0  # PGD evaluation is covered by the digits run
  if config.model.name == 'mlp':
    config.model.kwargs.widths = (8,)
  elif config.model.name.startswith(('resnet', 'wrn')):
    activation = dict(config.model.kwargs).get('activation', 'relu')
    config.model.name = 'resnet18'
    config.model.kwargs = {'stage_sizes': (1,), 'stage_widths': (4,),
                           'activation': activation}
  else:
    config.model.kwargs = {'channels': (4, 4, 8, 8)}
  for t in config.regularizers.values():
    for key in ('steps', 'num_iters', 'bisection_steps', 'inner_steps'):
      if key in t.hparams:
        t.hparams[key] = 1
    for spec in t.schedules.values():
      spec['steps'] = min(spec['steps'], 1)
  return config


@pytest.mark.parametrize('name', FAMILY_CONFIGS)
def test_one_step_of_every_family_under_mock_tfds(tmp_path, name):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = shrink(_load(os.path.join(ROOT, 'configs', f'{name}.py')))
  config.dataset.data_dir = str(tmp_path / 'mock')
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    final = train.train_and_evaluate(config, str(tmp_path / 'run'),
                                     devices=jax.devices()[:1])  # sharding: see above
  assert final['step'] == 1
  records = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  for label in config.regularizers:
    assert np.isfinite(records[0][label])
