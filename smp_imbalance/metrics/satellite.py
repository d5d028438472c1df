"""Masked per-band image metrics for multispectral rasters with nodata (seed ``002``).

torchmetrics' image metrics take no mask (and its ``SpectralAngleMapper`` is NaN on an all-zero
pixel), so these keep their own sufficient statistics over the valid pixels. Every class takes
``update(preds, target, valid_mask)`` with ``preds``, ``target`` float ``(N, C, H, W)`` and
``valid_mask`` bool ``(N, 1 or C, H, W)``; values at invalid pixels never matter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric

from smp_imbalance.metrics.functional import (
    _check_data_range,
    _check_images,
    _check_ssim_args,
    _check_zero_division,
    _psnr_compute,
    _rmse_compute,
    _safe_ratio,
    _sam_update,
    _squared_error_update,
    _ssim_update,
)

__all__ = ["MaskedPSNR", "MaskedRMSE", "MaskedSAM", "MaskedSSIM", "band_report"]


class _BandSumMetric(Metric):
    """A ``(numerator, valid count)`` pair of states, per band (``(C,)``) when ``num_bands`` is
    known, else pooled (0-dim). ``per_band=True`` needs ``num_bands``."""

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        num_bands: int | None = None,
        per_band: bool = False,
        zero_division: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_bands is not None and (
            isinstance(num_bands, bool) or not isinstance(num_bands, int) or num_bands < 1
        ):
            raise ValueError(f"num_bands must be a positive int, got {num_bands!r}")
        if per_band and num_bands is None:
            raise ValueError("per_band=True needs num_bands (the size of the per-band states)")
        self.num_bands = num_bands
        self.per_band = bool(per_band)
        self.zero_division = _check_zero_division(zero_division)
        shape = () if num_bands is None else (num_bands,)
        self.add_state("total", torch.zeros(shape), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, total: torch.Tensor, count: torch.Tensor) -> None:
        if self.num_bands is None:
            total, count = total.sum(-1), count.sum(-1)
        self.total = self.total + total.to(self.total.dtype)
        self.count = self.count + count

    def _pooled(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_band or self.total.dim() == 0:
            return self.total, self.count
        return self.total.sum(-1), self.count.sum(-1)


class MaskedPSNR(_BandSumMetric):
    """PSNR ``10 log10(data_range^2 / MSE)`` over valid pixels.

    ``MSE`` is the squared error summed over all valid pixels seen, divided by their number --
    pooled over the whole run (and over bands unless ``per_band``), like torchmetrics'
    ``PeakSignalNoiseRatio`` default reduction, not a mean of per-image PSNRs.

    ``compute()``: 0-dim, or ``(C,)`` with ``per_band=True``; ``+inf`` for a zero error,
    ``zero_division`` (default 0) where no pixel was valid.
    """

    higher_is_better = True

    def __init__(
        self,
        data_range: float = 1.0,
        num_bands: int | None = None,
        per_band: bool = False,
        zero_division: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(num_bands, per_band, zero_division, **kwargs)
        self.data_range = _check_data_range(data_range)

    def update(self, preds: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> None:
        self._accumulate(
            *_squared_error_update(*_check_images(preds, target, valid_mask, self.num_bands))
        )

    def compute(self) -> torch.Tensor:
        return _psnr_compute(*self._pooled(), self.data_range, self.zero_division)


class MaskedRMSE(_BandSumMetric):
    """``sqrt(MSE)`` over valid pixels, ``MSE`` pooled as in :class:`MaskedPSNR`.

    ``compute()``: 0-dim, or ``(C,)`` with ``per_band=True``; ``zero_division`` where no pixel
    was valid.
    """

    higher_is_better = False

    def update(self, preds: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> None:
        self._accumulate(
            *_squared_error_update(*_check_images(preds, target, valid_mask, self.num_bands))
        )

    def compute(self) -> torch.Tensor:
        return _rmse_compute(*self._pooled(), self.zero_division)


class MaskedSSIM(_BandSumMetric):
    """Gaussian-window SSIM with local statistics over valid pixels only.

    Each valid pixel whose window has at least ``min_valid_fraction`` of its Gaussian weight on
    valid pixels contributes its SSIM (see
    :func:`~smp_imbalance.metrics.functional.masked_ssim_map` for the formula); ``compute()``
    is the mean over all contributing pixels seen (over bands too unless ``per_band``). With an
    all-valid mask this is torchmetrics' ``StructuralSimilarityIndexMeasure`` (Gaussian kernel,
    ``elementwise_mean``) for equally sized images.

    ``compute()``: 0-dim, or ``(C,)`` with ``per_band=True``; ``zero_division`` where no pixel
    contributed.
    """

    higher_is_better = True

    def __init__(
        self,
        data_range: float = 1.0,
        num_bands: int | None = None,
        per_band: bool = False,
        sigma: float = 1.5,
        k1: float = 0.01,
        k2: float = 0.03,
        min_valid_fraction: float = 0.5,
        zero_division: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(num_bands, per_band, zero_division, **kwargs)
        _check_ssim_args(sigma, min_valid_fraction)
        self.data_range = _check_data_range(data_range)
        self.sigma, self.k1, self.k2 = float(sigma), float(k1), float(k2)
        self.min_valid_fraction = float(min_valid_fraction)

    def update(self, preds: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> None:
        _check_images(preds, target, valid_mask, self.num_bands)
        self._accumulate(
            *_ssim_update(
                preds,
                target,
                valid_mask,
                self.data_range,
                self.sigma,
                self.k1,
                self.k2,
                self.min_valid_fraction,
            )
        )

    def compute(self) -> torch.Tensor:
        return _safe_ratio(*self._pooled(), self.zero_division)


class MaskedSAM(Metric):
    """Mean spectral angle (radians) over the pixels valid in every band.

    The angle is taken across bands, so there is no per-band value. At a zero vector the angle is
    ``pi / 2`` (one of prediction / target is zero) or 0 (both are); elsewhere it is torchmetrics'
    ``SpectralAngleMapper``. ``compute()``: 0-dim; ``zero_division`` (default 0) if no pixel
    was valid.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = math.pi

    def __init__(self, num_bands: int | None = None, zero_division: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_bands is not None and (
            isinstance(num_bands, bool) or not isinstance(num_bands, int) or num_bands < 2
        ):
            raise ValueError(f"num_bands must be an int >= 2, got {num_bands!r}")
        self.num_bands = num_bands
        self.zero_division = _check_zero_division(zero_division)
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> None:
        total, count = _sam_update(*_check_images(preds, target, valid_mask, self.num_bands))
        self.total = self.total + total.to(self.total.dtype)
        self.count = self.count + count

    def compute(self) -> torch.Tensor:
        return _safe_ratio(self.total, self.count, self.zero_division)


def band_report(
    values: Mapping[str, torch.Tensor | float], band_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{metric: (C,) or scalar}`` -> ``{band: {metric: float}}`` (the seed's report layout).

    A ``(C,)`` value is split over the bands in order; a scalar (0-dim tensor or float, e.g. the
    cross-band SAM) is repeated in every band. Typical use::

        metrics = MetricCollection({
            "psnr": MaskedPSNR(num_bands=3, per_band=True),
            "rmse": MaskedRMSE(num_bands=3, per_band=True),
            "ssim": MaskedSSIM(num_bands=3, per_band=True),
            "sam": MaskedSAM(),
        })
        ...
        band_report(metrics.compute(), ["B02", "B03", "B04"])
        # {'B02': {'psnr': 38.0, 'rmse': 0.0126, 'ssim': 0.90, 'sam': 0.042}, ...}
    """
    names = list(band_names)
    if len(set(names)) != len(names):
        raise ValueError(f"band_names must be unique, got {names}")
    report: dict[str, dict[str, float]] = {name: {} for name in names}
    for key, value in values.items():
        v = torch.as_tensor(value).detach().cpu()
        if v.dim() == 0:
            per_band = [float(v)] * len(names)
        elif v.shape == (len(names),):
            per_band = v.tolist()
        else:
            raise ValueError(
                f"{key!r} has shape {tuple(v.shape)}; expected a scalar or one value per band "
                f"({len(names)} band names: {names})"
            )
        for name, x in zip(names, per_band, strict=True):
            report[name][key] = float(x)
    return report
