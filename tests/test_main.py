"""The command line, driven as a user drives it: ``robustjax.main`` through ``app.run``
in this process, and once in a subprocess whose virtual environment lives under a
directory called ``robustjax`` (the README's layout)."""

import json
import logging as std_logging
import os
import signal
import subprocess
import sys

import pytest
from absl import flags

from robustjax import _cli
from robustjax import main as cli
from robustjax.training import checkpoints
from robustjax.training import feed
from robustjax.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
CONFIG = os.path.join(ROOT, 'configs', 'llr_digits.py')
# The quickstart's config at toy size: 4 steps, tiny batches, a 2-step PGD evaluation.
TINY = ['--config.num_train_steps=4', '--config.log_every_steps=2',
        '--config.checkpoint_every_steps=2', '--config.batch_size=16',
        '--config.eval.num_examples=16', '--config.eval.batch_size=16',
        '--config.eval.steps=2', '--config.regularizers.llr.hparams.steps=1']


pytestmark = pytest.mark.usefixtures('persistent_compilation_cache')


def _forget_flags():
  """absl keeps parsed values, and config_flags the ``--config.*`` override flags it
  defined while parsing, between parses in one process: forget both."""
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:
    delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()


@pytest.fixture
def sigterm_guard():
  """A SIGTERM that reaches the default handler would end pytest: make it an error."""
  def guard(signum, frame):  # pylint: disable=unused-argument
    raise RuntimeError('SIGTERM reached the default handler (the run did not handle it)')
  previous = signal.signal(signal.SIGTERM, guard)
  yield
  signal.signal(signal.SIGTERM, previous)


def run_cli(monkeypatch, *args):
  """Runs ``python -m robustjax.main ARGS`` in this process; returns the exit code."""
  monkeypatch.setattr(sys, 'argv', ['robustjax.main', f'--config={CONFIG}', *args])
  try:
    with pytest.raises(SystemExit) as info:
      cli.run()
  finally:
    _forget_flags()
  return info.value.code


