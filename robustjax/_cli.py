"""What the command-line entry points (``robustjax.main``, ``robustjax.evaluate``) share:
the log filter, the persistent compilation cache and the one-line ``error:`` exit."""

from __future__ import annotations

import logging as std_logging
import os
import sys

import jax

CACHE_ENV = 'ROBUSTJAX_CACHE'


def default_cache_dir() -> str:
  """``$ROBUSTJAX_CACHE/jax`` if set, else ``~/.cache/robustjax/jax``."""
  root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache',
                                                   'robustjax')
  return os.path.join(root, 'jax')


def define_cache_flag(flags) -> None:
  """``--compilation_cache_dir``: where compiled programs persist between runs."""
  flags.DEFINE_string(
      'compilation_cache_dir', default_cache_dir(),
      'JAX persistent compilation cache: a repeated run of the same model reuses the '
      f'programs compiled before. Default ${CACHE_ENV}/jax or ~/.cache/robustjax/jax; '
      'empty turns it off.')


def enable_compilation_cache(path: str, *, explicit: bool = True) -> None:
  """Turns on JAX's persistent compilation cache in ``path``; ``''`` turns it off.

  Every program is cached (no minimum compile time or size), so a repeated run of one
  model compiles nothing. When the flag was not given (``explicit=False``) a cache JAX
  was already configured with (``JAX_COMPILATION_CACHE_DIR``) is kept.
  """
  if not explicit and jax.config.jax_compilation_cache_dir:
    return
  if not path:
    jax.config.update('jax_compilation_cache_dir', None)
    return
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def module_of(record: std_logging.LogRecord) -> str:
  """The name of the module that logged ``record``.

  Python loggers are named after their module (``jax._src.xla_bridge``). absl's records
  all come from the logger ``absl``: their module is the one in ``sys.modules`` whose
  file is the record's ``pathname`` (an exact file match, not a substring of the path:
  the virtual environment may live inside a clone called ``robustjax``).
  """
  if record.name != 'absl':
    return record.name
  path = record.pathname
  if path not in _MODULE_OF_FILE:
    for name, module in list(sys.modules.items()):
      if getattr(module, '__file__', None) == path:
        spec = getattr(module, '__spec__', None)
        if name == '__main__' and spec is not None:
          name = spec.name
        _MODULE_OF_FILE[path] = name
        break
  return _MODULE_OF_FILE.get(path, '')


_MODULE_OF_FILE: dict[str, str] = {}


def show_record(record: std_logging.LogRecord) -> bool:
  """Warnings and errors from anywhere, info lines from robustjax's own modules only
  (not orbax's per-save chatter, nor JAX's 'Unable to initialize backend' probes)."""
  if record.levelno >= std_logging.WARNING:
    return True
  module = module_of(record)
  return module == 'robustjax' or module.startswith('robustjax.')


def exit_with_error(message) -> None:
  """Ends the process with the one line ``error: <message>`` on stderr, status 1."""
  sys.exit(f'error: {message}')
