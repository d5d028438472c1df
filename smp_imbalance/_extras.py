"""Optional dependencies: which extra brings which module, and the error naming the install command."""

from __future__ import annotations

#: top-level module -> the smallest extra that installs it (``pip install "smp-imbalance[EXTRA]"``)
EXTRA_OF_MODULE = {
    "lightning": "train",
    "jsonargparse": "train",
    "tensorboard": "train",
    "torchmetrics": "metrics",
    "matplotlib": "plot",
    "rasterio": "satellite",
    "cv2": "datasets",
    "albumentations": "datasets",
    "iterstrat": "datasets",
}


def missing_extra(err: ModuleNotFoundError, what: str, extra: str | None = None) -> ImportError:
    """An ``ImportError`` saying that ``what`` needs the module ``err`` could not import and which
    ``pip install`` brings it. Raise it ``from err``."""
    module = (err.name or "").split(".")[0]
    extra = extra or EXTRA_OF_MODULE.get(module, "all")
    return ImportError(
        f"{what} needs the module {module!r}, which comes with an optional extra: "
        f'pip install "smp-imbalance[{extra}]"'
    )