@pytest.mark.parametrize('override, expected', [
    ('--config.optimizer.lrr=0.1', "config.optimizer has no field 'lrr'; did you mean 'lr'"),
    ('--config.regularizers.lrr.weight=2',
     "config.regularizers has no field 'lrr'; did you mean 'llr'"),
    ('--config.model.name=resnet18',
     "config.model.kwargs.widths: is not a setting of model 'resnet18'"),
    ('--workdir=/proc/robustjax_run', "workdir: '/proc/robustjax_run' cannot be created"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, override,
                                                    expected):
  workdir = tmp_path / 'run'
  args = [override] if override.startswith('--workdir') else [f'--workdir={workdir}',
                                                               override]
  code = run_cli(monkeypatch, *args)
  assert isinstance(code, str), code  # sys.exit(message): printed, exit status 1
  assert code.startswith('error: ') and '\n' not in code, code
  assert expected in code, code
  assert not workdir.exists()


def test_a_config_file_that_does_not_exist_is_one_error_line(tmp_path, monkeypatch):
  workdir = tmp_path / 'run'
  monkeypatch.setattr(sys, 'argv', ['robustjax.main', '--config=configs/nonexistent.py',
                                    f'--workdir={workdir}'])
  try:
    with pytest.raises(SystemExit) as info:
      cli.run()
  finally:
    _forget_flags()
  code = info.value.code
  assert isinstance(code, str) and code.startswith('error: --config: ') and '\n' not in code
  assert 'configs/nonexistent.py' in code and 'No such file' in code, code
  assert not workdir.exists()


def test_a_non_finite_loss_ends_in_one_error_line_naming_term_and_step(tmp_path,
                                                                      monkeypatch):
  original = feed.train_batches

  def nan_from_step_2(*args, start_step, **kwargs):
    for step, (x, y) in enumerate(original(*args, start_step=start_step, **kwargs),
                                  start_step):
      yield (x * float('nan') if step == 2 else x), y

  monkeypatch.setattr(feed, 'train_batches', nan_from_step_2)
  code = run_cli(monkeypatch, f'--workdir={tmp_path / "run"}', *TINY)
  assert isinstance(code, str) and '\n' not in code, code  # printed, exit status 1
  assert code.startswith('error: non-finite ') and 'at step 2' in code, code


def test_records_are_kept_by_module_not_by_path():
  """In a clone called robustjax, every path contains 'robustjax': orbax's per-save INFO
  lines and JAX's backend probe must still be dropped, robustjax's own lines kept."""
  clone = '/home/me/robustjax/.venv/lib/python3.11/site-packages'

  def record(name, pathname, level=std_logging.INFO, msg='x'):
    return std_logging.LogRecord(name, level, pathname, 1, msg, None, None)

  orbax = record('absl', f'{clone}/orbax/checkpoint/checkpoint_manager.py')
  probe = record('jax._src.xla_bridge', f'{clone}/jax/_src/xla_bridge.py',
                 msg="Unable to initialize backend 'tpu'")
  ours = record('absl', train.__file__)
  warning = record('absl', f'{clone}/orbax/checkpoint/checkpoint_manager.py',
                   level=std_logging.WARNING)
  assert not _cli.show_record(orbax)  # pylint: disable=protected-access
  assert not _cli.show_record(probe)  # pylint: disable=protected-access
  assert _cli.show_record(ours)  # pylint: disable=protected-access
  assert _cli.show_record(warning)  # pylint: disable=protected-access


def test_quickstart_in_a_clone_called_robustjax_prints_a_few_lines(tmp_path):
  """One real process: venv under .../robustjax/, no JAX_PLATFORMS (so JAX probes for a
  TPU); the output is robustjax's progress lines and one final line."""
  clone = tmp_path / 'robustjax'
  clone.mkdir()
  (clone / '.venv').symlink_to(sys.prefix)  # paths of every library contain 'robustjax'
  python = clone / '.venv' / 'bin' / os.path.basename(sys.executable)
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  workdir = tmp_path / 'run'
  proc = subprocess.run(
      [str(python), '-m', 'robustjax.main', f'--config={CONFIG}', f'--workdir={workdir}',
       *TINY], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  lines = (proc.stdout + proc.stderr).splitlines()
  assert proc.returncode == 0, '\n'.join(lines[-20:])
  assert sum(l.startswith('final: ') for l in lines) == 1, lines
  assert sum('final:' in l for l in lines) == 1, lines
  assert not [l for l in lines if 'orbax' in l or 'Unable to initialize backend' in l]
  assert len(lines) <= 6, lines  # 2 progress lines, the final line, maybe a warning


def test_sigterm_exits_143_after_saving_and_the_rerun_finishes(tmp_path, monkeypatch,
                                                               sigterm_guard):
  del sigterm_guard
  original = feed.train_batches

  def batches_with_sigterm(*args, start_step, **kwargs):
    for step, batch in enumerate(original(*args, start_step=start_step, **kwargs),
                                 start_step):
      if step == 1:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  workdir = tmp_path / 'run'
  monkeypatch.setattr(feed, 'train_batches', batches_with_sigterm)
  assert run_cli(monkeypatch, f'--workdir={workdir}', *TINY) == cli.EXIT_PREEMPTED == 143
  assert checkpoints.latest_step(str(workdir)) == 2
  assert not (workdir / 'final_metrics.json').exists()
  monkeypatch.setattr(feed, 'train_batches', original)
  assert run_cli(monkeypatch, f'--workdir={workdir}', *TINY) in (0, None)
  assert json.loads((workdir / 'final_metrics.json').read_text())['step'] == 4


def test_sigterm_during_final_evaluation_exits_143_with_a_message(
    tmp_path, monkeypatch, sigterm_guard, caplog):
  del sigterm_guard
  original = train.evaluate
  calls = []

  def evaluate_with_sigterm(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)

  monkeypatch.setattr(train, 'evaluate', evaluate_with_sigterm)
  workdir = tmp_path / 'run'
  with caplog.at_level(std_logging.WARNING):
    assert run_cli(monkeypatch, f'--workdir={workdir}', *TINY) == cli.EXIT_PREEMPTED
  assert 'SIGTERM during the final evaluation' in caplog.text
  assert checkpoints.latest_step(str(workdir)) == 4  # training was complete and saved
  assert not (workdir / 'final_metrics.json').exists()
  # The same command evaluates (nothing left to train) and finishes.
  assert run_cli(monkeypatch, f'--workdir={workdir}', *TINY) in (0, None)
  assert len(calls) == 2
  rows = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  assert [r['step'] for r in rows if r['split'] == 'eval'] == [4]


def test_changed_config_is_refused_in_one_line_and_extend_is_recorded(tmp_path,
                                                                      monkeypatch):
  workdir = tmp_path / 'run'
  assert run_cli(monkeypatch, f'--workdir={workdir}', *TINY) in (0, None)
  saved = (workdir / 'config.json').read_bytes()
  code = run_cli(monkeypatch, f'--workdir={workdir}', *TINY, '--config.optimizer.lr=0.1')
  assert isinstance(code, str) and '\n' not in code, code
  assert code.startswith('error: workdir:') and 'optimizer.lr: 0.05 -> 0.1' in code, code
  code = run_cli(monkeypatch, f'--workdir={workdir}', *TINY, '--config.num_train_steps=6')
  assert 'num_train_steps: 4 -> 6' in code and '--extend' in code, code
  assert sorted(os.listdir(workdir)) == ['checkpoints', 'config.json', 'final_metrics.json',
                                         'metrics.jsonl', 'tensorboard']
  assert run_cli(monkeypatch, f'--workdir={workdir}', *TINY, '--config.num_train_steps=6',
                 '--extend') in (0, None)
  assert (workdir / 'config.json').read_bytes() == saved
  segment = json.loads((workdir / 'config.segment-1.json').read_text())
  assert segment == {'segment': 1, 'start_step': 4, 'previous_num_train_steps': 4,
                     'num_train_steps': 6}
  assert json.loads((workdir / 'final_metrics.json').read_text())['step'] == 6
