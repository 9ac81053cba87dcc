"""Curvature bounds of smooth MLPs and the curvature-based robustness certificate (CRC)."""

from robustjax.certify.bounds import ACTIVATION_CONSTANTS
from robustjax.certify.bounds import ActivationConstants
from robustjax.certify.bounds import CurvatureBound
from robustjax.certify.bounds import margin_curvature_bound
from robustjax.certify.bounds import mlp_apply
from robustjax.certify.bounds import mlp_layers
from robustjax.certify.bounds import spectral_norm
from robustjax.certify.bounds import weighted_gram_top
from robustjax.certify.crc import CRCResult
from robustjax.certify.crc import crc
from robustjax.certify.crc import crc_mlp
from robustjax.certify.crc import pair_certificate
