"""Attacks as pure functions looped with ``jax.lax.scan``, composed from small parts.

Entry points take ``logits_fn(params, inputs) -> [B, K]`` and ``batch = (inputs,
labels)`` and return points in ``ball(inputs, eps) ∩ box``:

- :func:`pgd` (restarts, any p, objectives UL/UM/TL/TM), :func:`fgsm`,
  :func:`multi_targeted`;
- :func:`min_norm` (smallest perturbation reaching a goal, any p, by bisection) and
  :func:`min_norm_ticktock` (Woods et al.'s Algorithm 1, L2): the ARA attacks;
- :func:`simba` (black-box, for gradient-masking diagnostics) and :func:`square` (the
  Square Attack, Andriushchenko et al. 2020: score-based random search, L∞ / L2,
  AutoAttack's black-box member; :func:`square_with_info` also returns margins and
  queries);
- :func:`maximize`, the projected-ascent loop on any per-example objective;
- :func:`apgd` and :func:`apgd_targeted` (Auto-PGD on CE / DLR / targeted DLR, Croce &
  Hein 2020; L1-APGD, Croce & Hein 2021) and :func:`autoattack`, the AutoAttack
  ensemble in L∞, L2 and L1 (:class:`AutoAttackResult`);
- :func:`fab` and :func:`fab_targeted` (FAB / FAB-T, Croce & Hein 2020: minimal
  perturbations by projections onto linearised boundaries; within ``eps`` or ``x``) and
  :func:`fab_min_norm` (the minimal points and their norms, whatever ``eps``).
"""

from robustjax.attacks import objectives
from robustjax.attacks.apgd import apgd
from robustjax.attacks.apgd import apgd_targeted
from robustjax.attacks.apgd import checkpoints as apgd_checkpoints
from robustjax.attacks.apgd import dlr_loss
from robustjax.attacks.apgd import targeted_dlr_loss
from robustjax.attacks.autoattack import AUTOATTACK_ATTACKS
from robustjax.attacks.autoattack import AUTOATTACK_VERSIONS
from robustjax.attacks.autoattack import AutoAttackResult
from robustjax.attacks.autoattack import CLEAN_MISCLASSIFIED
from robustjax.attacks.autoattack import ROBUST
from robustjax.attacks.autoattack import autoattack
from robustjax.attacks.blackbox import simba
from robustjax.attacks.fab import fab
from robustjax.attacks.fab import fab_min_norm
from robustjax.attacks.fab import fab_targeted
from robustjax.attacks.loop import AttackState
from robustjax.attacks.loop import default_step_size
from robustjax.attacks.loop import init_perturbation
from robustjax.attacks.loop import maximize
from robustjax.attacks.loop import step_direction
from robustjax.attacks.min_norm import goal_objective
from robustjax.attacks.min_norm import min_norm
from robustjax.attacks.min_norm import min_norm_ticktock
from robustjax.attacks.objectives import get_objective
from robustjax.attacks.objectives import random_targets
from robustjax.attacks.pgd import fgsm
from robustjax.attacks.pgd import multi_targeted
from robustjax.attacks.pgd import pgd
from robustjax.attacks.pgd import pgd_with_values
from robustjax.attacks.square import SquareResult
from robustjax.attacks.square import square
from robustjax.attacks.square import square_with_info
