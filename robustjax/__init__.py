"""robustjax: adversarial robustness through curvature, in JAX."""

from robustjax import curvature
from robustjax import geometry
from robustjax import types

__version__ = '0.1.0'
