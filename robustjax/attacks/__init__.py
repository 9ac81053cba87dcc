"""Iterative attacks as ``jax.lax.scan`` loops, composed from small parts."""

from robustjax.attacks.loop import AttackState
from robustjax.attacks.loop import default_step_size
from robustjax.attacks.loop import init_perturbation
from robustjax.attacks.loop import maximize
from robustjax.attacks.loop import step_direction
