"""Standard losses registered by name, so that they can be compared with ours by name.

Constructor keyword arguments pass straight through to the wrapped class. smp losses need a
``mode`` (``"binary"``, ``"multiclass"`` or ``"multilabel"``); it defaults to ``"binary"`` here.
smp and timm are imported only when one of their losses is built.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from smp_imbalance.registry import register_loss


@register_loss(name="mse", description="torch.nn.MSELoss: mean squared error over every element")
def mse(**kwargs: Any) -> nn.Module:
    return nn.MSELoss(**kwargs)


@register_loss(name="l1", description="torch.nn.L1Loss: mean absolute error over every element")
def l1(**kwargs: Any) -> nn.Module:
    return nn.L1Loss(**kwargs)


@register_loss(
    name="huber", description="torch.nn.HuberLoss: quadratic near 0, linear beyond delta"
)
def huber(**kwargs: Any) -> nn.Module:
    return nn.HuberLoss(**kwargs)


@register_loss(
    name="bce",
    description="torch.nn.BCEWithLogitsLoss: binary cross-entropy on logits (multi-label)",
)
def bce(**kwargs: Any) -> nn.Module:
    return nn.BCEWithLogitsLoss(**kwargs)


@register_loss(
    name="ce", description="torch.nn.CrossEntropyLoss: softmax cross-entropy (single-label)"
)
def ce(**kwargs: Any) -> nn.Module:
    return nn.CrossEntropyLoss(**kwargs)


def _smp_loss(class_name: str, kwargs: dict[str, Any]) -> nn.Module:
    from segmentation_models_pytorch import losses as smp_losses

    kwargs.setdefault("mode", "binary")
    return getattr(smp_losses, class_name)(**kwargs)


@register_loss(
    name="smp.dice", description="segmentation_models_pytorch DiceLoss (mode='binary' default)"
)
def smp_dice(**kwargs: Any) -> nn.Module:
    return _smp_loss("DiceLoss", kwargs)


@register_loss(
    name="smp.focal", description="segmentation_models_pytorch FocalLoss (mode='binary' default)"
)
def smp_focal(**kwargs: Any) -> nn.Module:
    return _smp_loss("FocalLoss", kwargs)


@register_loss(
    name="smp.jaccard",
    description="segmentation_models_pytorch JaccardLoss (mode='binary' default)",
)
def smp_jaccard(**kwargs: Any) -> nn.Module:
    return _smp_loss("JaccardLoss", kwargs)


@register_loss(
    name="smp.tversky",
    description="segmentation_models_pytorch TverskyLoss (mode='binary' default)",
)
def smp_tversky(**kwargs: Any) -> nn.Module:
    return _smp_loss("TverskyLoss", kwargs)


@register_loss(
    name="smp.lovasz", description="segmentation_models_pytorch LovaszLoss (mode='binary' default)"
)
def smp_lovasz(**kwargs: Any) -> nn.Module:
    return _smp_loss("LovaszLoss", kwargs)


@register_loss(
    name="timm.asl",
    description="timm AsymmetricLossMultiLabel: asymmetric focusing for multi-label logits",
)
def timm_asl(**kwargs: Any) -> nn.Module:
    from timm.loss import AsymmetricLossMultiLabel

    return AsymmetricLossMultiLabel(**kwargs)
