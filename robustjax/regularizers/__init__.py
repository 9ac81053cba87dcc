"""Curvature and gradient regularizers as pure functions, and their registry."""

from robustjax.regularizers.registry import get
from robustjax.regularizers.registry import names
from robustjax.regularizers.registry import register
from robustjax.regularizers.registry import takes
