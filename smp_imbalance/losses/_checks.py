"""Input validation shared by the losses: clear errors naming the argument, no silent broadcasting.

These run on shapes, dtypes and Python arguments only (never on tensor values), so they cost no
host-device sync and are safe under ``torch.compile``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_reduction(reduction: str, allowed: Sequence[str] = REDUCTIONS) -> str:
    """Return ``reduction`` if it is one of ``allowed``, else raise ``ValueError``."""
    if reduction not in allowed:
        raise ValueError(f"reduction must be one of {tuple(allowed)}, got {reduction!r}")
    return reduction


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def check_non_negative(name: str, value: float) -> float:
    """Return ``float(value)``; ``TypeError`` if not a real number, ``ValueError`` if negative/NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    """Return ``float(value)``; ``ValueError`` unless it is a finite number > 0."""
    value = check_non_negative(name, value)
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def check_tensor(name: str, x: object, *, floating: bool = True, min_dim: int = 0) -> torch.Tensor:
    """Check that ``x`` is a tensor (floating point when ``floating``) with ``>= min_dim`` dims
    and at least one element."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    return x


def check_same_shape(
    a: torch.Tensor, b: torch.Tensor, name_a: str = "y_pred", name_b: str = "y_true"
) -> None:
    """``ValueError`` naming both shapes unless they are identical (no silent broadcasting)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def check_mask(
    mask: object, like: torch.Tensor, name: str = "mask", like_name: str = "y_true"
) -> torch.Tensor:
    """Check a validity mask: a bool tensor on ``like``'s device whose shape broadcasts to
    ``like`` without changing it (e.g. ``(N, 1, H, W)`` against ``(N, C, H, W)``)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype}")
    if mask.dim() != like.dim():
        raise ValueError(
            f"{name} must have as many dimensions as {like_name}: got {tuple(mask.shape)} for "
            f"{like_name} {tuple(like.shape)}"
        )
    for m, t in zip(mask.shape, like.shape, strict=True):
        if m not in (1, t):
            raise ValueError(
                f"{name} of shape {tuple(mask.shape)} does not broadcast to {like_name} "
                f"{tuple(like.shape)}"
            )
    if mask.device != like.device:
        raise ValueError(f"{name} is on {mask.device} but {like_name} is on {like.device}")
    return mask


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half and bfloat16 are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32
