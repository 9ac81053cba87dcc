"""CROWN-IBP certified training (Zhang et al., "Towards Stable and Efficient Training of
Verifiably Robust Neural Networks", ICLR 2020) of a ReLU MLP 64-64 on digits.

Objective ``κ CE(x) + (1 − κ) CE(−(β m_CROWN-IBP + (1 − β) m_IBP))`` with the paper's
schedules (κ 1 -> 0 and β 1 -> 0 while ε ramps 0 -> 0.1 L∞) shortened to the digits run:
60 clean steps, a 300-step ramp. Adam 1e-3. Certify with
``python -m robustjax.evaluate --certify=crown``.

  python -m robustjax.main --config=configs/crown_ibp_digits.py --workdir=/tmp/crown_ibp_digits
"""

from configs import ibp_digits


def get_config():
  c = ibp_digits.get_config()
  del c.regularizers['ibp']
  c.regularizers.crown_ibp = ibp_digits.certified_term(
      'crown_ibp', eps=0.1, kappa=0.0, beta=0.0, ramp=ibp_digits.RAMP)
  return c
