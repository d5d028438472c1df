"""Human Protein Atlas images (Kaggle "Human Protein Atlas Image Classification", 2018).

Layout read (the Kaggle one; the external HPAv18 set and full-size 16-bit exports use the same
naming with another ``extension``)::

    root/{Id}_red.png      microtubules          (H, W) grayscale, 8- or 16-bit
    root/{Id}_green.png    the protein of interest
    root/{Id}_blue.png     nucleus
    root/{Id}_yellow.png   endoplasmic reticulum
    train.csv              Id,Target   with Target = space-separated label indices 0..27

The labels describe where the *green* protein sits in the cell; the other three stains are
landmarks. Every file is decoded with ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` (no colour
conversion, 16-bit kept) and must be single-channel: a colour file (the HPAv18 downloads are
sometimes saved as colour JPEGs whose signal lies in one or two of the B, G, R planes) raises a
``ValueError`` unless ``colour_files="max"``, which takes the per-pixel maximum over B, G, R --
exact for those renderings (a red/green/blue stain lives in one plane, yellow in R and G).

Channel modes (``mode``):

* ``"rgby"`` (default): the colours in ``channels`` stacked in that order, (H, W, len(channels)).
  ``channels=("red", "green", "blue")`` drops yellow (and reads three files instead of four).
* ``"rgb"``: for 3-channel pretrained backbones, (H, W, 3) = ((red + yellow) / 2, green, blue).
  Yellow is blended into red, not into green as the HPA viewer renders it: green is the channel
  the labels are about, and mixing the ER stain into it would make every image look
  ER-positive (class 6). Both red (microtubules) and yellow (ER) are cytoplasmic landmarks, so
  their average keeps the cell outline. In integers: ``(red + yellow + 1) // 2``.

Pixel scaling: 8-bit files are divided by 255 and 16-bit files by 65535 (``dtype="float32"``),
or kept / rounded to 8-bit (``dtype="uint8"``, 16-bit -> ``round(x / 257)``). When the files of
one Id differ in bit depth, 8-bit planes are first widened exactly (``x * 257``). Scaling
follows the file's container, not the sensor: 12-bit data stored in 16-bit files lands in
[0, 1/16]; rescale it in the transform.
"""

from __future__ import annotations

import csv
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

try:  # an optional extra
    import cv2
except ModuleNotFoundError as _err:
    from smp_imbalance._extras import missing_extra

    raise missing_extra(_err, "the protein_atlas dataset", "datasets") from _err
import torch
from torch.utils.data import Dataset

from smp_imbalance.datasets._common import apply_transform
from smp_imbalance.registry import register_dataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CLASS_NAMES",
    "COLOURS",
    "NUM_CLASSES",
    "ProteinAtlas",
    "preview_figure",
    "read_hpa_csv",
]

#: The 28 label names, index = class id (from the competition's data description).
CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)
NUM_CLASSES = len(CLASS_NAMES)
#: The four stains, in the default (RGBY) stacking order.
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")

Mode = Literal["rgby", "rgb"]
OutputDType = Literal["float32", "uint8"]


