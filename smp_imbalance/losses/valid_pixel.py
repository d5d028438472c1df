"""Valid-pixel weighted losses (placeholder until the implementation lands)."""

from torch import nn

from smp_imbalance.registry import register_loss


@register_loss(name="valid_pixel")
class ValidPixelWeightedLoss(nn.Module):
    """Valid-pixel weighted loss: per-group mean over valid pixels, weighted by sqrt(valid ratio)."""


@register_loss(name="sam")
class SpectralAngleLoss(nn.Module):
    """Spectral angle between prediction and target over valid pixels, valid-ratio weighted."""


@register_loss(name="sam_mse")
class SAMMSELoss(nn.Module):
    """alpha * SAM + beta * valid-pixel weighted MSE."""
