r"""Command-line entry point: train and evaluate one config.

  python -m robustjax.main --config=configs/llr_digits.py --workdir=/tmp/llr_digits \
      [--config.optimizer.lr=0.05 ...] [--extend]

A workdir belongs to one run. Re-running the same command resumes from the workdir's
latest checkpoint (a finished run prints its saved final line). A different config in
an existing workdir is refused with one line listing the differing fields; the one
change accepted is a higher ``--config.num_train_steps`` together with ``--extend``,
which continues the run and records the extension as ``config.segment-<n>.json``
beside the untouched ``config.json``.

Exit status:
  0    finished: trained, evaluated, ``final_metrics.json`` written, ``final:`` printed.
  1    a user error (bad flag, config field or workdir: one ``error:`` line, nothing
       written) or a failed run (e.g. a non-finite loss).
  143  (:data:`EXIT_PREEMPTED`, 128 + SIGTERM) stopped by SIGTERM: during training after
       saving a checkpoint, during the final evaluation with training complete and
       saved. Re-run the same command to continue.
"""

import difflib
import importlib.util
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from robustjax import _cli

EXIT_PREEMPTED = 143  # 128 + SIGTERM, the shell's code for a process ended by SIGTERM


def _config_dir_on_path(argv):
  """Puts the repository root (the config directory's parent) on ``sys.path`` so that
  config files can ``from configs import base`` wherever the command is run from."""
  for arg in argv:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':', 1)[0]
      root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
      if root not in sys.path:
        sys.path.insert(0, root)


_config_dir_on_path(sys.argv)

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Training config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
_EXTEND = flags.DEFINE_bool(
    'extend', False, 'Continue the finished or running run in --workdir to a higher '
    '--config.num_train_steps (the only change to its config that is accepted); the '
    'extension is recorded as config.segment-<n>.json beside config.json.')
_cli.define_cache_flag(flags)
flags.mark_flags_as_required(['config', 'workdir'])


def _config():
  """The parsed ``--config``; a file that cannot be loaded ends in one ``error:`` line."""
  config = _CONFIG.value
  try:
    config.keys()  # a file that failed to load is a stand-in raising on any access
    return config
  except OSError as e:
    path = next((a.split('=', 1)[1] for a in sys.argv if a.startswith('--config=')), '')
    reason = [l.strip() for l in str(e).splitlines() if l.strip()][-1]
    _cli.exit_with_error(f'--config: cannot load {path!r}: {reason}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_cli.show_record)
  config = _config()
  _cli.enable_compilation_cache(flags.FLAGS.compilation_cache_dir,
                                explicit=flags.FLAGS['compilation_cache_dir'].present)
  from robustjax import training  # pylint: disable=g-import-not-at-top
  try:
    final = training.train_and_evaluate(config, _WORKDIR.value, extend=_EXTEND.value)
  except ValueError as e:
    if not str(e).startswith(('config.', 'workdir:')):
      raise
    _cli.exit_with_error(e)
  except training.NonFiniteError as e:  # the message names the term and the step
    _cli.exit_with_error(e)
  if final.get('preempted'):
    sys.exit(EXIT_PREEMPTED)


def _load_config(argv):
  """The config named by ``--config=path[:arg]`` (only to explain a bad override)."""
  for arg in argv:
    if arg.startswith('--config='):
      path, _, param = arg.split('=', 1)[1].partition(':')
      spec = importlib.util.spec_from_file_location('_robustjax_cli_config', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return module.get_config(param) if param else module.get_config()
  return None


def _override_names(argv):
  """Field paths of the ``--config.a.b=v`` / ``--noconfig.a.b`` overrides in ``argv``."""
  for arg in argv:
    for prefix in ('--config.', '--noconfig.'):
      if arg.startswith(prefix):
        yield arg[len(prefix):].split('=', 1)[0]


def _explain_override(argv) -> str | None:
  """One line naming the first override whose field does not exist, and a close match."""
  try:
    config = _load_config(argv)
  except Exception:  # pylint: disable=broad-except
    return None
  if config is None:
    return None
  for name in _override_names(argv):
    node, parts = config, name.split('.')
    for i, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part in keys:
        node = node[part]
        continue
      parent = '.'.join(['config', *parts[:i]])
      if not keys:
        return f'--config.{name}: {parent} is a value, not a group of fields'
      close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
      hint = f'; did you mean {close[0]!r}?' if close else ''
      return (f'--config.{name}: {parent} has no field {part!r}{hint} (its fields: '
              f'{", ".join(sorted(keys))})')
  return None


def run():
  """``app.run(main)``, turning a misspelt ``--config.<key>`` override into one line."""
  try:
    app.run(main)
  except (KeyError, AttributeError) as e:  # raised by config_flags while parsing flags
    line = _explain_override(sys.argv)
    if line is None:
      raise
    _cli.exit_with_error(line)


if __name__ == '__main__':
  run()
