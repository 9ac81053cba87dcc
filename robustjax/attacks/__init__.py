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

The implementation lives in private modules (``robustjax/attacks/_src/``, as optax lays
itself out); the public names are the ones below. Two namespaces stay modules:
``objectives`` (the objective registry) and ``loop`` (the shared ascent loop the
regularizers build on).
"""

from robustjax.attacks._src import loop
from robustjax.attacks._src import objectives
from robustjax.attacks._src.apgd import apgd
from robustjax.attacks._src.apgd import apgd_targeted
from robustjax.attacks._src.apgd import checkpoints as apgd_checkpoints
from robustjax.attacks._src.apgd import dlr_loss
from robustjax.attacks._src.apgd import targeted_dlr_loss
from robustjax.attacks._src.autoattack import AUTOATTACK_ATTACKS
from robustjax.attacks._src.autoattack import AUTOATTACK_VERSIONS
from robustjax.attacks._src.autoattack import AutoAttackResult
from robustjax.attacks._src.autoattack import CLEAN_MISCLASSIFIED
from robustjax.attacks._src.autoattack import ROBUST
from robustjax.attacks._src.autoattack import autoattack
from robustjax.attacks._src.autoattack import check_attacks as check_autoattack_attacks
from robustjax.attacks._src.autoattack import check_inputs as check_autoattack_inputs
from robustjax.attacks._src.autoattack import check_norm as check_autoattack_norm
from robustjax.attacks._src.autoattack import ensemble_settings
from robustjax.attacks._src.blackbox import simba
from robustjax.attacks._src.fab import fab
from robustjax.attacks._src.fab import fab_min_norm
from robustjax.attacks._src.fab import fab_targeted
from robustjax.attacks._src.loop import AttackState
from robustjax.attacks._src.loop import default_step_size
from robustjax.attacks._src.loop import init_perturbation
from robustjax.attacks._src.loop import maximize
from robustjax.attacks._src.loop import step_direction
from robustjax.attacks._src.min_norm import goal_objective
from robustjax.attacks._src.min_norm import min_norm
from robustjax.attacks._src.min_norm import min_norm_ticktock
from robustjax.attacks._src.objectives import get_objective
from robustjax.attacks._src.objectives import random_targets
from robustjax.attacks._src.pgd import fgsm
from robustjax.attacks._src.pgd import multi_targeted
from robustjax.attacks._src.pgd import pgd
from robustjax.attacks._src.pgd import pgd_with_values
from robustjax.attacks._src.square import SquareResult
from robustjax.attacks._src.square import square
from robustjax.attacks._src.square import square_with_info
