"""robustjax: adversarial robustness through curvature, in JAX.

The functional core (``geometry``, ``curvature``, ``losses``, ``attacks``,
``regularizers``, ``certify``, ``metrics``, ``explain``) works on any JAX function
``logits_fn(params, inputs) -> [B, K]``; ``models``, ``data`` and ``training`` add the
Flax models, datasets and the config-driven training system on top.
"""

from robustjax import attacks
from robustjax import certify
from robustjax import curvature
from robustjax import explain
from robustjax import geometry
from robustjax import losses
from robustjax import metrics
from robustjax import regularizers
from robustjax import types

__version__ = '0.1.0'

_LAZY_SUBMODULES = ('data', 'models', 'training')


def __getattr__(name):
  # Flax, optax and TFDS load only when the modules that need them are first used.
  if name in _LAZY_SUBMODULES:
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module(f'robustjax.{name}')
  raise AttributeError(f'module robustjax has no attribute {name!r}')
