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


def train_transforms(
    hflip: float = 0.5,
    vflip: float = 0.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int = 1,
) -> A.Compose:
    """Random left-right flip (probability ``hflip``), optional up-down flip (``vflip``), then
    optional input standardisation ``(x - mean) / std`` (last)."""
    for name, p in (("hflip", hflip), ("vflip", vflip)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    steps: list[A.BasicTransform] = []
    if hflip > 0:
        steps.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        steps.append(A.VerticalFlip(p=vflip))
    return A.Compose(steps + _normalize_step(mean, std, channels))


def val_transforms(
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int = 1,
) -> A.Compose:
    """Deterministic: the optional input standardisation only."""
    return A.Compose(_normalize_step(mean, std, channels))
