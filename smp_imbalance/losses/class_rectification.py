"""Class Rectification Loss (placeholder until the implementation lands)."""

from torch import nn

from smp_imbalance.registry import register_loss


@register_loss(name="crl")
class ClassRectificationLoss(nn.Module):
    """Class Rectification Loss with batch-wise minority hard mining (multi-label / single-label)."""
