"""ACB-MSE (placeholder until the implementation lands)."""

from torch import nn

from smp_imbalance.registry import register_loss


@register_loss(name="acb_mse")
class ACBMSELoss(nn.Module):
    """Automatic class-balanced MSE for sparse frames (hit / no-hit pixels)."""
