"""Test set-up: 4 simulated CPU devices, so sharded code paths run on any machine.

The environment variables must be set before JAX initialises its backends; pytest imports
this file before any test module, so every test sees ``len(jax.devices()) == 4``.
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import chex  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top

# XLA_FLAGS --xla_force_host_platform_device_count=4, set before any backend starts (and
# inherited by the subprocesses some tests launch).
chex.set_n_cpu_devices(4)

try:
  jax.config.update('jax_num_cpu_devices', 4)
except (AttributeError, RuntimeError):  # older JAX or backends already initialised
  pass


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-order


@pytest.fixture(scope='module')
def persistent_compilation_cache(tmp_path_factory):
  """A module-wide persistent XLA cache: runs of one config rebuilt as new closures (a
  resumed run, another workdir of the same model) reuse compiled programs. Restores the
  previous settings afterwards, so other modules on the same worker are unaffected."""
  keys = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
          'jax_persistent_cache_min_entry_size_bytes')
  previous = {k: getattr(jax.config, k) for k in keys}
  jax.config.update('jax_compilation_cache_dir', str(tmp_path_factory.mktemp('xla_cache')))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  yield
  for k, v in previous.items():
    jax.config.update(k, v)
