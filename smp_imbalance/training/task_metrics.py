"""Validation metrics of the dense task, fed from our datasets' batch dicts.

Each family is an ``nn.Module`` holding torchmetrics ``Metric``s (so Lightning moves them to the
device and the metrics reduce their states across processes) with ``update(pred, batch)``,
``compute() -> {name: 0-dim tensor}`` including a ``score`` (the task's main metric, higher is
better, monitored by the checkpoint callback) and ``reset()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from smp_imbalance.metrics import (
    DetectorHitMetrics,
    MaskedPSNR,
    MaskedRMSE,
    MaskedSAM,
    MaskedSSIM,
)


class DetectorMetrics(nn.Module):
    """Hit metrics of denoised frames; ``score`` = harmonic mean of signal retention and noise
    removal (both must be high: keeping everything or removing everything scores 0)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.hits = DetectorHitMetrics(**kwargs)

    def update(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.hits.update(
            pred,
            batch["target"],
            noise_mask=batch.get("noise_mask"),
            signal_mask=batch.get("signal_mask"),
        )

    def compute(self) -> dict[str, torch.Tensor]:
        values = dict(self.hits.compute())
        r, n = values["signal_retention"], values["noise_removal"]
        values["score"] = torch.where(
            r + n > 0, 2 * r * n / (r + n).clamp_min(1e-12), r.new_zeros(())
        )
        return values

    def reset(self) -> None:
        self.hits.reset()


class SatelliteMetrics(nn.Module):
    """Masked PSNR / RMSE / SSIM per band and SAM on valid pixels; ``score`` = mean band PSNR."""

    def __init__(
        self, num_bands: int, band_names: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__()
        if band_names is not None and len(band_names) != num_bands:
            raise ValueError(
                f"metric_kwargs.band_names has {len(band_names)} names for {num_bands} output bands"
            )
        self.band_names = list(band_names) if band_names else [f"band{i}" for i in range(num_bands)]
        data_range = kwargs.pop("data_range", 1.0)
        self.psnr = MaskedPSNR(data_range=data_range, num_bands=num_bands, per_band=True)
        self.rmse = MaskedRMSE(num_bands=num_bands, per_band=True)
        self.ssim = MaskedSSIM(data_range=data_range, num_bands=num_bands, per_band=True)
        self.sam = MaskedSAM(num_bands=num_bands) if num_bands >= 2 else None

    def update(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        target, mask = batch["target"], batch["valid_mask"]
        for metric in (self.psnr, self.rmse, self.ssim):
            metric.update(pred, target, mask)
        if self.sam is not None:
            self.sam.update(pred, target, mask)

    def compute(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, metric in (("psnr", self.psnr), ("rmse", self.rmse), ("ssim", self.ssim)):
            per_band = metric.compute().reshape(-1)  # (C,); a single band may come back 0-dim
            for band, value in zip(self.band_names, per_band, strict=True):
                out[f"{name}_{band}"] = value
            out[name] = per_band.mean()
        if self.sam is not None:
            out["sam"] = self.sam.compute()
        out["score"] = out["psnr"]
        return out

    def reset(self) -> None:
        for metric in (self.psnr, self.rmse, self.ssim, self.sam):
            if metric is not None:
                metric.reset()


class _ConfusionStats(Metric):
    """tp/fp/fn/tn per class from ``segmentation_models_pytorch.metrics.get_stats``, summed."""

    full_state_update = False

    def __init__(self, mode: str, num_classes: int, threshold: float = 0.5) -> None:
        super().__init__()
        self.mode, self.num_classes, self.threshold = mode, num_classes, threshold
        width = 1 if mode == "binary" else num_classes
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, torch.zeros(width, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        from segmentation_models_pytorch.metrics import get_stats

        if self.mode == "multiclass":
            stats = get_stats(
                logits.argmax(1), target.long(), mode="multiclass", num_classes=self.num_classes
            )
        else:
            stats = get_stats(
                logits.sigmoid(), target.long(), mode=self.mode, threshold=self.threshold
            )
        for name, value in zip(("tp", "fp", "fn", "tn"), stats, strict=True):
            setattr(self, name, getattr(self, name) + value.sum(0))

    def compute(self) -> tuple[torch.Tensor, ...]:
        return self.tp, self.fp, self.fn, self.tn


class SegmentationMetrics(nn.Module):
    """IoU and F1 through ``smp.metrics`` (micro over pixels and macro over classes);
    ``score`` = macro IoU."""

    def __init__(self, mode: str, num_classes: int, threshold: float = 0.5) -> None:
        super().__init__()
        self.stats = _ConfusionStats(mode, num_classes, threshold)

    def update(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        self.stats.update(pred, batch["target"])

    def compute(self) -> dict[str, torch.Tensor]:
        from segmentation_models_pytorch.metrics import f1_score, iou_score

        tp, fp, fn, tn = (s[None] for s in self.stats.compute())
        return {
            "iou_micro": iou_score(tp, fp, fn, tn, reduction="micro"),
            "iou_macro": iou_score(tp, fp, fn, tn, reduction="macro"),
            "f1_macro": f1_score(tp, fp, fn, tn, reduction="macro"),
            "score": iou_score(tp, fp, fn, tn, reduction="macro"),
        }

    def reset(self) -> None:
        self.stats.reset()


def build_dense_metrics(family: str, *, task: str, classes: int, **kwargs: Any) -> nn.Module:
    """The metrics module of ``family`` (``detector``, ``satellite`` or ``segmentation``)."""
    if family == "detector":
        return DetectorMetrics(**kwargs)
    if family == "satellite":
        return SatelliteMetrics(num_bands=classes, **kwargs)
    if family == "segmentation":
        if task == "regression":
            raise ValueError("model.metrics='segmentation' needs task binary/multiclass/multilabel")
        return SegmentationMetrics(task, classes, **kwargs)
    raise ValueError(f"unknown metrics family {family!r}")
