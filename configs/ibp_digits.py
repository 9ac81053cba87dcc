"""IBP certified training (Gowal et al., "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", 2018) of a ReLU MLP 64-64 on digits.

Objective ``κ CE(x) + (1 − κ) CE(−m_IBP)`` with the papers' schedules shortened to the
digits run: 60 clean steps, then ε ramps linearly 0 -> 0.1 (L∞) and κ 1 -> 0.5 over 300
steps (Gowal et al.: κ from 1 to 0.5 while ε ramps). Adam 1e-3. Evaluated with L∞
PGD at 0.1; certify with ``python -m robustjax.evaluate --certify=ibp`` (or crown).

  python -m robustjax.main --config=configs/ibp_digits.py --workdir=/tmp/ibp_digits
"""

from configs import base

RAMP = {'begin': 60, 'steps': 300}


def certified_term(name: str, *, eps: float, kappa: float, ramp: dict,
                   model: str = 'mlp', activation: str = 'relu', beta: float | None = None):
  """An ``ibp`` / ``crown_ibp`` term with ε, κ (and β) on the same ramp."""
  schedules = {'eps': dict(ramp, init=0.0), 'kappa': dict(ramp, init=1.0)}
  hparams = {'eps': eps, 'kappa': kappa, 'model': model, 'activation': activation}
  if beta is not None:
    schedules['beta'] = dict(ramp, init=1.0)
    hparams['beta'] = beta
  return base.term(name, weight=1.0, schedules=schedules, **hparams)


def get_config():
  c = base.digits()
  # The term reads the layers from params in pixel space: no standardisation layer.
  c.model.kwargs.mean = None
  c.model.kwargs.std = None
  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.momentum = 0.0
  c.nominal_weight = 0.0
  c.regularizers.ibp = certified_term('ibp', eps=0.1, kappa=0.5, ramp=RAMP)
  return c
