"""The small real data samples shipped with the package, and the recipes' fallback to them.

Every packaged recipe runs after a ``pip install`` with no download: when a recipe gives no data
path (``null``), :class:`~smp_imbalance.training.RegistryDataModule` fills the dataset's path
keywords from :data:`SAMPLES` and says so in one line. Sources and licences are in the
``SOURCES.md`` files beside the data (``smp_imbalance/sample_data/``):

* ``hpa/``: 4 Human Protein Atlas Ids (16 real images, 128 x 128), their labels, the 28 class
  counts and the label column of the full competition ``train.csv`` (31,072 images);
* ``satellite/``: one real Sentinel-2 L1C scene (4 bands, 687 x 687) with its DN-0 nodata wedge.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SAMPLES", "Sample", "hpa_train_labels", "sample_path"]

ROOT = Path(__file__).resolve().parent


def sample_path(*parts: str) -> Path:
    """The path of a shipped sample file or folder, e.g. ``sample_path("hpa", "train.csv")``.

    Raises:
        FileNotFoundError: nothing of that name ships with the package.
    """
    path = ROOT.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"no sample data {'/'.join(parts)!r} in {ROOT}")
    return path


def hpa_train_labels() -> np.ndarray:
    """The ``(31072, 28)`` uint8 multi-hot labels of the full HPA competition ``train.csv``, in
    its row order (from ``hpa/hpa_targets.txt.gz``: the ``Target`` column, without the Ids)."""
    with gzip.open(sample_path("hpa", "hpa_targets.txt.gz"), "rt") as handle:
        rows = [line.split() for line in handle if line.strip()]
    labels = np.zeros((len(rows), 28), dtype=np.uint8)
    for i, row in enumerate(rows):
        labels[i, [int(v) for v in row]] = 1
    return labels


@dataclass(frozen=True)
class Sample:
    """What a dataset reads when a recipe gives it no data.

    Attributes:
        keys: the dataset keywords that name the user's data (all of them ``null`` or absent
            means: use the sample).
        kwargs: the values given to those keywords (paths inside the package).
        what: a few words on the data, for the one-line notice.
        limits: data-module settings the sample is too small for, and the values used instead
            (e.g. a 5-fold split of 4 images).
    """

    keys: tuple[str, ...]
    kwargs: dict[str, Any]
    what: str
    limits: dict[str, Any] = field(default_factory=dict)


def _samples() -> dict[str, Sample]:
    hpa = ROOT / "hpa"
    scene = ROOT / "satellite" / "s2_l1c_19UDP_20170729" / "preview_{band}.jp2"
    return {
        "protein_atlas": Sample(
            keys=("root", "csv_file"),
            kwargs={"root": str(hpa / "images"), "csv_file": str(hpa / "train.csv")},
            what="4 Human Protein Atlas images (128 x 128), validated on themselves",
            limits={"folds": None, "sampler": "random", "batch_size": 4},
        ),
        "masked_bands": Sample(
            keys=("scenes",),
            kwargs={"scenes": [{"inputs": str(scene), "name": "S2 L1C 19UDP 2017-07-29 (sample)"}]},
            what="one Sentinel-2 L1C scene (bands B02, B03, B04, B08; 687 x 687, DN 0 = nodata)",
        ),
    }


#: dataset name -> its shipped sample (datasets without one, e.g. the detector simulator, need
#: no data at all).
SAMPLES: dict[str, Sample] = _samples()
