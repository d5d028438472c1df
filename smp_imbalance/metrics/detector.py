"""Hit-level metrics for denoised sparse detector frames (seed ``000``, ACB-MSE)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from smp_imbalance.metrics.functional import (
    DEFAULT_HIT_THRESHOLD,
    DEFAULT_TIME_TOLERANCE,
    TimeBinFn,
    _check_hit_threshold,
    _check_time_tolerance,
    _check_zero_division,
    _detector_compute,
    _detector_update,
)

__all__ = ["DetectorHitMetrics"]

_COUNTS = (
    "true_hits",
    "retained",
    "kept_hits",
    "kept_retained",
    "noise_hits",
    "noise_removed",
    "false_hits",
    "frames",
    "time_matched",
    "no_hits",
)
_SUMS = ("sq_err_hit", "sq_err_nohit")


class DetectorHitMetrics(Metric):
    """Signal retention, noise removal, false hits, time recovery and hit / no-hit MSE.

    One metric returning a dict, because all quantities come from the same pass over the frames
    (see :func:`~smp_imbalance.metrics.functional.detector_hit_metrics` for the definitions and
    the defaults of ``hit_threshold`` and ``time_tolerance``). States are int64 counts and float
    squared-error sums, pooled over every frame seen and reduced across processes with ``sum``.

    ``update(preds, target, *, noise_mask=None, signal_mask=None)``: ``(N, 1, H, W)`` float
    frames and optional bool masks of the same shape (the detector dataset's batch keys).

    ``compute()`` returns ``{"signal_retention", "kept_signal_retention", "noise_removal",
    "false_hits_per_frame", "time_recovery", "mse_hit", "mse_nohit"}`` (0-dim float tensors);
    a ratio whose denominator stayed 0 -- e.g. ``noise_removal`` when no ``noise_mask`` was given,
    or everything before any update -- is ``zero_division`` (default 0).
    """

    is_differentiable = False
    higher_is_better = None  # mixed: retention up, false hits and MSE down
    full_state_update = False

    def __init__(
        self,
        hit_threshold: float = DEFAULT_HIT_THRESHOLD,
        time_tolerance: float = DEFAULT_TIME_TOLERANCE,
        to_time_bin: TimeBinFn | None = None,
        zero_division: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.hit_threshold = _check_hit_threshold(hit_threshold)
        self.time_tolerance = _check_time_tolerance(time_tolerance)
        if to_time_bin is not None and not callable(to_time_bin):
            raise TypeError(f"to_time_bin must be callable, got {type(to_time_bin).__name__}")
        self.to_time_bin = to_time_bin
        self.zero_division = _check_zero_division(zero_division)
        for name in _COUNTS:
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        for name in _SUMS:
            self.add_state(name, torch.zeros(()), dist_reduce_fx="sum")

    def update(
        self,
        preds: torch.Tensor,
        target: torch.Tensor,
        *,
        noise_mask: torch.Tensor | None = None,
        signal_mask: torch.Tensor | None = None,
    ) -> None:
        sums = _detector_update(
            preds,
            target,
            noise_mask,
            signal_mask,
            self.hit_threshold,
            self.time_tolerance,
            self.to_time_bin,
        )
        for name, value in sums.items():
            state = getattr(self, name)
            setattr(self, name, state + value.to(state.dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        sums = {name: getattr(self, name) for name in (*_COUNTS, *_SUMS)}
        return _detector_compute(sums, self.zero_division)
