"""Dataset adapters that speak albumentations. Importing this package registers their names:
``detector_frames`` (:class:`DetectorFrames`), ``masked_bands`` (:class:`MaskedBands`, needs the
``[satellite]`` extra) and ``protein_atlas`` (:class:`ProteinAtlas`, needs ``[datasets]``).

An adapter whose optional dependencies are missing is not registered here; asking for it (by
name or as an attribute of this package) raises the ``ImportError`` naming the ``pip install``.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from smp_imbalance.datasets.detector import DetectorFrames

_OPTIONAL = {"ProteinAtlas": "protein", "MaskedBands": "satellite"}

for _module in _OPTIONAL.values():
    # a missing extra: the entry point reports it when the name is asked for
    with contextlib.suppress(ImportError):
        importlib.import_module(f"smp_imbalance.datasets.{_module}")


def __getattr__(name: str) -> Any:
    if name in _OPTIONAL:
        module = importlib.import_module(f"smp_imbalance.datasets.{_OPTIONAL[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DetectorFrames", "MaskedBands", "ProteinAtlas"]  # the optional two are lazy
