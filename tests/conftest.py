"""Test set-up: 4 simulated CPU devices, so sharded code paths run on any machine.

The environment variables must be set before JAX initialises its backends; pytest imports
this file before any test module, so every test sees ``len(jax.devices()) == 4``.
"""

import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_flag = '--xla_force_host_platform_device_count=4'
if _flag not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + _flag).strip()

import jax  # pylint: disable=g-import-not-at-top

try:
  jax.config.update('jax_num_cpu_devices', 4)
except (AttributeError, RuntimeError):  # older JAX or backends already initialised
  pass
