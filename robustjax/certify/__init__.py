"""Certificates: bound propagation (IBP, CROWN), curvature bounds and CRC for smooth nets;
randomized smoothing for any model."""

from robustjax.certify import bound_propagation
from robustjax.certify.bound_propagation import Layer
from robustjax.certify.bound_propagation import MarginBounds
from robustjax.certify.bound_propagation import certified_radius as bound_certified_radius
from robustjax.certify.bound_propagation import certify as certify_bounds
from robustjax.certify.bound_propagation import margin_lower_bounds
from robustjax.certify.bound_propagation import network_from_flax
from robustjax.certify.bound_propagation import network_from_module
from robustjax.certify.bounds import ACTIVATION_CONSTANTS
from robustjax.certify.bounds import ActivationConstants
from robustjax.certify.bounds import CurvatureBound
from robustjax.certify.bounds import CurvatureTable
from robustjax.certify.bounds import DerivativeRanges
from robustjax.certify.bounds import local_derivative_ranges
from robustjax.certify.bounds import local_margin_curvature_bound
from robustjax.certify.bounds import margin_curvature_bound
from robustjax.certify.bounds import margin_curvature_table
from robustjax.certify.bounds import mlp_apply
from robustjax.certify.bounds import mlp_layers
from robustjax.certify.bounds import spectral_norm
from robustjax.certify.bounds import weighted_gram_top
from robustjax.certify.crc import CRCResult
from robustjax.certify.crc import NotCertifiedWarning
from robustjax.certify.crc import certified_accuracy
from robustjax.certify.crc import crc
from robustjax.certify.crc import conv_margin_curvature_bound
from robustjax.certify.crc import crc_conv
from robustjax.certify.crc import crc_mlp
from robustjax.certify.crc import crc_mlp_local
from robustjax.certify.crc import pair_certificate
from robustjax.certify.smoothing import ABSTAIN
from robustjax.certify.smoothing import SmoothingCertificate
from robustjax.certify.smoothing import binomial_log_cdf
from robustjax.certify.smoothing import binomial_test_pvalue
from robustjax.certify.smoothing import certify
from robustjax.certify.smoothing import clopper_pearson_lower
from robustjax.certify.smoothing import predict
from robustjax.certify.smoothing import sample_counts
