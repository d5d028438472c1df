"""Dataset adapters that speak albumentations. Importing this package registers their names:
``detector_frames`` (:class:`DetectorFrames`), ``masked_bands`` (:class:`MaskedBands`) and
``protein_atlas`` (:class:`ProteinAtlas`)."""

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.datasets.protein import ProteinAtlas
from smp_imbalance.datasets.satellite import MaskedBands

__all__ = ["DetectorFrames", "MaskedBands", "ProteinAtlas"]
