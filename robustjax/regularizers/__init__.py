"""Curvature and gradient regularizers as pure functions, and their registry.

``get(name)`` returns the penalty registered under ``name``; ``names()`` lists them.
Each is called ``penalty(fn, params, batch, *, rng, **hparams) -> (values [B], aux)``,
where ``fn`` is a loss function, or a logits function when ``takes(name) == 'logits_fn'``.
"""

from robustjax.regularizers.adversarial import adversarial
from robustjax.regularizers.adversarial import adversarial_l2min
from robustjax.regularizers.adversarial import l2min_attack
from robustjax.regularizers.adversarial import pgd_loss_attack
from robustjax.regularizers.certified import bound_cross_entropy
from robustjax.regularizers.certified import crown_ibp
from robustjax.regularizers.certified import ibp
from robustjax.regularizers.controllers import AdaptivePsiState
from robustjax.regularizers.controllers import Controller
from robustjax.regularizers.controllers import ElleAState
from robustjax.regularizers.controllers import EmptyState
from robustjax.regularizers.controllers import adaptive_psi
from robustjax.regularizers.controllers import adaptive_psi_init
from robustjax.regularizers.controllers import adaptive_psi_update
from robustjax.regularizers.controllers import elle_a
from robustjax.regularizers.controllers import elle_a_init
from robustjax.regularizers.controllers import elle_a_update
from robustjax.regularizers.crt import crt
from robustjax.regularizers.crt import curvature_attack
from robustjax.regularizers.cure import cure
from robustjax.regularizers.gradient_norm import gradient_norm
from robustjax.regularizers.linearity import elle
from robustjax.regularizers.linearity import gradalign
from robustjax.regularizers.lipschitz import lipschitz
from robustjax.regularizers.llr import linearity_gap
from robustjax.regularizers.llr import llr
from robustjax.regularizers.noise import gaussian_augmentation
from robustjax.regularizers.registry import get
from robustjax.regularizers.registry import names
from robustjax.regularizers.registry import register
from robustjax.regularizers.registry import takes
from robustjax.regularizers.scorpio import frank_wolfe
from robustjax.regularizers.scorpio import scorpio
from robustjax.regularizers.scorpio import scorpio_attack
from robustjax.regularizers.single_step import fgsm
from robustjax.regularizers.single_step import n_fgsm
from robustjax.regularizers.soar import soar
from robustjax.regularizers.trades import kl_divergence
from robustjax.regularizers.trades import trades
