r"""Command-line entry point: train and evaluate one config.

  python -m robustjax.main --config=configs/llr_digits.py --workdir=/tmp/llr_digits \
      [--config.optimizer.lr=0.05 ...]

Re-running the same command resumes from the workdir's latest checkpoint.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags


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
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_libraries(record) -> bool:
  """Keeps warnings and robustjax's own info lines; drops orbax's per-save chatter."""
  return record.levelno >= std_logging.WARNING or 'robustjax' in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_logger().addFilter(_quiet_libraries)
  from robustjax import training  # pylint: disable=g-import-not-at-top
  try:
    training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:
    if not str(e).startswith(('config.', 'workdir:')):
      raise
    sys.exit(f'error: {e}')


def run():
  """``app.run(main)``, turning a misspelt ``--config.<key>`` override into one line."""
  try:
    app.run(main)
  except KeyError as e:  # raised by config_flags while parsing, before main() runs
    if 'Did you mean' not in str(e) and 'config' not in str(e):
      raise
    sys.exit(f'error: unknown config key in a --config.* override: {e.args[0]}')


if __name__ == '__main__':
  run()
