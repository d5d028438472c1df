"""Default albumentations recipes for :class:`~smp_imbalance.datasets.protein.ProteinAtlas`.

Order (both recipes): check the channel count -> ``ToFloat`` (uint8 / uint16 -> [0, 1];
float32 input passes unchanged) -> geometry -> pixel transforms on [0, 1] data ->
:class:`NormalizeChannels` last (a strict, fast ``(x - mean) / std``; see its docstring for
why not ``A.Normalize``). Microscopy fields have no canonical orientation, so the train
recipe uses the 8 dihedral symmetries (flips + 90 degree rotations) plus a small affine jitter;
brightness/contrast jitter stays mild because stain intensity carries signal.

No ``ToTensorV2``: the dataset converts to ``(C, H, W)`` tensors itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
from albumentations.core.transforms_interface import ImageOnlyTransform

__all__ = [
    "HPA_MEAN",
    "HPA_STD",
    "CheckChannels",
    "NormalizeChannels",
    "train_transforms",
    "val_transforms",
]

#: Per-channel mean / std (R, G, B, Y) of the 512 px Kaggle PNGs scaled to [0, 1], the values the
#: 2018 competition's public kernels used; slice them for ``channels`` subsets, take
#: ``HPA_MEAN[:3]`` for ``mode="rgb"`` as an approximation, or measure your own.
HPA_MEAN: tuple[float, ...] = (0.08069, 0.05258, 0.05487, 0.08282)
HPA_STD: tuple[float, ...] = (0.13704, 0.10145, 0.15313, 0.13814)


class CheckChannels(ImageOnlyTransform):
    """Raise ``ValueError`` unless the image has ``num_channels`` channels; otherwise a no-op.

    Put first in a recipe whose per-channel parameters (mean, std) assume a channel count,
    because ``A.Normalize`` silently broadcasts ``mean[0]`` over unexpected channels.
    """

    class InitSchema(ImageOnlyTransform.InitSchema):
        num_channels: int

    def __init__(self, num_channels: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.num_channels = num_channels

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        channels = 1 if img.ndim == 2 else img.shape[-1]
        if channels != self.num_channels:
            raise ValueError(
                f"CheckChannels: this recipe is built for {self.num_channels} channels, the image "
                f"has shape {img.shape}; build it with channels={channels} and {channels} "
                "means/stds"
            )
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_channels",)


class NormalizeChannels(ImageOnlyTransform):
    """``(img - mean) / std`` per channel in float32, for exactly ``len(mean)`` channels.

    Replaces ``A.Normalize`` in these recipes for two reasons: ``A.Normalize`` broadcasts
    ``mean[0]`` over channels it has no value for instead of failing, and on float32 input
    (albucore 0.0.x ``normalize_opencv``) it materialises full-size mean and (float64) std
    images, several times slower than this on a 4 x 512 x 512 image (measured: 30 ms against
    about 3 ms on the project machine). Input is expected
    on the [0, 1] scale (put ``A.ToFloat`` before it).
    """

    class InitSchema(ImageOnlyTransform.InitSchema):
        mean: tuple[float, ...]
        std: tuple[float, ...]

    def __init__(self, mean: Sequence[float], std: Sequence[float], p: float = 1.0) -> None:
        super().__init__(p=p)
        self.mean, self.std = _check_stats(mean, std, len(tuple(mean)))
        self._mean = np.asarray(self.mean, dtype=np.float32)
        self._inv_std = (1.0 / np.asarray(self.std, dtype=np.float64)).astype(np.float32)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        channels = 1 if img.ndim == 2 else img.shape[-1]
        if channels != len(self.mean):
            raise ValueError(
                f"NormalizeChannels: {len(self.mean)} means/stds for an image of shape "
                f"{img.shape} ({channels} channels)"
            )
        height, width = img.shape[:2]
        # rows of W * C values with the per-channel constants tiled along them: numpy's inner
        # loop then runs over W * C elements instead of C (3-4x faster than broadcasting)
        rows = img.reshape(height, width * channels)
        out = np.subtract(rows, np.tile(self._mean, width), dtype=np.float32)
        out *= np.tile(self._inv_std, width)
        return out.reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std")


def _check_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean_t) != channels or len(std_t) != channels:
        raise ValueError(
            f"mean has {len(mean_t)} and std {len(std_t)} values for {channels} channels; give "
            "one per channel (A.Normalize would silently reuse mean[0] for the others)"
        )
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std must be positive, got {std_t}")
    return mean_t, std_t


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(height), int(width)


def train_transforms(
    size: int | tuple[int, int] = 512,
    *,
    channels: int = 4,
    mean: Sequence[float] = HPA_MEAN,
    std: Sequence[float] = HPA_STD,
    normalize: bool = True,
) -> A.Compose:
    """Training recipe: random resized crop to ``size`` (scale 0.6-1, aspect 3/4-4/3), the 8
    dihedral symmetries, affine jitter (shift 5 %, scale 0.9-1.1, rotate 15 degrees; p=0.5),
    brightness/contrast +-10 % (p=0.5), then ``(x - mean) / std`` per channel
    (:class:`NormalizeChannels`).

    Args:
        size: output (H, W) or one int for a square.
        channels: channel count of the dataset's images (4 for RGBY, 3 for ``mode="rgb"``).
        mean, std: one value per channel, on the [0, 1] scale.
        normalize: ``False`` leaves float32 in [0, 1] (e.g. to normalise on the GPU).

    Raises:
        ValueError: ``mean``/``std`` lengths differ from ``channels``; and, when called, an image
            with another channel count.
    """
    mean_t, std_t = _check_stats(mean, std, channels)
    height, width = _size(size)
    steps: list[Any] = [
        CheckChannels(channels),
        A.ToFloat(),
        A.RandomResizedCrop(size=(height, width), scale=(0.6, 1.0), ratio=(0.75, 4 / 3)),
        A.D4(),
        A.Affine(
            translate_percent=(-0.05, 0.05),
            scale=(0.9, 1.1),
            rotate=(-15, 15),
            border_mode=0,
            fill=0,
            p=0.5,
        ),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
    ]
    if normalize:
        steps.append(NormalizeChannels(mean_t, std_t))
    return A.Compose(steps)


def val_transforms(
    size: int | tuple[int, int] | None = None,
    *,
    channels: int = 4,
    mean: Sequence[float] = HPA_MEAN,
    std: Sequence[float] = HPA_STD,
    normalize: bool = True,
) -> A.Compose:
    """Validation / test recipe: resize to ``size`` (area interpolation; ``None`` keeps the
    size), then ``(x - mean) / std`` per channel. Same arguments and checks as
    :func:`train_transforms`."""
    mean_t, std_t = _check_stats(mean, std, channels)
    steps: list[Any] = [CheckChannels(channels), A.ToFloat()]
    if size is not None:
        height, width = _size(size)
        steps.append(A.Resize(height, width, interpolation=3))  # cv2.INTER_AREA
    if normalize:
        steps.append(NormalizeChannels(mean_t, std_t))
    return A.Compose(steps)
