"""Explanations: saliency, loss-surface slices, contrastive and adversarial explanations."""

from robustjax.explain.contrastive import adversarial_explanation
from robustjax.explain.contrastive import contrastive_explanations
from robustjax.explain.saliency import saliency
from robustjax.explain.saliency import saliency_map
from robustjax.explain.surface import loss_surface
from robustjax.explain.surface import surface_directions
