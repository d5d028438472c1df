"""ACB-MSE: automatic class-balanced mean squared error for sparse frames (hit / no-hit pixels)."""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from smp_imbalance.losses._checks import (
    check_choice,
    check_mask,
    check_non_negative,
    check_reduction,
    check_same_shape,
    check_tensor,
    compute_dtype,
)
from smp_imbalance.losses.functional.acb import POOLINGS, acb_mse, acb_mse_fused
from smp_imbalance.registry import register_loss

__all__ = ["ACBMSELoss"]


@register_loss(name="acb_mse")
class ACBMSELoss(nn.Module):
    """Automatic class-balanced MSE for sparse frames (hit / no-hit pixels).

    The target's pixels are split into classes by magnitude -- by default "no hit"
    (``|t| <= zero_tolerance``) and "hit" -- and each class contributes the mean squared error
    over its own pixels, so a handful of hits weighs as much as the empty background::

        loss = sum_k w_k * sum_{i in class k} (y_pred_i - y_true_i)^2 / max(n_k, 1)

    With two classes ``w = (zero_weighting, nonzero_weighting)``. A class with no pixel
    contributes exactly 0. Only valid pixels belong to a class: those where ``valid_mask`` is
    ``True``, or, without a ``valid_mask``, every pixel whose ``y_true`` is finite (a NaN or
    infinite target pixel is left out, so it cannot poison the loss; a non-finite ``y_pred``
    is never left out, so a diverging model gives a non-finite loss).

    By default (``pooling="batch"``) the classes are pooled over the whole batch and the result
    equals ``acb_mse.ACBLoss`` (the published package, 1.0.6) wherever that package returns a
    tensor from finite inputs. It differs on purpose where the package is wrong:

    * NaN in ``y_pred`` gives a NaN loss, and so does NaN in ``y_true`` at a pixel that a
      ``valid_mask`` marks valid (the package silently drops the whole class term, hiding a
      diverged model); without a ``valid_mask`` a non-finite target pixel is ignored;
    * an empty input raises ``ValueError`` (the package returns the Python int 0);
    * the result is always a floating-point tensor attached to the graph (the package can return
      the int 0, on which ``backward`` fails);
    * float16/bfloat16 inputs are computed and returned in float32 (the package returns a
      half-precision result, rounded to about 3 significant digits).

    Args:
        zero_weighting: weight of the "no hit" class (class 0).
        nonzero_weighting: weight of the "hit" class; with ``class_boundaries`` and no
            ``class_weights``, the weight of every class above class 0.
        zero_tolerance: ``|t| <= zero_tolerance`` counts as "no hit" (default 0: exact zeros).
            The same as ``class_boundaries=[zero_tolerance]``; give one or the other, or equal
            values.
        class_boundaries: ascending, non-negative edges ``b`` of bins of ``|y_true|`` for more
            than two classes: class 0 is ``|t| <= b[0]``, class ``k`` is
            ``b[k-1] < |t| <= b[k]``, the last class is ``|t| > b[-1]``.
        class_weights: one non-negative weight per class (``len(class_boundaries) + 1``). With
            two classes it may replace ``zero_weighting``/``nonzero_weighting`` (leave those at
            1 or give the same values); with more, those two must stay at their default of 1.
        pooling: ``"batch"`` balances the classes over all pixels of the batch (one number for
            the batch, as the original); ``"sample"`` balances each sample on its own, so a frame
            with few hits counts as much as a crowded one.
        reduction: with ``pooling="sample"``: ``"mean"`` (over the ``N`` samples; a sample
            with no valid pixel contributes 0), ``"sum"`` or ``"none"`` (shape ``(N,)``).
            With ``pooling="batch"`` only ``"mean"`` is accepted: the batch-pooled loss is one
            statistic of the whole batch and has no per-sample values (its class means mix
            samples), so ``"sum"``/``"none"`` raise ``ValueError`` pointing to
            ``pooling="sample"``.
        fused: opt-in fast path (default ``False``: plain eager tensor maths, no compilation,
            twice differentiable). ``True`` runs the forward and the hand-written backward
            (see :mod:`smp_imbalance.losses.functional.acb`) through
            ``torch.compile(fullgraph=True)``: the same values, a one-time compile of seconds
            on first call, then faster (see BENCHMARKS.md).

    Defaults: two classes split at exact zero (``zero_tolerance=0``), equal weights 1,
    ``pooling="batch"`` (the published package's behaviour), every finite target pixel valid,
    eager.

    Shapes:
        ``y_pred``: ``(N, *)``, e.g. ``(N, C, H, W)``, floating point (float16/bfloat16 are
        computed in float32, float64 stays float64). ``y_true``: the same shape, floating point
        or integer (gradient only for floating point). ``valid_mask``: optional bool,
        broadcastable to ``y_true`` (e.g. ``(N, 1, H, W)``); ``None`` counts every pixel whose
        ``y_true`` is finite.
        Output: scalar, or ``(N,)`` with ``pooling="sample", reduction="none"``; float32 or
        float64.

    ``forward(y_pred, y_true, valid_mask=None)`` is the calling convention of every dense loss
    in this package; the old keyword ``mask=`` still works for one release with a
    ``DeprecationWarning``.
    """

    def __init__(
        self,
        zero_weighting: float = 1.0,
        nonzero_weighting: float = 1.0,
        zero_tolerance: float | None = None,
        class_boundaries: Sequence[float] | None = None,
        class_weights: Sequence[float] | None = None,
        pooling: str = "batch",
        reduction: str = "mean",
        fused: bool = False,
    ) -> None:
        super().__init__()
        check_choice("pooling", pooling, POOLINGS)
        check_reduction(reduction)
        if pooling == "batch" and reduction != "mean":
            raise ValueError(
                f"reduction={reduction!r} needs pooling='sample': with pooling='batch' the "
                "classes are pooled over the whole batch and the loss is one number (use "
                "reduction='mean')"
            )
        zero_weighting = _finite_non_negative("zero_weighting", zero_weighting)
        nonzero_weighting = _finite_non_negative("nonzero_weighting", nonzero_weighting)
        boundaries = _boundaries(zero_tolerance, class_boundaries)
        self._boundaries = boundaries
        self._weights = _weights(
            zero_weighting, nonzero_weighting, class_weights, len(boundaries) + 1
        )
        self.pooling = pooling
        self.reduction = reduction
        self.fused = bool(fused)
        self._constants: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = {}

    @property
    def class_weights(self) -> tuple[float, ...]:
        """One weight per class (read-only: build a new loss to change it)."""
        return self._weights

    @property
    def class_boundaries(self) -> tuple[float, ...]:
        """The ascending edges on ``|y_true|`` between the classes (read-only)."""
        return self._boundaries

    @property
    def num_classes(self) -> int:
        return len(self._weights)

    def extra_repr(self) -> str:
        return (
            f"class_weights={self.class_weights}, class_boundaries={self.class_boundaries}, "
            f"pooling={self.pooling!r}, reduction={self.reduction!r}, fused={self.fused}"
        )

    def _tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """Weights and boundaries as tensors: kernel inputs rather than constants, so that new
        values do not recompile. Cached per device and dtype (built once, no copy per call)."""
        if torch.compiler.is_compiling():  # the caller's graph takes them as constants
            return _as_tensors(self.class_weights, self.class_boundaries, device, dtype)
        key = (device, dtype)
        if key not in self._constants:
            self._constants[key] = _as_tensors(
                self.class_weights, self.class_boundaries, device, dtype
            )
        return self._constants[key]

    def forward(
        self,
        y_pred: torch.Tensor,
        y_true: torch.Tensor,
        valid_mask: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of ``y_pred`` against ``y_true`` over the pixels where ``valid_mask`` is True.

        ``mask`` is the deprecated name of ``valid_mask`` (removed in the next release)."""
        if mask is not None:
            if valid_mask is not None:
                raise TypeError("pass valid_mask only (mask is its deprecated name), not both")
            warnings.warn(
                "ACBMSELoss.forward(mask=...) is deprecated; use valid_mask=... (the keyword "
                "of every dense loss in smp_imbalance)",
                DeprecationWarning,
                stacklevel=2,
            )
            valid_mask = mask
        check_tensor("y_pred", y_pred)
        check_tensor("y_true", y_true, floating=False)
        if y_true.dtype == torch.bool or y_true.is_complex():
            raise TypeError(f"y_true must be a real-valued tensor, got dtype {y_true.dtype}")
        check_same_shape(y_pred, y_true)
        if y_pred.device != y_true.device:
            raise ValueError(f"y_pred is on {y_pred.device} but y_true is on {y_true.device}")
        if self.pooling == "sample" and y_pred.dim() == 0:
            raise ValueError("pooling='sample' needs a batch dimension: y_pred is 0-dimensional")
        if valid_mask is not None:
            check_mask(valid_mask, y_true, name="valid_mask")
        weights, boundaries = self._tensors(y_pred.device, compute_dtype(y_pred))
        args = (y_pred, y_true, weights, boundaries, valid_mask, self.pooling, self.reduction)
        if self.fused and not torch.compiler.is_compiling():
            return acb_mse_fused(*args)
        return acb_mse(*args)


def _finite_non_negative(name: str, value: float) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)  # numpy scalars, fractions
    value = check_non_negative(name, value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _float_tuple(name: str, values: object) -> tuple[float, ...]:
    """A list/tuple (or 1-D array/tensor) of finite non-negative numbers, as floats."""
    if hasattr(values, "tolist") and getattr(values, "ndim", None) == 1:
        values = values.tolist()  # numpy array, torch tensor
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__}")
    return tuple(_finite_non_negative(f"{name}[{i}]", v) for i, v in enumerate(values))


def _boundaries(
    zero_tolerance: float | None, class_boundaries: Sequence[float] | None
) -> tuple[float, ...]:
    if zero_tolerance is not None:
        zero_tolerance = _finite_non_negative("zero_tolerance", zero_tolerance)
    if class_boundaries is None:
        return (0.0 if zero_tolerance is None else zero_tolerance,)
    edges = _float_tuple("class_boundaries", class_boundaries)
    if not edges:
        raise ValueError("class_boundaries must hold at least one value")
    if any(lo >= hi for lo, hi in itertools.pairwise(edges)):
        raise ValueError(f"class_boundaries must be strictly ascending, got {list(edges)}")
    if zero_tolerance is not None and zero_tolerance != edges[0]:
        raise ValueError(
            f"zero_tolerance={zero_tolerance} contradicts class_boundaries[0]={edges[0]} (the "
            "no-hit class is |t| <= class_boundaries[0]); give one of them"
        )
    return edges


def _weights(
    zero_weighting: float,
    nonzero_weighting: float,
    class_weights: Sequence[float] | None,
    num_classes: int,
) -> tuple[float, ...]:
    if class_weights is None:
        return (zero_weighting,) + (nonzero_weighting,) * (num_classes - 1)
    weights = _float_tuple("class_weights", class_weights)
    if len(weights) != num_classes:
        raise ValueError(
            f"class_weights has {len(weights)} values but there are {num_classes} classes "
            f"(len(class_boundaries) + 1)"
        )
    pair = (zero_weighting, nonzero_weighting)
    if pair != (1.0, 1.0) and not (num_classes == 2 and pair == weights):
        raise ValueError(
            f"zero_weighting={zero_weighting}, nonzero_weighting={nonzero_weighting} contradict "
            f"class_weights={list(weights)}: give the weights one way"
        )
    return weights


def _as_tensors(
    weights: tuple[float, ...],
    boundaries: tuple[float, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(weights, device=device, dtype=dtype),
        torch.tensor(boundaries, device=device, dtype=dtype),
    )