def read_hpa_csv(
    path: str | os.PathLike[str], *, labelled: bool = True
) -> tuple[list[str], np.ndarray | None]:
    """Read an HPA label file (``Id,Target``; other columns are ignored).

    Args:
        path: the csv. It needs an ``Id`` column, and a ``Target`` column when ``labelled``
            (space-separated class indices in ``0..27``, at least one, no repeats).
        labelled: ``False`` for a test list (e.g. Kaggle's ``sample_submission.csv``): only
            ``Id`` is read.

    Returns:
        ``(ids, labels)``: the Ids in file order and a multi-hot ``(N, 28)`` uint8 matrix, or
        ``None`` when not ``labelled``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and line: missing column, wrong field count, empty Id,
            duplicate Id (with the line of its first occurrence), unparsable or out-of-range
            label, empty or repeated labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HPA label file not found: {path}")
    ids: list[str] = []
    rows: list[list[int]] = []
    first_line: dict[str, int] = {}
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header 'Id,Target'")
        header = [h.strip() for h in header]
        if "Id" not in header or (labelled and "Target" not in header):
            need = "'Id' and 'Target'" if labelled else "'Id'"
            hint = "" if "Id" not in header else " (pass labelled=False for an unlabelled list)"
            raise ValueError(f"{path}: header {header} lacks the column(s) {need}{hint}")
        id_col = header.index("Id")
        target_col = header.index("Target") if labelled else -1
        for row in reader:
            line = reader.line_num
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise ValueError(
                    f"{path}, line {line}: {len(row)} fields, the header has {len(header)}: {row}"
                )
            image_id = row[id_col].strip()
            if not image_id:
                raise ValueError(f"{path}, line {line}: empty Id")
            if image_id in first_line:
                raise ValueError(
                    f"{path}, line {line}: duplicate Id {image_id!r} "
                    f"(first seen on line {first_line[image_id]})"
                )
            first_line[image_id] = line
            ids.append(image_id)
            if labelled:
                rows.append(_parse_target(row[target_col], f"{path}, line {line} (Id {image_id})"))
    if not labelled:
        return ids, None
    labels = np.zeros((len(ids), NUM_CLASSES), dtype=np.uint8)
    for i, classes in enumerate(rows):
        labels[i, classes] = 1
    return ids, labels


def _parse_target(text: str, where: str) -> list[int]:
    tokens = text.split()
    if not tokens:
        raise ValueError(f"{where}: empty Target (every HPA image has at least one label)")
    try:
        classes = [int(token) for token in tokens]
    except ValueError:
        raise ValueError(f"{where}: Target {text!r} is not space-separated integers") from None
    bad = [c for c in classes if not 0 <= c < NUM_CLASSES]
    if bad:
        raise ValueError(f"{where}: label(s) {bad} outside 0..{NUM_CLASSES - 1}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"{where}: repeated label in Target {text!r}")
    return classes


@register_dataset(name="protein_atlas")
class ProteinAtlas(Dataset):
    """Human Protein Atlas 4-stain images with 28 multi-hot labels.

    Args:
        root: folder holding ``{Id}_{colour}{extension}`` for every Id of ``csv_file``.
        csv_file: ``Id,Target`` label file (:func:`read_hpa_csv`), or an ``Id`` list when
            ``labelled=False``.
        labelled: whether to read targets; ``False`` for the test split (no ``"target"`` key).
        channels: colours stacked in ``"rgby"`` mode, in order (a non-empty subset of
            :data:`COLOURS`, no repeats). Must be left at the default in ``"rgb"`` mode.
        mode: ``"rgby"`` (stack ``channels``) or ``"rgb"`` (``(red + yellow) / 2, green,
            blue``; see the module docstring for why).
        extension: file suffix: ``".png"`` (Kaggle), ``".jpg"`` (HPAv18), ``".tif"``.
        dtype: ``"float32"`` (scaled to [0, 1]) or ``"uint8"``: what the transform receives and,
            without a transform, what ``"image"`` holds.
        colour_files: ``"error"`` (a colour file raises ``ValueError``) or ``"max"`` (converted
            by the maximum over its B, G, R planes).
        transform: an albumentations ``Compose`` or any callable ``transform(image=...) ->
            {"image": ...}``, called on numpy ``(H, W, C)``; must not convert to tensors.
        check_files: list ``root`` once at construction and raise ``FileNotFoundError`` naming the
            missing files (a missing file is otherwise reported when its sample is read).

    Samples are dicts:

    * ``"image"``: ``torch.Tensor`` ``(C, H, W)``, C = ``len(channels)`` (``"rgby"``) or 3
      (``"rgb"``); float32 in [0, 1] or uint8 per ``dtype`` (without a transform; with one, the
      dtype and range it returns, e.g. float32 normalised);
    * ``"target"``: ``torch.Tensor`` ``(28,)`` float32 multi-hot (only when ``labelled``);
    * ``"id"``: ``str``, the image Id.

    Attributes:
        ids: the Ids, in csv order.
        labels: ``(N, 28)`` uint8 multi-hot matrix (``None`` when unlabelled), for samplers and
            fold splits (:mod:`smp_imbalance.datasets.sampling`).
        channel_names: the name of each output channel (``"red+yellow"`` for the blend).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        csv_file: str | os.PathLike[str],
        *,
        labelled: bool = True,
        channels: Sequence[str] = COLOURS,
        mode: Mode = "rgby",
        extension: str = ".png",
        dtype: OutputDType = "float32",
        colour_files: Literal["error", "max"] = "error",
        transform: Callable[..., Mapping[str, Any]] | None = None,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ProteinAtlas: root {self.root} is not a directory")
        if mode not in ("rgby", "rgb"):
            raise ValueError(f"ProteinAtlas: mode must be 'rgby' or 'rgb', got {mode!r}")
        if isinstance(channels, str):
            raise ValueError(
                f"ProteinAtlas: channels must be a sequence of colour names, got the string "
                f"{channels!r} (write channels=({channels!r},))"
            )
        channels = tuple(channels)
        if not channels:
            raise ValueError(f"ProteinAtlas: channels must be a non-empty sequence of {COLOURS}")
        unknown = [c for c in channels if c not in COLOURS]
        if unknown or len(set(channels)) != len(channels):
            raise ValueError(
                f"ProteinAtlas: channels {channels} must be distinct names among {COLOURS}"
            )
        if mode == "rgb" and channels != COLOURS:
            raise ValueError(
                "ProteinAtlas: mode='rgb' reads all four stains and outputs (red+yellow)/2, "
                f"green, blue; leave channels at the default (got {channels}); to drop yellow use "
                "mode='rgby', channels=('red', 'green', 'blue')"
            )
        if dtype not in ("float32", "uint8"):
            raise ValueError(f"ProteinAtlas: dtype must be 'float32' or 'uint8', got {dtype!r}")
        if colour_files not in ("error", "max"):
            raise ValueError(
                f"ProteinAtlas: colour_files must be 'error' or 'max', got {colour_files!r}"
            )
        if transform is not None and not callable(transform):
            raise TypeError(
                f"ProteinAtlas: transform must be callable, got {type(transform).__name__}"
            )
        self.csv_file = Path(csv_file)
        self.ids, self.labels = read_hpa_csv(self.csv_file, labelled=labelled)
        self.labelled = labelled
        self.channels = channels
        self.mode: Mode = mode
        self.extension = extension if extension.startswith(".") else f".{extension}"
        self.dtype: OutputDType = dtype
        self.colour_files = colour_files
        self.transform = transform
        self.channel_names: tuple[str, ...] = (
            ("red+yellow", "green", "blue") if mode == "rgb" else channels
        )
        if check_files:
            self._check_files()

    # -- files ------------------------------------------------------------------------------
    def paths(self, index: int) -> tuple[Path, ...]:
        """The files read for sample ``index``, one per stain read (in ``channels`` order)."""
        image_id = self.ids[index]
        return tuple(self.root / f"{image_id}_{c}{self.extension}" for c in self.channels)

    def _check_files(self) -> None:
        present = set(os.listdir(self.root))
        missing = [
            f"{image_id}_{c}{self.extension}"
            for image_id in self.ids
            for c in self.channels
            if f"{image_id}_{c}{self.extension}" not in present
        ]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise FileNotFoundError(
                f"ProteinAtlas: {len(missing)} channel file(s) listed by {self.csv_file} are "
                f"missing from {self.root}: {shown} (check root and extension={self.extension!r})"
            )

    def _read_plane(self, path: Path, image_id: str) -> np.ndarray:
        plane = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if plane is None:
            if not path.is_file():
                raise FileNotFoundError(
                    f"ProteinAtlas: missing channel file {path} (Id {image_id})"
                )
            raise ValueError(
                f"ProteinAtlas: could not decode {path} (Id {image_id}): corrupt, truncated or "
                "not an image"
            )
        if plane.ndim == 3:
            if self.colour_files == "error":
                raise ValueError(
                    f"ProteinAtlas: {path} is a colour image {plane.shape}, expected one grayscale "
                    "stain; pass colour_files='max' to take the maximum over its B, G, R planes"
                )
            plane = plane[..., :3].max(axis=2)
        if plane.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"ProteinAtlas: {path} has pixel type {plane.dtype}; expected 8- or 16-bit"
            )
        return plane

    # -- decoding -----------------------------------------------------------------------------
    def _planes(self, index: int) -> list[np.ndarray]:
        """The output planes of sample ``index``, all (H, W) of one raw dtype (uint8/uint16)."""
        image_id = self.ids[index]
        paths = self.paths(index)
        planes = [self._read_plane(path, image_id) for path in paths]
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            sizes = ", ".join(
                f"{path.name} {p.shape}" for path, p in zip(paths, planes, strict=True)
            )
            raise ValueError(f"ProteinAtlas: channel sizes differ for Id {image_id}: {sizes}")
        if len({p.dtype for p in planes}) > 1:  # mixed bit depths: widen 8-bit exactly
            planes = [p.astype(np.uint16) * 257 if p.dtype == np.uint8 else p for p in planes]
        if self.mode == "rgb":
            red, green, blue, yellow = planes
            wide = np.uint16 if red.dtype == np.uint8 else np.uint32
            blend = (red.astype(wide) + yellow + 1) >> 1
            planes = [blend.astype(red.dtype), green, blue]
        return planes

    def _convert(self, raw: np.ndarray) -> np.ndarray:
        """uint8/uint16 -> the output dtype (float32 in [0, 1] or uint8), same shape."""
        if self.dtype == "uint8":
            if raw.dtype == np.uint8:
                return raw
            return ((raw.astype(np.uint32) + 128) // 257).astype(np.uint8)
        if raw.dtype == np.uint8:
            return _unit_float(raw, np.empty(raw.shape, np.float32))
        # float32 division of exact integers: the correctly rounded x / 65535
        return np.divide(raw, 65535, dtype=np.float32)

    def _chw(self, planes: list[np.ndarray]) -> np.ndarray:
        """Planes -> (C, H, W) in the output dtype, written channel-first directly (no transpose;
        for float32, no intermediate uint8 stack either)."""
        if self.dtype == "uint8":
            return self._convert(np.stack(planes))
        out = np.empty((len(planes), *planes[0].shape), dtype=np.float32)
        for c, plane in enumerate(planes):
            if plane.dtype == np.uint8:
                _unit_float(plane, out[c])
            else:
                np.divide(plane, 65535, out=out[c], dtype=np.float32)
        return out

    def load_image(self, index: int) -> np.ndarray:
        """Sample ``index`` before the transform: numpy (H, W, C) in the configured dtype."""
        return self._convert(np.stack(self._planes(index), axis=-1))

    # -- Dataset ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"ProteinAtlas: index {index} out of range for {len(self)} samples")
        index = index % len(self)
        image_id = self.ids[index]
        if self.transform is None:
            image = torch.from_numpy(self._chw(self._planes(index)))
        else:
            array, _ = apply_transform(
                self.transform, self.load_image(index), {}, where=f"ProteinAtlas Id {image_id}"
            )
            if array.ndim == 2:
                array = array[..., None]
            image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        sample: dict[str, Any] = {"image": image, "id": image_id}
        if self.labels is not None:
            sample["target"] = torch.from_numpy(self.labels[index].astype(np.float32))
        return sample

    def __repr__(self) -> str:
        return (
            f"ProteinAtlas(root={str(self.root)!r}, n={len(self)}, channels={self.channel_names}, "
            f"dtype={self.dtype!r}, labelled={self.labelled})"
        )


# x / 255 for every 8-bit x, each the correctly rounded float32 quotient (as np.divide gives)
_UNIT_LUT = np.divide(np.arange(256, dtype=np.uint8), 255, dtype=np.float32)


def _unit_float(plane: np.ndarray, out: np.ndarray) -> np.ndarray:
    """uint8 (H, W[, C]) -> float32 ``x / 255`` written into ``out`` (a table look-up:
    ``cv2.LUT`` is faster than the division and gives the same values)."""
    cv2.LUT(plane, _UNIT_LUT, dst=out)  # a contiguous dst of the right size: filled in place
    return out


def _composite(image: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(H, W, C) float [0, 1] stains -> (H, W, 3) display RGB.

    Red, green and blue map to their display colours; yellow adds to red and green (half each,
    the HPA rendering); each stain is stretched to its 99.5th percentile first for visibility.
    """
    height, width = image.shape[:2]
    rgb = np.zeros((height, width, 3), dtype=np.float32)
    weights = {
        "red": (1.0, 0.0, 0.0),
        "green": (0.0, 1.0, 0.0),
        "blue": (0.0, 0.0, 1.0),
        "yellow": (0.5, 0.5, 0.0),
        "red+yellow": (1.0, 0.0, 0.0),
    }
    for c, name in enumerate(names):
        plane = image[..., c].astype(np.float32)
        top = float(np.percentile(plane, 99.5))
        plane = np.clip(plane / top, 0.0, 1.0) if top > 0 else plane
        rgb += plane[..., None] * np.asarray(weights[name], dtype=np.float32)
    return np.clip(rgb, 0.0, 1.0)


def preview_figure(dataset: ProteinAtlas, n: int = 4, seed: int = 0) -> Figure:
    """A row of ``n`` random samples as display composites, titled with Id and label names.

    Reads the images without the dataset's transform (so normalisation does not distort them).
    Uses the matplotlib object API (no pyplot, no global backend change); save with
    ``fig.savefig(path)``.
    """
    from matplotlib.figure import Figure

    if not isinstance(dataset, ProteinAtlas):
        raise TypeError(f"preview_figure: expected a ProteinAtlas, got {type(dataset).__name__}")
    if n < 1:
        raise ValueError(f"preview_figure: n must be >= 1, got {n}")
    n = min(n, len(dataset))
    picks = np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))
    fig = Figure(figsize=(3.2 * n, 3.9), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, index in zip(axes, picks, strict=True):
        image = dataset.load_image(int(index))
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        ax.imshow(_composite(image, dataset.channel_names), interpolation="nearest")
        ax.set_axis_off()
        title = dataset.ids[index][:13]
        if dataset.labels is not None:
            names = [CLASS_NAMES[c] for c in np.flatnonzero(dataset.labels[index])]
            title += "\n" + textwrap.fill(", ".join(names), width=32)
        ax.set_title(title, fontsize=8)
    fig.suptitle(
        "Human Protein Atlas: " + " / ".join(dataset.channel_names) + " composite", fontsize=9
    )
    return fig
