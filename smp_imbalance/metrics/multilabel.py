"""Multi-label F1 (global or per-label thresholds) and mean average precision (seed ``003``)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import MultilabelAveragePrecision

from smp_imbalance.metrics.functional import (
    _as_thresholds,
    _check_average,
    _check_multilabel,
    _check_zero_division,
    _f1_compute,
    _f1_update,
    _safe_ratio,
)

__all__ = ["MultilabelF1", "MultilabelMAP"]


def _check_num_labels(num_labels: int) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
    return num_labels


class MultilabelF1(Metric):
    """Macro or per-label F1 ``2 TP / (2 TP + FP + FN)`` with a global or per-label threshold.

    States: ``tp``, ``fp``, ``fn`` int64 ``(C,)``, summed over batches and processes, so the
    result is F1 over the whole split (not a mean of batch F1s).

    Args:
        num_labels: ``C``.
        threshold: a float, or a ``(C,)`` tensor (e.g. from
            :func:`~smp_imbalance.metrics.functional.tune_thresholds`); label ``c`` is predicted
            when ``prob > threshold[c]``.
        average: ``"macro"`` -> 0-dim; ``"none"`` -> ``(C,)``.
        ignore_absent: skip labels with no positive target and no positive prediction in the
            whole split (their F1 is 0 / 0) in the macro mean. ``False`` (default) scores them
            ``zero_division`` = 0, as torchmetrics' ``MultilabelF1Score(average="macro")`` and the
            HPA competition (macro F1 over all 28 labels).
        from_logits: apply a sigmoid to ``preds`` first.
        zero_division: F1 of an absent label; also the macro value if every label is ignored.

    ``update(preds, target)``: ``preds`` ``(N, C)`` float, ``target`` ``(N, C)`` multi-hot.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    threshold: torch.Tensor

    def __init__(
        self,
        num_labels: int,
        threshold: float | torch.Tensor = 0.5,
        average: str | None = "macro",
        ignore_absent: bool = False,
        from_logits: bool = False,
        zero_division: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_labels = _check_num_labels(num_labels)
        self.register_buffer("threshold", _as_thresholds(threshold, num_labels), persistent=False)
        self.average = _check_average(average)
        self.ignore_absent = bool(ignore_absent)
        self.from_logits = bool(from_logits)
        self.zero_division = _check_zero_division(zero_division)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, positive = _check_multilabel(preds, target, self.num_labels)
        tp, fp, fn = _f1_update(preds, positive, self.threshold, self.from_logits)
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn

    def compute(self) -> torch.Tensor:
        return _f1_compute(
            self.tp, self.fp, self.fn, self.average, self.ignore_absent, self.zero_division
        )


class MultilabelMAP(MultilabelAveragePrecision):
    """Mean average precision over labels, with an explicit policy for labels absent from the split.

    A thin layer over torchmetrics' ``MultilabelAveragePrecision`` (exact AP with
    ``thresholds=None``: list states concatenated across processes; an int/list/tensor of
    thresholds gives a fixed-size binned state summed instead). What it changes:

    * **Absent labels** (no positive target in the split): torchmetrics warns "No positive samples
      found in target, recall is undefined" and scores their AP as 0, and its macro average keeps
      that 0. Here their AP is ``zero_division`` (default 0, so ``average="none"`` agrees with
      torchmetrics) and ``ignore_absent=True`` drops them from the macro mean; the warning is
      silenced because the case is handled. With ``ignore_absent=False`` the macro value is
      torchmetrics'.
    * ``from_logits`` is explicit (sigmoid first) instead of guessed from the value range.

    ``update(preds, target)``: ``preds`` ``(N, C)`` float, ``target`` ``(N, C)`` multi-hot (int or
    bool; float ``> 0.5``). Note that torchmetrics' input formatting in ``update`` checks the
    value range of ``preds`` (one host sync per batch); ``validate_args=False`` skips its other
    checks. ``compute()``: 0-dim (``"macro"``) or ``(C,)`` (``"none"``); ``zero_division`` if every
    label is absent and ignored.
    """

    def __init__(
        self,
        num_labels: int,
        average: str | None = "macro",
        thresholds: int | list[float] | torch.Tensor | None = None,
        ignore_absent: bool = False,
        from_logits: bool = False,
        zero_division: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            num_labels=_check_num_labels(num_labels),
            average="none",
            thresholds=thresholds,
            **kwargs,
        )
        self.map_average = _check_average(average)
        self.ignore_absent = bool(ignore_absent)
        self.from_logits = bool(from_logits)
        self.zero_division = _check_zero_division(zero_division)
        self.add_state("positives", torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, positive = _check_multilabel(preds, target, self.num_labels)
        if self.from_logits:
            preds = preds.sigmoid()
        self.positives = self.positives + positive.sum(0, dtype=torch.long)
        super().update(preds, positive.long())

    def compute(self) -> torch.Tensor:
        if self._update_count == 0:  # torchmetrics cannot concatenate empty list states
            empty = torch.full((self.num_labels,), self.zero_division, device=self.device)
            return empty if self.map_average == "none" else empty[0]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            ap = super().compute()
        present = self.positives > 0
        ap = torch.where(present, ap, self.zero_division)
        if self.map_average == "none":
            return ap
        weight = present.to(ap.dtype) if self.ignore_absent else torch.ones_like(ap)
        return _safe_ratio((weight * ap).sum(), weight.sum(), self.zero_division)
