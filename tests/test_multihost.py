"""Two processes on this machine (jax.distributed over gloo) train like one process.

Each process owns 2 simulated CPU devices; together they form the same 4-device
('data',) mesh the single-process suite uses, so the final parameters must match a
single-process run of the same config (data order and randomness derive from the step).
"""

import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent('''
    import os, sys
    os.environ['JAX_PLATFORMS'] = 'cpu'
    os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    sys.path.insert(0, {root!r})
    from configs import standard_digits
    from robustjax import training
    config = standard_digits.get_config()
    config.update_from_flattened_dict({overrides!r})
    config.distributed.initialize = True
    config.distributed.coordinator_address = {address!r}
    config.distributed.num_processes = 2
    config.distributed.process_id = int(sys.argv[1])
    result = training.train_and_evaluate(config, {workdir!r})
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    print('RESULT', result)
''')


OVERRIDES = {'num_train_steps': 8, 'checkpoint_every_steps': 4, 'log_every_steps': 4,
             'eval.num_examples': 32, 'eval.steps': 2}


def tiny_config():
  sys.path.insert(0, str(ROOT))
  from configs import standard_digits  # pylint: disable=g-import-not-at-top
  config = standard_digits.get_config()
  config.update_from_flattened_dict(OVERRIDES)
  return config


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.skipif(jax.device_count() != 4, reason='needs the 4 simulated devices')
def test_two_processes_match_one_process(tmp_path):
  from robustjax import training  # pylint: disable=g-import-not-at-top
  multi_dir = tmp_path / 'two_processes'
  script = WORKER.format(root=str(ROOT), address=f'127.0.0.1:{_free_port()}',
                         workdir=str(multi_dir), overrides=OVERRIDES)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  workers = [subprocess.Popen([sys.executable, '-c', script, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  outputs = [w.communicate(timeout=240)[0] for w in workers]
  for w, out in zip(workers, outputs):
    assert w.returncode == 0, out[-3000:]
    assert 'RESULT' in out

  single_dir = tmp_path / 'one_process'
  training.train_and_evaluate(tiny_config(), str(single_dir))
  _, _, multi_params = training.restore(str(multi_dir))
  _, _, single_params = training.restore(str(single_dir))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               multi_params, single_params)
