"""What every dataset adapter shares: calling an albumentations transform on an image and its
spatial targets, and checking that they still line up afterwards.

Spatial targets (a clean frame, target bands, a valid mask) are declared to albumentations as
``"mask"`` targets: they follow every spatial transform (flip, crop, resize with nearest
interpolation) and are left alone by pixel transforms (noise, brightness), which must change the
input only. With an ``A.Compose`` we declare them ourselves (``add_targets``), because
albumentations silently ignores keys it was not told about; any other callable with the same
calling convention (``transform(image=..., **targets) -> dict``) is trusted to move them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["apply_transform", "hwc"]


def hwc(array: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) unchanged."""
    return array[..., None] if array.ndim == 2 else array


def _declare_mask_targets(transform: Any, keys: list[str], where: str) -> None:
    """Declare ``keys`` as mask targets of an ``A.Compose`` that does not know them yet."""
    targets = getattr(transform, "additional_targets", None)
    add_targets = getattr(transform, "add_targets", None)
    if targets is None or add_targets is None:
        return
    missing = {k: "mask" for k in keys if k not in targets}
    for key in keys:
        if key in targets and targets[key] not in ("mask", "image"):
            raise ValueError(
                f"{where}: the transform declares target {key!r} as {targets[key]!r}; "
                "a spatial target must be 'mask' (or 'image')"
            )
    if missing:
        add_targets(missing)


def apply_transform(
    transform: Callable[..., Mapping[str, Any]] | None,
    image: np.ndarray,
    targets: Mapping[str, np.ndarray],
    *,
    where: str,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Apply ``transform`` to ``image`` (H, W, C) and each spatial target (H, W[, C]).

    Bool targets are passed as uint8 and come back as bool. After the call every target must
    have the image's new (H, W) and its own channel count; otherwise ``ValueError`` naming the
    target and ``where`` (the sample's file or index).

    Returns:
        the transformed image and a dict of the transformed targets (numpy arrays).
    """
    if transform is None:
        return image, dict(targets)
    keys = list(targets)
    if "image" in keys:
        raise ValueError(f"{where}: a spatial target may not be called 'image'")
    _declare_mask_targets(transform, keys, where)
    bool_keys = {k for k, v in targets.items() if v.dtype == np.bool_}
    call_targets = {k: (v.astype(np.uint8) if k in bool_keys else v) for k, v in targets.items()}
    out = transform(image=image, **call_targets)
    if not isinstance(out, Mapping) or "image" not in out:
        raise TypeError(
            f"{where}: transform must return a dict with 'image' (albumentations convention), "
            f"got {type(out).__name__}"
        )
    new_image = out["image"]
    new_targets: dict[str, np.ndarray] = {}
    height, width = _spatial_size(new_image, where, "image")
    for key, before in targets.items():
        if key not in out:
            raise ValueError(f"{where}: transform dropped the spatial target {key!r}")
        after = out[key]
        h, w = _spatial_size(after, where, key)
        channels_before = before.shape[2:] if before.ndim == 3 else ()
        channels_after = tuple(after.shape[2:]) if np.ndim(after) == 3 else ()
        if (h, w) != (height, width) or tuple(channels_after) != tuple(channels_before):
            raise ValueError(
                f"{where}: transform changed target {key!r} inconsistently: image is now "
                f"{tuple(np.shape(new_image))}, {key!r} went from {tuple(before.shape)} to "
                f"{tuple(np.shape(after))} (declare it as a 'mask' target so it moves with the image)"
            )
        after = np.asarray(after)
        new_targets[key] = after.astype(bool) if key in bool_keys else after
    return np.asarray(new_image), new_targets


def _spatial_size(array: Any, where: str, key: str) -> tuple[int, int]:
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{where}: after the transform {key!r} is a {type(array).__name__}, expected a numpy "
            "array; leave ToTensorV2 out of the transform, the dataset converts to tensors itself"
        )
    shape = array.shape
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{where}: after the transform {key!r} has shape {tuple(shape)}; expected (H, W) or "
            "(H, W, C)"
        )
    return int(shape[0]), int(shape[1])
