"""Standard losses registered by name, each taking ``valid_mask=`` like the losses of this package.

Names: ``mse``, ``l1``, ``huber``, ``bce``, ``ce`` (torch), ``smp.*`` (every loss of
``segmentation_models_pytorch.losses``) and ``timm.*`` (timm's classification losses: the
``create_classification_loss`` types, and ``timm.asl``).

Calling convention: every dense loss here is ``forward(y_pred, y_true, valid_mask=None)``.

* ``valid_mask=None`` calls the library loss exactly as the library does (same value, same
  gradient: the tests compare each name against the library called directly).
* a bool ``valid_mask`` broadcastable to ``y_pred`` (e.g. ``(N, 1, H, W)``) drops the pixels where
  it is ``False``, by the library's own means where it has one: the target is set to the loss's
  ``ignore_index`` there (torch ``CrossEntropyLoss``, the smp losses), so the library's own
  ignore rule applies. The elementwise torch losses are computed with ``reduction="none"`` and
  reduced over the valid elements only (``"mean"``: sum over valid / number valid, 0 when none is
  valid). ``smp.mcc`` has no ignore rule; its masked counts are computed here (each confusion
  term summed over the valid pixels only).

Constructor keyword arguments pass straight through to the wrapped library class. smp losses
need a ``mode`` (``"binary"``, ``"multiclass"`` or ``"multilabel"``); it defaults to ``"binary"``
here (documented on each name). smp and timm are imported only when one of their losses is built.
The timm names are classification losses (``(N, C)`` logits): they take no ``valid_mask``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smp_imbalance.losses._checks import check_mask
from smp_imbalance.registry import register_loss

__all__ = [
    "SMP_LOSSES",
    "TIMM_LOSS_TYPES",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "L1Loss",
    "MSELoss",
    "SMPLoss",
]

IGNORE = -100  # the target value that marks an invalid pixel for a library's ignore rule


def _masked_reduce(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """``loss`` (elementwise) zeroed where ``valid`` is False, then reduced over valid elements."""
    valid = valid.expand(loss.shape)
    loss = torch.where(valid, loss, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / valid.sum(dtype=loss.dtype).clamp_min(1)


def _safe_inputs(
    y_pred: torch.Tensor, y_true: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """0 in place of invalid pixels before the maths, so that a NaN there reaches neither the loss
    nor the gradient (``0 * nan`` would)."""
    return torch.where(valid, y_pred, 0.0), torch.where(valid, y_true, 0.0)


class _MaskedElementwise:
    """``forward(y_pred, y_true, valid_mask=None)`` for a torch loss module: the module itself
    without a mask, else its elementwise form (:meth:`_elementwise`) reduced over the valid
    elements (invalid elements neither count nor carry a gradient, even where they are NaN)."""

    reduction: str

    def _elementwise(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if valid_mask is None:
            return super().forward(y_pred, y_true)  # type: ignore[misc]
        check_mask(valid_mask, y_pred, name="valid_mask", like_name="y_pred")
        p, t = _safe_inputs(y_pred, y_true, valid_mask)
        return _masked_reduce(self._elementwise(p, t), valid_mask, self.reduction)


class MSELoss(_MaskedElementwise, nn.MSELoss):
    """:class:`torch.nn.MSELoss` that also takes ``valid_mask`` (registered as ``mse``).

    ``loss = sum_{valid i} (y_pred_i - y_true_i)^2 / n_valid`` (``reduction="mean"``); with
    ``valid_mask=None`` exactly ``torch.nn.MSELoss``. Shapes: any, ``y_pred`` and ``y_true``
    alike; ``valid_mask`` bool, broadcastable to ``y_pred``.
    """

    def _elementwise(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(y_pred, y_true, reduction="none")


class L1Loss(_MaskedElementwise, nn.L1Loss):
    """:class:`torch.nn.L1Loss` that also takes ``valid_mask`` (registered as ``l1``): the mean
    absolute error over the valid elements; shapes as :class:`MSELoss`."""

    def _elementwise(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(y_pred, y_true, reduction="none")


class HuberLoss(_MaskedElementwise, nn.HuberLoss):
    """:class:`torch.nn.HuberLoss` that also takes ``valid_mask`` (registered as ``huber``);
    default ``delta=1``; shapes as :class:`MSELoss`."""

    def _elementwise(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(y_pred, y_true, reduction="none", delta=self.delta)


class BCEWithLogitsLoss(_MaskedElementwise, nn.BCEWithLogitsLoss):
    """:class:`torch.nn.BCEWithLogitsLoss` that also takes ``valid_mask`` (registered as
    ``bce``): binary cross-entropy on logits averaged over the valid elements (``weight`` and
    ``pos_weight`` as in torch); shapes as :class:`MSELoss`."""

    def _elementwise(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(
            y_pred, y_true, self.weight, reduction="none", pos_weight=self.pos_weight
        )


def _index_mask(valid_mask: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """A ``(N, 1, *)`` mask as the ``(N, *)`` mask of class-index targets."""
    check_mask(valid_mask, y_pred, name="valid_mask", like_name="y_pred")
    if valid_mask.shape[1] != 1:
        raise ValueError(
            f"valid_mask of shape {tuple(valid_mask.shape)} has one value per class, but the "
            "target holds class indices: pass one channel, (N, 1, H, W)"
        )
    return valid_mask.squeeze(1)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """:class:`torch.nn.CrossEntropyLoss` that also takes ``valid_mask`` (registered as ``ce``).

    ``y_pred`` ``(N, C, *)`` logits; ``y_true`` ``(N, *)`` class indices (invalid pixels get
    ``ignore_index``, torch's own rule: the mean is over valid pixels) or ``(N, C, *)``
    probabilities (mean over valid pixels); ``valid_mask`` ``(N, 1, *)`` bool.
    """

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if valid_mask is None:
            return super().forward(y_pred, y_true)
        valid = _index_mask(valid_mask, y_pred)
        if not y_true.is_floating_point():
            return super().forward(y_pred, torch.where(valid, y_true, self.ignore_index))
        p = torch.where(valid.unsqueeze(1), y_pred, 0.0)
        t = torch.where(valid.unsqueeze(1), y_true, 0.0)
        loss = F.cross_entropy(
            p, t, self.weight, reduction="none", label_smoothing=self.label_smoothing
        )
        return _masked_reduce(loss, valid, self.reduction)


register_loss(MSELoss, name="mse", description="torch MSELoss (+ valid_mask): mean squared error")
register_loss(L1Loss, name="l1", description="torch L1Loss (+ valid_mask): mean absolute error")
register_loss(
    HuberLoss, name="huber", description="torch HuberLoss (+ valid_mask): quadratic near 0"
)
register_loss(
    BCEWithLogitsLoss,
    name="bce",
    description="torch BCEWithLogitsLoss (+ valid_mask): binary cross-entropy on logits",
)
register_loss(
    CrossEntropyLoss,
    name="ce",
    description="torch CrossEntropyLoss (+ valid_mask): softmax cross-entropy",
)


# -- segmentation_models_pytorch ---------------------------------------------------------------

#: registered name -> class name in ``segmentation_models_pytorch.losses``
SMP_LOSSES = {
    "smp.dice": "DiceLoss",
    "smp.focal": "FocalLoss",
    "smp.jaccard": "JaccardLoss",
    "smp.tversky": "TverskyLoss",
    "smp.lovasz": "LovaszLoss",
    "smp.mcc": "MCCLoss",
    "smp.soft_bce": "SoftBCEWithLogitsLoss",
    "smp.soft_ce": "SoftCrossEntropyLoss",
}
_MODELESS = ("MCCLoss", "SoftBCEWithLogitsLoss", "SoftCrossEntropyLoss")  # no ``mode`` argument


class SMPLoss(nn.Module):
    """A loss of ``segmentation_models_pytorch.losses`` that also takes ``valid_mask``.

    ``self.loss`` is the library object, built with the given keywords (``mode`` defaults to
    ``"binary"`` for the losses that take one); ``valid_mask=None`` calls it unchanged. With a
    mask, invalid pixels are marked by the loss's own ``ignore_index`` rule: the target is set to
    ``ignore_index`` there (``-100`` when the loss was built without one; a twin of the loss with
    that ``ignore_index`` does the masked calls). ``MCCLoss`` has no such rule: its four
    confusion sums run over the valid pixels only (it takes probabilities, as in smp).

    Shapes: as the smp loss: ``y_pred`` ``(N, C, H, W)``; ``y_true`` ``(N, C, H, W)`` (binary,
    multilabel) or ``(N, H, W)`` class indices (multiclass, ``SoftCrossEntropyLoss``);
    ``valid_mask`` bool broadcastable to ``y_pred``, one channel for class-index targets.
    """

    def __init__(self, class_name: str, **kwargs: Any) -> None:
        super().__init__()
        from segmentation_models_pytorch import losses as smp_losses

        if class_name not in SMP_LOSSES.values():
            raise ValueError(f"class_name must be one of {tuple(SMP_LOSSES.values())}")
        cls = getattr(smp_losses, class_name)
        if class_name not in _MODELESS:
            kwargs.setdefault("mode", "binary")
        self.class_name = class_name
        self.loss = cls(**kwargs)
        self.masked_loss: nn.Module | None = None
        # smp 0.6's FocalLoss indexes a 3-D class slice with the 4-D ignore mask in multilabel
        # mode (IndexError); its multilabel loss is the sum over classes of binary focal losses,
        # so masked calls go class by class through a binary twin.
        self._per_class = class_name == "FocalLoss" and kwargs.get("mode") == "multilabel"
        if self._per_class:
            kwargs = {**kwargs, "mode": "binary"}
        if class_name != "MCCLoss":
            if getattr(self.loss, "ignore_index", None) is None or self._per_class:
                self.masked_loss = cls(**{**kwargs, "ignore_index": IGNORE})
            else:
                self.masked_loss = self.loss

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if valid_mask is None:
            return self.loss(y_pred, y_true)
        if self.class_name == "MCCLoss":
            check_mask(valid_mask, y_pred, name="valid_mask", like_name="y_pred")
            return _masked_mcc(y_pred, y_true, valid_mask, self.loss.eps)
        assert self.masked_loss is not None
        if y_true.dim() == y_pred.dim():
            check_mask(valid_mask, y_pred, name="valid_mask", like_name="y_pred")
            valid = valid_mask
        else:
            valid = _index_mask(valid_mask, y_pred)
        ignore = self.masked_loss.ignore_index
        y_true = torch.where(valid, y_true, ignore)
        if self._per_class:
            return sum(
                self.masked_loss(y_pred[:, c : c + 1], y_true[:, c : c + 1])
                for c in range(y_pred.shape[1])
            )
        return self.masked_loss(y_pred, y_true)

    def __getattr__(self, name: str) -> Any:
        # The library object's attributes read through (``loss.mode``, ``loss.ignore_index``).
        try:
            return super().__getattr__(name)
        except AttributeError:
            loss = self._modules.get("loss")
            if loss is None:
                raise
            return getattr(loss, name)

    def extra_repr(self) -> str:
        return f"class_name={self.class_name!r}"


def _masked_mcc(
    y_pred: torch.Tensor, y_true: torch.Tensor, valid: torch.Tensor, eps: float
) -> torch.Tensor:
    """smp's ``MCCLoss`` (``1 - MCC`` of soft confusion sums) over the valid pixels only."""
    valid = valid.expand(y_pred.shape).to(y_pred.dtype)
    p = torch.where(valid > 0, y_pred, 0.0)
    t = torch.where(valid > 0, y_true.to(y_pred.dtype), 0.0)
    tp = (p * t).sum() + eps
    tn = ((1 - p) * (1 - t) * valid).sum() + eps
    fp = (p * (1 - t)).sum() + eps
    fn = ((1 - p) * t * valid).sum() + eps
    numerator = tp * tn - fp * fn
    denominator = torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 1.0 - numerator / denominator


def _register_smp(name: str, class_name: str) -> None:
    mode = "" if class_name in _MODELESS else " (mode='binary' default)"

    def factory(**kwargs: Any) -> SMPLoss:
        return SMPLoss(class_name, **kwargs)

    factory.__name__ = factory.__qualname__ = name.replace(".", "_")
    factory.__doc__ = f"segmentation_models_pytorch {class_name}{mode}, + valid_mask."
    register_loss(factory, name=name, description=f"segmentation_models_pytorch {class_name}{mode}")


for _name, _class_name in SMP_LOSSES.items():
    _register_smp(_name, _class_name)


# -- timm ----------------------------------------------------------------------------------------

#: ``timm.loss.create_classification_loss`` types registered as ``timm.<type>``
TIMM_LOSS_TYPES = ("ce", "bce", "poly", "jsd", "twoway", "zlpr", "db")
_MULTI_LABEL_ONLY = ("twoway", "zlpr", "db")


def _register_timm(loss_type: str) -> None:
    multi = loss_type in _MULTI_LABEL_ONLY

    def factory(**kwargs: Any) -> nn.Module:
        from timm.loss import create_classification_loss

        if multi:  # the only value timm accepts for these types
            kwargs.setdefault("multi_label", True)
        return create_classification_loss(loss_type, **kwargs)

    factory.__name__ = factory.__qualname__ = f"timm_{loss_type}"
    default = " (multi_label=True)" if multi else " (multi_label=False, timm's default)"
    factory.__doc__ = f"timm.loss.create_classification_loss({loss_type!r}, ...){default}."
    register_loss(
        factory,
        name=f"timm.{loss_type}",
        description=f"timm create_classification_loss type {loss_type!r}{default}",
    )


for _type in TIMM_LOSS_TYPES:
    _register_timm(_type)


@register_loss(
    name="timm.asl",
    description="timm AsymmetricLossMultiLabel: asymmetric focusing for multi-label logits",
)
def timm_asl(**kwargs: Any) -> nn.Module:
    from timm.loss import AsymmetricLossMultiLabel

    return AsymmetricLossMultiLabel(**kwargs)
