"""Default albumentations recipes for :class:`~smp_imbalance.datasets.detector.DetectorFrames`.

Geometric only. The left-right flip (``x -> w - x`` across the quartz plate) is a mirror
symmetry of the detector, so flipped frames are physical; the up-down flip reverses the
photon-angle axis and is not, so it is off by default. Pixel transforms (noise, brightness,
blur) would change the input and not the target and destroy the sparsity the task is about;
the degradation done by the dataset is the augmentation. Interpolating geometric transforms
(rotation, scaling) would invent time values, so none is used.

The dataset already serves times normalised to {0} U [gap, 1]; ``mean``/``std`` optionally
standardise the *input* as the very last step (``A.Normalize`` with ``max_pixel_value=1``, the
target is left alone), with their lengths checked against the channel count here because
``A.Normalize`` silently reuses ``mean[0]`` for extra channels. The dataset declares
``target``, ``signal_mask`` and ``noise_mask`` as mask targets, so they follow every flip.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2

__all__ = ["train_transforms", "val_transforms"]


def _normalize_step(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> list[A.BasicTransform]:
    if mean is None and std is None:
        return []
    if mean is None or std is None:
        raise ValueError("give both mean and std, or neither")
    mean, std = list(mean), list(std)
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got {len(mean)} and "
            f"{len(std)} (A.Normalize would silently reuse the first value)"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {std}")
    return [A.Normalize(mean=mean, std=std, max_pixel_value=1.0, p=1.0)]


def _pad_step(pad_divisor: int | None) -> list[A.BasicTransform]:
    """Zero-pad at the bottom/right to a multiple of ``pad_divisor`` (e.g. 32 for an encoder of
    depth 5: 128 x 88 -> 128 x 96). Zero is "no hit", so padding adds only empty pixels, and the
    padded pixels stay empty in every target."""
    if pad_divisor is None:
        return []
    if isinstance(pad_divisor, bool) or not isinstance(pad_divisor, int) or pad_divisor < 1:
        raise ValueError(f"pad_divisor must be a positive int, got {pad_divisor!r}")
    return [
        A.PadIfNeeded(
            min_height=None,
            min_width=None,
            pad_height_divisor=pad_divisor,
            pad_width_divisor=pad_divisor,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
        )
    ]


def train_transforms(
    hflip: float = 0.5,
    vflip: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int = 1,
    pad_divisor: int | None = None,
) -> A.Compose:
    """Random left-right flip (probability ``hflip``), optional up-down flip (``vflip``),
    optional zero padding to a multiple of ``pad_divisor``, then optional input standardisation
    ``(x - mean) / std`` (last)."""
    for name, p in (("hflip", hflip), ("vflip", vflip)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    steps: list[A.BasicTransform] = []
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(A.VerticalFlip(p=vflip))
    return A.Compose(steps + _pad_step(pad_divisor) + _normalize_step(mean, std, channels))


def val_transforms(
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int = 1,
    pad_divisor: int | None = None,
) -> A.Compose:
    """Deterministic: the optional zero padding and input standardisation only."""
    return A.Compose(_pad_step(pad_divisor) + _normalize_step(mean, std, channels))
