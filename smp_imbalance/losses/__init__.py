"""Imbalance-aware losses. Importing this package registers every built-in name."""

from smp_imbalance.losses import baselines
from smp_imbalance.losses.acb_mse import ACBMSELoss
from smp_imbalance.losses.by_name import LossByName
from smp_imbalance.losses.class_rectification import ClassRectificationLoss
from smp_imbalance.losses.valid_pixel import SAMMSELoss, SpectralAngleLoss, ValidPixelWeightedLoss

__all__ = [
    "ACBMSELoss",
    "ClassRectificationLoss",
    "LossByName",
    "SAMMSELoss",
    "SpectralAngleLoss",
    "ValidPixelWeightedLoss",
    "baselines",
]
