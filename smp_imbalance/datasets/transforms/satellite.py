"""Default albumentations recipes for :class:`~smp_imbalance.datasets.satellite.MaskedBands`.

Geometric only, on purpose. Pixel transforms (brightness, contrast, noise) change the input and
not the target, which breaks the physical relation a band-to-band model learns (e.g. L1C -> L2A
atmospheric correction); they also clip float32 to [0, 1] in albumentations 2.0.x, and
reflectance exceeds 1 over clouds and snow unless the dataset clips. Normalisation is not here:
``MaskedBands`` normalises after the transform (``mean``/``std``, lengths checked against the
band count) and then fills the invalid pixels, so no recipe needs ``A.Normalize``.
The dataset declares ``target``, ``valid_mask`` and its input-validity mask as mask targets, so
they follow every flip/rotation/crop with nearest interpolation.
"""

from __future__ import annotations

import albumentations as A

__all__ = ["train_transforms", "val_transforms"]


def train_transforms(crop_size: int | None = None, dihedral: bool = True) -> A.Compose:
    """Random crop (optional), then a random flip/rotation.

    Args:
        crop_size: a random ``crop_size`` x ``crop_size`` crop first (``None``: none); patches
            must be at least that large.
        dihedral: one of the 8 symmetries of the square (``A.SquareSymmetry``: flips, 90-degree
            rotations, transposes; for square patches); ``False``: horizontal and vertical flips
            only (keeps non-square patches' shape).
    """
    steps: list[A.BasicTransform] = []
    if crop_size is not None:
        if not isinstance(crop_size, int) or crop_size <= 0:
            raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
        steps.append(A.RandomCrop(crop_size, crop_size))
    if dihedral:
        steps.append(A.SquareSymmetry(p=1.0))
    else:
        steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    return A.Compose(steps)


def val_transforms(crop_size: int | None = None) -> A.Compose:
    """Deterministic: a centre ``crop_size`` crop, or nothing."""
    if crop_size is None:
        return A.Compose([])
    if not isinstance(crop_size, int) or crop_size <= 0:
        raise ValueError(f"crop_size must be a positive int, got {crop_size!r}")
    return A.Compose([A.CenterCrop(crop_size, crop_size)])
