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
