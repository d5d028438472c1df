"""Masked and imbalance-aware metrics as torchmetrics ``Metric`` classes, with functional forms.

* Detector frames (sparse hits): :class:`DetectorHitMetrics`.
* Multispectral rasters with nodata: :class:`MaskedPSNR`, :class:`MaskedRMSE`,
  :class:`MaskedSSIM`, :class:`MaskedSAM`, and :func:`band_report` for a per-band dict.
* Multi-label classification: :class:`MultilabelF1`, :class:`MultilabelMAP`, and
  :func:`~smp_imbalance.metrics.functional.tune_thresholds` for per-label thresholds.

Every class keeps tensor states reduced across processes with ``"sum"`` (``MultilabelMAP`` with
``thresholds=None`` keeps torchmetrics' concatenated lists), and ``update`` makes no host sync
(except ``MultilabelMAP``, whose torchmetrics parent checks the value range of ``preds``). When
nothing was counted a metric returns its ``zero_division`` value (default 0), never NaN, and
values at invalid pixels never reach a result.
"""

try:  # the [metrics] extra
    import torchmetrics  # noqa: F401
except ModuleNotFoundError as _err:
    from smp_imbalance._extras import missing_extra

    raise missing_extra(_err, "smp_imbalance.metrics", "metrics") from _err

from smp_imbalance.metrics import functional
from smp_imbalance.metrics.detector import DetectorHitMetrics
from smp_imbalance.metrics.functional import (
    cross_fitted_f1,
    detector_hit_metrics,
    masked_psnr,
    masked_rmse,
    masked_sam,
    masked_ssim,
    masked_ssim_map,
    multilabel_f1,
    tune_thresholds,
)
from smp_imbalance.metrics.multilabel import MultilabelF1, MultilabelMAP
from smp_imbalance.metrics.satellite import (
    MaskedPSNR,
    MaskedRMSE,
    MaskedSAM,
    MaskedSSIM,
    band_report,
)

__all__ = [
    "DetectorHitMetrics",
    "MaskedPSNR",
    "MaskedRMSE",
    "MaskedSAM",
    "MaskedSSIM",
    "MultilabelF1",
    "MultilabelMAP",
    "band_report",
    "cross_fitted_f1",
    "detector_hit_metrics",
    "functional",
    "masked_psnr",
    "masked_rmse",
    "masked_sam",
    "masked_ssim",
    "masked_ssim_map",
    "multilabel_f1",
    "tune_thresholds",
]
