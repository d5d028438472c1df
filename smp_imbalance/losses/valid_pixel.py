"""Valid-pixel weighted losses for images with nodata (seed ``002``: Sentinel-2 L1C -> L2A).

Three registered names, thin modules over :mod:`smp_imbalance.losses.functional.masked`:

* ``valid_pixel`` -- :class:`ValidPixelWeightedLoss`, a base loss averaged over the valid pixels
  of each ``(sample, channel)`` (or sample) and weighted by ``(valid ratio) ** weight_power``;
* ``sam`` -- :class:`SpectralAngleLoss`, the spectral angle per valid pixel, same weighting per
  sample;
* ``sam_mse`` -- :class:`SAMMSELoss`, ``alpha * sam + beta * valid_pixel(mse)``.

Validity: the ``valid_mask`` passed to ``forward`` (bool, broadcastable to the target), else
every finite pixel of ``y_true``. A value rule applies only when asked for: with ``threshold=t``
a pixel is also invalid where ``y_true <= t`` (strict ``>``; ``threshold=0`` makes the
Sentinel-2 nodata value, DN 0, invalid, as the satellite recipes set it). There is no such rule
by default: on a standardised target it would silently drop about half of the pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from smp_imbalance.losses._checks import check_non_negative, check_positive
from smp_imbalance.losses.functional.masked import (
    ElementwiseLoss,
    check_options,
    sam_mse_loss,
    spectral_angle_loss,
    valid_pixel_loss,
)
from smp_imbalance.registry import register_loss

__all__ = ["SAMMSELoss", "SpectralAngleLoss", "ValidPixelWeightedLoss"]


@register_loss(name="valid_pixel")
class ValidPixelWeightedLoss(nn.Module):
    """Valid-pixel weighted loss: per-group mean over valid pixels, weighted by sqrt(valid ratio).

    For each group ``g`` (a ``(sample, channel)`` pair, or a sample with
    ``granularity="sample"``) holding ``n_g`` valid of ``T_g`` pixels::

        L_g = mean of base(y_pred, y_true) over the valid pixels of g
        w_g = (n_g / T_g) ** weight_power
        loss = sum_g w_g L_g / sum_g w_g          (groups with n_g > 0)

    ``weight_power=0.5`` (the seed's square root) sits between equal weight per group (0) and
    equal weight per valid pixel (1).

    Args:
        base: ``"mse"``, ``"l1"``, ``"huber"`` (uses ``delta``), ``"charbonnier"``
            (``sqrt(d^2 + eps^2)``), or a callable ``f(pred, target)`` returning the elementwise
            loss (same shape). A callable runs eagerly, never through the fused kernel; it is
            evaluated at ``(1, 1)`` on invalid pixels (result discarded), so it must be finite
            there.
        threshold: ``None`` (default): without ``valid_mask`` every finite pixel is valid.
            A number ``t``: without ``valid_mask`` a pixel is valid where ``y_true > t`` (and
            finite), e.g. ``threshold=0`` for Sentinel-2 DN where 0 is nodata. Ignored when a
            ``valid_mask`` is passed.
        weight_power: exponent of the valid ratio, ``>= 0``.
        granularity: ``"channel"`` or ``"sample"``.
        reduction: ``"mean"`` -- the weighted mean above (scalar); ``"sum"`` -- ``sum_g w_g L_g``
            (scalar); ``"none"`` -- ``(N,)``, the weighted mean over each sample's own groups.
            All-invalid input gives 0, attached to the graph.
        delta: Huber threshold, ``> 0``.
        eps: Charbonnier smoothing, ``> 0``.
        fused: opt-in fast path. ``False`` (default): plain eager autograd, no compilation
            (twice differentiable). ``True``: the named bases run through
            ``torch.compile(fullgraph=True)``'d forward and backward kernels (same values; about
            one pass over memory each; a one-time compile of seconds; once differentiable).
            Inside your own ``torch.compile`` region the plain maths is traced either way.

    Defaults: ``base="mse"``, no value rule (``threshold=None``), ``weight_power=0.5`` (the
    published square root), one group per ``(sample, channel)``, eager.

    Shape:
        ``y_pred``, ``y_true``: ``(N, C, *)`` floating point, identical shapes;
        ``valid_mask``: optional bool, broadcastable to ``y_true`` (e.g. ``(N, 1, H, W)``).
        Output float32 (float64 for float64 input; float16/bfloat16 are computed in float32).
    """

    def __init__(
        self,
        base: str | ElementwiseLoss = "mse",
        *,
        threshold: float | None = None,
        weight_power: float = 0.5,
        granularity: str = "channel",
        reduction: str = "mean",
        delta: float = 1.0,
        eps: float = 1e-3,
        fused: bool = False,
    ) -> None:
        super().__init__()
        check_options(
            weight_power=weight_power,
            reduction=reduction,
            threshold=threshold,
            granularity=granularity,
            base=base,
        )
        self.base = base
        self.threshold = None if threshold is None else float(threshold)
        self.weight_power = float(weight_power)
        self.granularity = granularity
        self.reduction = reduction
        self.delta = check_positive("delta", delta)
        self.eps = check_positive("eps", eps)
        self.fused = bool(fused)

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return valid_pixel_loss(
            y_pred,
            y_true,
            valid_mask,
            base=self.base,
            threshold=self.threshold,
            weight_power=self.weight_power,
            granularity=self.granularity,
            reduction=self.reduction,
            delta=self.delta,
            eps=self.eps,
            fused=self.fused,
        )

    def extra_repr(self) -> str:
        base = self.base if isinstance(self.base, str) else getattr(self.base, "__name__", "fn")
        return (
            f"base={base!r}, threshold={self.threshold}, weight_power={self.weight_power}, "
            f"granularity={self.granularity!r}, reduction={self.reduction!r}"
        )


@register_loss(name="sam")
class SpectralAngleLoss(nn.Module):
    """Spectral angle between prediction and target over valid pixels, valid-ratio weighted.

    At each pixel the angle (radians, ``[0, pi]``) between the vectors ``y_pred[n, :, i]`` and
    ``y_true[n, :, i]`` across channels; a pixel counts when it is valid in every channel. Each
    sample is one group: ``L_n`` = mean angle over its valid pixels, ``w_n = (n_n / T) **
    weight_power`` with ``T`` pixels per sample, ``loss = sum_n w_n L_n / sum_n w_n``.

    The angle is ``2 * atan2(|u - v|, |u + v|)`` of the ``eps``-safe unit vectors (see
    :func:`~smp_imbalance.losses.functional.masked.spectral_angle`): value and gradient are
    finite for identical vectors (angle 0) and zero vectors (angle ``pi / 2``).

    Args:
        threshold, weight_power, reduction, fused: as in :class:`ValidPixelWeightedLoss`
            (``"none"`` gives the per-sample mean angle, ``(N,)``).
        eps: norms below ``eps`` are taken as ``eps``, ``> 0``.

    Defaults: no value rule (``threshold=None``: every finite pixel is valid without a
    ``valid_mask``), ``weight_power=0.5``, ``eps=1e-8``, eager.

    Shape:
        ``(N, C, *)`` with ``C >= 2``; ``valid_mask`` as in :class:`ValidPixelWeightedLoss`.
    """

    def __init__(
        self,
        *,
        threshold: float | None = None,
        weight_power: float = 0.5,
        reduction: str = "mean",
        eps: float = 1e-8,
        fused: bool = False,
    ) -> None:
        super().__init__()
        check_options(weight_power=weight_power, reduction=reduction, threshold=threshold)
        self.threshold = None if threshold is None else float(threshold)
        self.weight_power = float(weight_power)
        self.reduction = reduction
        self.eps = check_positive("eps", eps)
        self.fused = bool(fused)

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return spectral_angle_loss(
            y_pred,
            y_true,
            valid_mask,
            threshold=self.threshold,
            weight_power=self.weight_power,
            reduction=self.reduction,
            eps=self.eps,
            fused=self.fused,
        )

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, weight_power={self.weight_power}, "
            f"reduction={self.reduction!r}"
        )


@register_loss(name="sam_mse")
class SAMMSELoss(nn.Module):
    """``alpha * SAM + beta * valid-pixel weighted MSE``, both from one pass over the inputs.

    The two terms are :class:`SpectralAngleLoss` and :class:`ValidPixelWeightedLoss` with
    ``base="mse"``, sharing ``threshold``, ``weight_power``, ``reduction`` and ``valid_mask``;
    ``granularity`` applies to the MSE term. The terms have different units (radians vs squared
    target units): choose ``alpha`` and ``beta`` for the scale of your data.

    Args:
        alpha: weight of the spectral angle, ``>= 0``.
        beta: weight of the MSE, ``>= 0``; ``alpha`` and ``beta`` are not both 0.
        threshold, weight_power, granularity, reduction, fused: as in
            :class:`ValidPixelWeightedLoss`.
        eps: as in :class:`SpectralAngleLoss`.

    Defaults: ``alpha = beta = 1``, no value rule (``threshold=None``), ``weight_power=0.5``,
    one MSE group per ``(sample, channel)``, eager.

    Shape:
        as :class:`SpectralAngleLoss`: ``(N, C, *)`` with ``C >= 2``, ``valid_mask`` optional.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        *,
        threshold: float | None = None,
        weight_power: float = 0.5,
        granularity: str = "channel",
        reduction: str = "mean",
        eps: float = 1e-8,
        fused: bool = False,
    ) -> None:
        super().__init__()
        check_options(
            weight_power=weight_power,
            reduction=reduction,
            threshold=threshold,
            granularity=granularity,
        )
        self.alpha = check_non_negative("alpha", alpha)
        self.beta = check_non_negative("beta", beta)
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta are both 0: the loss would be identically 0")
        self.threshold = None if threshold is None else float(threshold)
        self.weight_power = float(weight_power)
        self.granularity = granularity
        self.reduction = reduction
        self.eps = check_positive("eps", eps)
        self.fused = bool(fused)

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return sam_mse_loss(
            y_pred,
            y_true,
            valid_mask,
            alpha=self.alpha,
            beta=self.beta,
            threshold=self.threshold,
            weight_power=self.weight_power,
            granularity=self.granularity,
            reduction=self.reduction,
            eps=self.eps,
            fused=self.fused,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, threshold={self.threshold}, "
            f"weight_power={self.weight_power}, granularity={self.granularity!r}, "
            f"reduction={self.reduction!r}"
        )
