"""Masked satellite bands: input bands -> target bands on scenes with nodata, read with rasterio.

Made for models mapping bands to bands (Sentinel-2 L1C -> L2A translation, gap filling,
cross-band prediction) where part of each scene is not data (outside the acquisition strip,
SLC-off stripes, clouds). Every sample carries the mask of the pixels a loss may count.

Describing a scene
------------------
A :class:`Scene` says where each band lives, separately for the inputs and the targets (so a
paired product, e.g. L1C in and L2A out, may use the same band names from different files)::

    Scene(inputs={"B02": "l1c/B02.jp2", "B03": "l1c/B03.jp2"},        # band -> file
          targets="l2a/T33UUU_*_{band}_10m.jp2",                       # glob with {band}
          mask="l2a/SCL_20m.jp2")                                      # optional quality layer

A band source is a path (a single-band file: band 1), or ``(path, band)`` with ``band`` a
1-based index or a band description of a multi-band file. A string containing ``{band}`` is a
glob pattern that must match exactly one file per band name. ``targets=None`` takes the targets
from ``inputs`` (gap filling, cross-band prediction within one product). The dataset picks and
orders bands by name (``input_bands``, ``target_bands``); a scene may describe more bands.

Grid
----
All of a scene's files must share the CRS and the bounds (to a tenth of the finest pixel);
otherwise ``ValueError`` naming the file (warp them first, e.g. with ``gdalwarp -te``). They
may differ in resolution: every band is read on the grid of the finest band (or of
``reference_band``). A coarser band (e.g. B11 at 20 m onto the 10 m grid) is read through a
``rasterio.vrt.WarpedVRT`` onto that grid with ``resampling`` (default ``nearest``: every output
pixel is one recorded DN, no value is invented and nodata never bleeds into valid pixels; with
``bilinear``/``cubic`` GDAL's warper leaves the nodata pixels out of the kernel). A mask file
must cover the same extent in the same CRS (``ValueError`` naming it otherwise); on another
resolution (e.g. a 20 m SCL or cloud layer) it is resampled with ``nearest`` whatever
``resampling`` says, since its values are classes.

Invalid pixels
--------------
A pixel of a band is invalid if any of these says so (checked in this order, on the raw DNs):

1. the mask file (``mask_invalid_values``: its values that mark invalid pixels, e.g. fmask
   ``(2, 3, 4, 255)``; ``None``: every nonzero value is invalid);
2. the nodata value declared in the band's file (``use_declared_nodata=True``);
3. the user's ``nodata`` (e.g. ``0`` for Sentinel-2 L1C, whose files declare none);
4. NaN (and +-inf) in float files.

``valid_mask`` is the validity of the *target*: target band ``c`` is valid at a pixel when its
own DN is valid, the mask file says valid and (``require_valid_input=True``) every input band is
valid there. ``valid_mask_mode="shared"`` ANDs it over the target bands, shape ``(1, H, W)``;
``"per_band"`` keeps ``(C_out, H, W)``.

Values
------
``x = clip((DN + offset) * scale, *clip)``, default ``scale = 1e-4`` (Sentinel-2 reflectance)
and ``offset = 0`` (products from baseline 04.00, January 2022 on, carry ``offset = -1000``).
Then, when given, per-band normalisation ``(x - mean) / std`` (``mean``/``std`` for the inputs,
``target_mean``/``target_std`` for the targets; compute them from valid pixels only with
:func:`band_statistics`). Invalid pixels are never fed as data: after normalisation they hold
``fill_value`` (default 0.0, i.e. the band mean when normalising), in the image and in the
target alike. The order is: read, scale, transform (on scaled data), normalise, fill.

Raw DNs, scaled on the device
-----------------------------
``output="dn"`` moves the arithmetic out of the sample: ``image`` and ``target`` hold the DNs as
recorded (uint16 for Sentinel-2; numpy's promotion of the bands' types), invalid ones
included, plus ``input_valid`` (C_in, H, W) bool; ``valid_mask`` and ``valid_fraction`` are as
above. :meth:`MaskedBands.batch_transform` returns the
:class:`~smp_imbalance.datasets.band_scaling.BandScaler` that turns a batch of such samples, on
its device, into the values ``output="scaled"`` gives (equal values; the training recipes apply
it after the host-to-device copy). The DataLoader then carries 3 bytes an input pixel instead
of 4 (uint16 DN + validity) and 2 a target pixel instead of 4, and the workers skip the float
passes; on a CPU-only run the work only moves to the main process, so keep ``"scaled"``
there. The transform sees the DNs: the default recipes (crops, flips, 90-degree
rotations) are exact on them; a transform that interpolates would mix nodata DNs into their
neighbours, which ``"scaled"`` avoids by filling first.

Patches
-------
``patch_size=None`` serves each scene whole. Otherwise each scene is cut into windows of
``patch_size`` every ``stride`` pixels (the last row/column of windows is moved back to end at
the scene edge, so every patch is full size) and each sample reads only its window.
``min_valid_fraction > 0`` reads every patch once at construction and drops those whose
``valid_fraction`` is lower; their number is in ``skipped_patches`` and a warning says so.

Files are opened lazily in the process that reads (each DataLoader worker opens its own); open
datasets are never pickled.
"""

from __future__ import annotations

import glob
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

try:  # optional extras
    import cv2
    import rasterio
except ModuleNotFoundError as _err:
    from smp_imbalance._extras import missing_extra

    raise missing_extra(_err, "the masked_bands dataset", "satellite") from _err
import torch
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from torch.utils.data import Dataset

from smp_imbalance.datasets._common import apply_transform
from smp_imbalance.datasets.band_scaling import BandScaler
from smp_imbalance.registry import register_dataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "BandStatistics",
    "MaskedBands",
    "Scene",
    "band_statistics",
    "preview_figure",
]

PathLike = str | os.PathLike[str]
BandSource = PathLike | tuple[PathLike, int | str]
BandSpec = Mapping[str, BandSource] | str


@dataclass(frozen=True)
class Scene:
    """Where the bands of one scene live.

    Args:
        inputs: band name -> source, or a glob pattern containing ``{band}``. A source is a path
            (band 1 of that file) or ``(path, band)`` with ``band`` a 1-based index or a band
            description of a multi-band file.
        targets: the same for the target bands; ``None``: look them up in ``inputs``.
        mask: an optional mask/quality raster on the scene's reference grid.
        name: used in messages and previews (default: derived from the first input file).
    """

    inputs: BandSpec
    targets: BandSpec | None = None
    mask: PathLike | None = None
    name: str | None = None

    @classmethod
    def coerce(cls, scene: Scene | Mapping[str, Any], where: str) -> Scene:
        """A :class:`Scene` from itself or from a dict of its fields (as in a YAML config)."""
        if isinstance(scene, Scene):
            return scene
        if isinstance(scene, Mapping):
            unknown = set(scene) - {"inputs", "targets", "mask", "name"}
            if unknown or "inputs" not in scene:
                raise ValueError(
                    f"{where}: a scene dict needs 'inputs' and may have 'targets', 'mask', "
                    f"'name'; got keys {sorted(scene)}"
                )
            return cls(**scene)
        raise TypeError(f"{where}: expected a Scene or a dict, got {type(scene).__name__}")


@dataclass(frozen=True)
class _Band:
    name: str
    path: str
    index: int  # 1-based band index in ``path``


@dataclass
class _Grid:
    crs: Any
    transform: Any
    height: int
    width: int


@dataclass
class _ResolvedScene:
    name: str
    inputs: list[_Band]
    targets: list[_Band]
    mask: str | None
    grid: _Grid
    warped: set[str] = field(default_factory=set)  # paths read through a WarpedVRT
    targets_are_inputs: bool = False  # the same bands of the same files, in the same order
    # (path, band index) -> (DN values meaning nodata, as the band's dtype; whether NaN does;
    # whether the band reads exactly into float32)
    nodata_checks: dict[tuple[str, int], tuple[tuple[Any, ...], bool, bool]] = field(
        default_factory=dict
    )
    dtypes: dict[tuple[str, int], np.dtype] = field(default_factory=dict)  # each band's DN dtype
    # (role, dtype or None) -> how to read those bands (built on first use: MaskedBands._plan)
    plans: dict[tuple[str, str | None], _ReadPlan] = field(default_factory=dict)

    @property
    def inputs_then_targets(self) -> list[_Band]:
        """The input bands then the target bands: one read and one validity check per file."""
        return self.inputs + self.targets


Role = Literal["inputs", "targets", "inputs_then_targets"]


@dataclass(frozen=True)
class _ReadStep:
    """One read call: bands ``indexes`` of ``path`` into channels ``first:stop``."""

    path: str
    indexes: list[int]
    first: int
    stop: int
    direct: bool  # GDAL writes straight into the output (same dtype, or an exact conversion)
    checks: list[tuple[tuple[Any, ...], bool]]  # per channel: nodata DNs, whether NaN is nodata


@dataclass(frozen=True)
class _ReadPlan:
    """How to read a scene's bands of one role into one dtype (built once, used per patch)."""

    steps: list[_ReadStep]
    channels: int
    # every read direct and every channel with the same single nodata DN and no NaN (e.g.
    # Sentinel-2's 0): one comparison over the whole stack
    shared_nodata: tuple[Any] | None


class _Patch(NamedTuple):
    """One patch's arrays before fill, transform and normalisation."""

    image: np.ndarray  # (C_in, H, W)
    target: np.ndarray  # (C_out, H, W)
    input_ok: np.ndarray  # (C_in, H, W) bool: each input band's validity (and the mask file's)
    valid: np.ndarray  # (1 or C_out, H, W) bool: valid_mask
    input_all_valid: bool  # input_ok is True throughout
    all_valid: bool  # valid is True throughout


def _open(path: str) -> rasterio.DatasetReader:
    """``rasterio.open`` with errors naming the file and the not-georeferenced warning muted
    (such files, e.g. Sentinel-2 previews, are compared by their pixel grid only)."""
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise FileNotFoundError(f"raster file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as err:
        raise FileNotFoundError(f"cannot open raster {path}: {err}") from err


def _resolve_spec(spec: BandSpec, bands: Sequence[str], role: str, scene: str) -> list[_Band]:
    """The file and band index of each of ``bands``, from a dict or a ``{band}`` pattern."""
    if not isinstance(spec, (str, Mapping)):
        raise TypeError(
            f"scene {scene!r}: {role}s must be a dict band name -> source or a glob pattern "
            f"with '{{band}}', got {type(spec).__name__} {spec!r}"
        )
    out = []
    for band in bands:
        if isinstance(spec, str):
            if "{band}" not in spec:
                raise ValueError(
                    f"scene {scene!r}: {role} pattern {spec!r} has no '{{band}}' placeholder; "
                    "give a dict band name -> path for single files"
                )
            pattern = spec.replace("{band}", band)
            matches = sorted(glob.glob(pattern))
            if len(matches) != 1:
                found = "no file" if not matches else f"{len(matches)} files ({matches[:3]})"
                raise FileNotFoundError(
                    f"scene {scene!r}: {role} band {band!r}: {found} match {pattern!r} "
                    "(exactly one is needed)"
                )
            out.append(_Band(band, matches[0], 1))
            continue
        if band not in spec:
            raise ValueError(
                f"scene {scene!r}: {role} band {band!r} not found; the scene describes "
                f"{sorted(spec)} (files: {sorted(str(_source_path(s)) for s in spec.values())})"
            )
        source = spec[band]
        if isinstance(source, (tuple, list)) and len(source) != 2:
            raise ValueError(
                f"scene {scene!r}: {role} band {band!r}: a source is a path or (path, band), "
                f"got {source!r}"
            )
        path = str(_source_path(source))
        index = source[1] if isinstance(source, (tuple, list)) else 1
        out.append(_Band(band, path, _band_index(path, index, band)))
    return out


def _source_path(source: BandSource) -> PathLike:
    return source[0] if isinstance(source, (tuple, list)) else source


def _band_index(path: str, index: int | str, band: str) -> int:
    with _open(path) as ds:
        if isinstance(index, str):
            if index not in ds.descriptions:
                raise ValueError(
                    f"band {band!r}: no band described {index!r} in {path} "
                    f"(its band descriptions: {list(ds.descriptions)})"
                )
            return ds.descriptions.index(index) + 1
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= ds.count:
            raise ValueError(
                f"band {band!r}: band index {index!r} out of range for {path} "
                f"({ds.count} band(s), indices start at 1)"
            )
        return index


def _patch_origins(size: int, patch: int, stride: int) -> list[int]:
    """Window offsets along one axis: every ``stride``, plus one ending at the edge."""
    origins = list(range(0, size - patch + 1, stride))
    if origins[-1] != size - patch:
        origins.append(size - patch)
    return origins


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


def _check_stats(
    values: Sequence[float] | None, count: int, name: str, positive: bool = False
) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.size != count:
        raise ValueError(f"{name} has {arr.size} value(s) but there are {count} band(s)")
    if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
        raise ValueError(f"{name} must be finite{' and > 0' if positive else ''}, got {values!r}")
    return arr


@register_dataset(name="masked_bands")
class MaskedBands(Dataset):
    """Windowed patches of input and target bands with the mask of valid target pixels.

    Args:
        scenes: :class:`Scene` objects (or dicts of their fields).
        input_bands: band names fed to the model, in channel order.
        target_bands: band names to predict; ``None``: the same as ``input_bands``.
        patch_size: patch height and width (int or pair); ``None``: whole scenes.
        stride: step between patches (default ``patch_size``: no overlap).
        min_valid_fraction: drop patches whose ``valid_fraction`` is below this (see
            ``skipped_patches``); 0 keeps all.
        nodata: a DN meaning nodata in every band, on top of any declared one (0 for
            Sentinel-2 L1C/L2A, whose files declare none).
        use_declared_nodata: treat each file's declared nodata as invalid too.
        mask_invalid_values: values of the mask file marking invalid pixels (``None``: nonzero).
        scale, offset, clip: ``x = clip((DN + offset) * scale, *clip)``; ``clip=None`` skips it.
        target_offset: the targets' offset when it differs (paired products of different
            processing baselines); ``None``: ``offset``.
        mean, std: per input band normalisation (scaled units), ``None``: none.
        target_mean, target_std: the same for the target bands.
        fill_value: the value of invalid pixels after normalisation, in image and target.
        valid_mask_mode: ``"shared"`` -> ``valid_mask`` (1, H, W); ``"per_band"`` -> (C_out, H, W).
        require_valid_input: a target pixel counts only where every input band is valid.
        reference_band: the band whose grid all bands are read on (default: the finest).
        resampling: how bands on another grid than the reference are resampled onto it (a
            ``rasterio.enums.Resampling`` or its name); default ``nearest``. The same method
            serves bands finer than a coarse ``reference_band`` (``"average"`` suits those).
        output: ``"scaled"`` (float32 samples, ready for a model) or ``"dn"`` (raw DNs and
            validity; scale them per batch with :meth:`batch_transform`).
        transform: an albumentations ``Compose`` (or a callable with its convention), applied
            to numpy ``image`` (H, W, C_in) float32 in scaled units (before normalisation; the
            DNs with ``output="dn"``), with
            ``target`` (H, W, C_out), ``valid_mask`` (H, W, 1|C_out) and ``input_valid``
            (H, W, C_in) declared as mask targets; it must not include ``ToTensorV2``.

    Invalid input pixels (the band's own nodata/NaN or the mask file) and invalid target pixels
    (``~valid_mask``) hold ``fill_value`` after normalisation. ``skipped_patches`` and
    ``total_patches`` count the patches dropped by ``min_valid_fraction`` and all of them.

    A sample is a dict:

    * ``"image"``: (C_in, H, W) float32, normalised, invalid pixels = ``fill_value``;
    * ``"target"``: (C_out, H, W) float32, the same;
    * ``"valid_mask"``: (1 or C_out, H, W) bool, True where the loss may count the target;
    * ``"valid_fraction"``: float32 scalar tensor, the mean of ``valid_mask``.

    With ``output="dn"``, ``"image"`` and ``"target"`` hold the recorded DNs (``dn_dtypes``),
    unscaled and unfilled, and ``"input_valid"`` (C_in, H, W) bool is added; a batch of them goes
    through :meth:`batch_transform` on the device (see the module docstring).
    """

    def __init__(
        self,
        scenes: Sequence[Scene | Mapping[str, Any]],
        input_bands: Sequence[str],
        target_bands: Sequence[str] | None = None,
        *,
        patch_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        min_valid_fraction: float = 0.0,
        nodata: float | None = None,
        use_declared_nodata: bool = True,
        mask_invalid_values: Sequence[float] | None = None,
        scale: float = 1e-4,
        offset: float = 0.0,
        target_offset: float | None = None,
        clip: tuple[float, float] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        fill_value: float = 0.0,
        valid_mask_mode: Literal["shared", "per_band"] = "shared",
        require_valid_input: bool = True,
        reference_band: str | None = None,
        resampling: Resampling | str = Resampling.nearest,
        output: Literal["scaled", "dn"] = "scaled",
        transform: Callable[..., Mapping[str, Any]] | None = None,
    ) -> None:
        if isinstance(scenes, (str, Scene, Mapping)) or not isinstance(scenes, Sequence):
            raise TypeError("scenes must be a sequence of Scene objects or dicts")
        if not scenes:
            raise ValueError("scenes is empty")
        self.input_bands = self._band_list(input_bands, "input_bands")
        self.target_bands = (
            list(self.input_bands)
            if target_bands is None
            else self._band_list(target_bands, "target_bands")
        )
        if valid_mask_mode not in ("shared", "per_band"):
            raise ValueError(
                f"valid_mask_mode must be 'shared' or 'per_band', got {valid_mask_mode!r}"
            )
        if output not in ("scaled", "dn"):
            raise ValueError(f"output must be 'scaled' or 'dn', got {output!r}")
        if not 0.0 <= min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        target_offset = offset if target_offset is None else target_offset
        if not (math.isfinite(scale) and scale != 0):
            raise ValueError(f"scale must be finite and nonzero, got {scale}")
        if not (math.isfinite(offset) and math.isfinite(target_offset)):
            raise ValueError(f"offset and target_offset must be finite: {offset}, {target_offset}")
        if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
            raise ValueError(f"clip must be (low, high) with low < high, got {clip!r}")
        if isinstance(resampling, str):
            try:
                resampling = Resampling[resampling]
            except KeyError:
                names = [r.name for r in Resampling]
                raise ValueError(f"unknown resampling {resampling!r}; one of {names}") from None
        n_in, n_out = len(self.input_bands), len(self.target_bands)
        self.mean = _check_stats(mean, n_in, "mean")
        self.std = _check_stats(std, n_in, "std", positive=True)
        self.target_mean = _check_stats(target_mean, n_out, "target_mean")
        self.target_std = _check_stats(target_std, n_out, "target_std", positive=True)
        self.nodata = nodata
        self.use_declared_nodata = use_declared_nodata
        self.mask_invalid_values = (
            None if mask_invalid_values is None else np.asarray(list(mask_invalid_values))
        )
        self.scale, self.offset, self.clip = float(scale), float(offset), clip
        self.target_offset = float(target_offset)
        self.fill_value = float(fill_value)
        self.valid_mask_mode = valid_mask_mode
        self.require_valid_input = require_valid_input
        self.reference_band = reference_band
        self.resampling = resampling
        self.output = output
        self.transform = transform
        self.min_valid_fraction = float(min_valid_fraction)
        self._handles: dict[Any, Any] = {}
        self._pid = os.getpid()

        self.scenes = [
            self._resolve_scene(Scene.coerce(s, f"scenes[{i}]"), i) for i, s in enumerate(scenes)
        ]
        self.dn_dtypes = {role: self._dn_dtype(role) for role in ("inputs", "targets")}
        self.patch_size = None if patch_size is None else _pair(patch_size, "patch_size")
        step = stride if stride is not None else patch_size
        self.stride = None if step is None else _pair(step, "stride")
        self.patches: list[tuple[int, Window]] = []
        for i, scene in enumerate(self.scenes):
            self.patches.extend((i, w) for w in self._windows(scene))
        self.total_patches = len(self.patches)
        self.skipped_patches = 0
        if self.min_valid_fraction > 0:
            self._drop_sparse_patches()

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def _band_list(bands: Sequence[str], name: str) -> list[str]:
        if isinstance(bands, str) or not all(isinstance(b, str) for b in bands) or not bands:
            raise TypeError(f"{name} must be a non-empty list of band names, got {bands!r}")
        if len(set(bands)) != len(bands):
            raise ValueError(f"{name} has duplicates: {list(bands)}")
        return list(bands)

    def _dn_dtype(self, role: Literal["inputs", "targets"]) -> np.dtype:
        """The dtype holding every DN of the ``role`` bands of all scenes (``output="dn"``)."""
        found = {
            (b.path, b.name): s.dtypes[(b.path, b.index)]
            for s in self.scenes
            for b in getattr(s, role)
        }
        dtype = np.result_type(*found.values())
        if self.output == "dn" and dtype.kind not in "uif":
            kinds = {f"{name} ({path})": str(dt) for (path, name), dt in found.items()}
            raise ValueError(
                f"output='dn' needs real-valued {role} bands; their pixel types are {kinds}"
            )
        return dtype

    def _resolve_scene(self, scene: Scene, i: int) -> _ResolvedScene:
        label = scene.name or f"#{i}"
        inputs = _resolve_spec(scene.inputs, self.input_bands, "input", label)
        target_spec = scene.inputs if scene.targets is None else scene.targets
        targets = _resolve_spec(target_spec, self.target_bands, "target", label)
        name = scene.name or os.path.basename(inputs[0].path)
        mask = None if scene.mask is None else str(scene.mask)
        grids: dict[str, _Grid] = {}
        checks: dict[tuple[str, int], tuple[tuple[Any, ...], bool, bool]] = {}
        dtypes: dict[tuple[str, int], np.dtype] = {}
        for band in inputs + targets:
            with _open(band.path) as ds:
                grids[band.path] = _Grid(ds.crs, ds.transform, ds.height, ds.width)
                declared = ds.nodatavals[band.index - 1] if self.use_declared_nodata else None
                dtype = dtypes[(band.path, band.index)] = np.dtype(ds.dtypes[band.index - 1])
                checks[(band.path, band.index)] = _nodata_checks(dtype, declared, self.nodata)
        if self.reference_band is not None:
            ref_band = next((b for b in inputs + targets if b.name == self.reference_band), None)
            if ref_band is None:
                raise ValueError(
                    f"scene {name!r}: reference_band {self.reference_band!r} is not among the "
                    f"input/target bands {self.input_bands + self.target_bands}"
                )
            ref_path = ref_band.path
        else:  # the finest pixel area; ties: the first band
            ref_path = min(grids, key=lambda p: abs(grids[p].transform.a * grids[p].transform.e))
        ref = grids[ref_path]
        warped = set()
        for path, grid in grids.items():
            self._check_aligned(path, grid, ref_path, ref, name)
            if (grid.height, grid.width) != (ref.height, ref.width):
                if ref.crs is None:
                    raise ValueError(
                        f"scene {name!r}: {path} ({grid.height}x{grid.width}) would need "
                        f"resampling onto {ref_path} ({ref.height}x{ref.width}), but the files "
                        "are not georeferenced (no CRS)"
                    )
                warped.add(path)
        if mask is not None:
            with _open(mask) as ds:
                mask_grid = _Grid(ds.crs, ds.transform, ds.height, ds.width)
            shape = (mask_grid.height, mask_grid.width)
            try:
                self._check_aligned(mask, mask_grid, ref_path, ref, name)
                if shape != (ref.height, ref.width) and ref.crs is None:
                    raise ValueError("the files are not georeferenced, so it cannot be resampled")
            except ValueError as err:
                raise ValueError(
                    f"scene {name!r}: mask file {mask} is {shape[0]}x{shape[1]} and does not "
                    f"line up with the bands' grid ({ref_path}, {ref.height}x{ref.width}): {err}"
                ) from None
            if shape != (ref.height, ref.width):
                warped.add(mask)  # e.g. a 20 m cloud/SCL layer under 10 m bands: nearest
        same = [(b.path, b.index) for b in targets] == [(b.path, b.index) for b in inputs]
        return _ResolvedScene(name, inputs, targets, mask, ref, warped, same, checks, dtypes)

    @staticmethod
    def _check_aligned(path: str, grid: _Grid, ref_path: str, ref: _Grid, scene: str) -> None:
        if grid.crs != ref.crs:
            raise ValueError(
                f"scene {scene!r}: {path} has CRS {grid.crs} but {ref_path} has {ref.crs}; "
                "reproject it onto the same CRS first"
            )
        bounds = rasterio.transform.array_bounds(grid.height, grid.width, grid.transform)
        ref_bounds = rasterio.transform.array_bounds(ref.height, ref.width, ref.transform)
        tol = 0.1 * min(abs(ref.transform.a), abs(ref.transform.e))
        if not np.allclose(bounds, ref_bounds, rtol=0, atol=tol):
            raise ValueError(
                f"scene {scene!r}: {path} covers {tuple(round(b, 3) for b in bounds)} but "
                f"{ref_path} covers {tuple(round(b, 3) for b in ref_bounds)} (south, west, "
                "north, east); the grids cannot be aligned: crop/warp them to the same extent"
            )

    def _windows(self, scene: _ResolvedScene) -> Iterator[Window]:
        height, width = scene.grid.height, scene.grid.width
        if self.patch_size is None:
            yield Window(0, 0, width, height)
            return
        ph, pw = self.patch_size
        if ph > height or pw > width:
            raise ValueError(
                f"scene {scene.name!r} is {height}x{width}, smaller than patch_size {ph}x{pw}"
            )
        sh, sw = self.stride  # type: ignore[misc]
        for row in _patch_origins(height, ph, sh):
            for col in _patch_origins(width, pw, sw):
                yield Window(col, row, pw, ph)

    def _drop_sparse_patches(self) -> None:
        kept = []
        for scene_index, window in self.patches:
            valid = self._read(scene_index, window).valid
            if valid.mean() >= self.min_valid_fraction:
                kept.append((scene_index, window))
        self.close()
        self.skipped_patches = len(self.patches) - len(kept)
        self.patches = kept
        if self.skipped_patches:
            warnings.warn(
                f"MaskedBands: skipped {self.skipped_patches} of {self.total_patches} patches "
                f"with valid_fraction < {self.min_valid_fraction}",
                UserWarning,
                stacklevel=3,
            )
        if not kept:
            raise ValueError(
                f"no patch has valid_fraction >= {self.min_valid_fraction} "
                f"({self.total_patches} patches in {len(self.scenes)} scene(s))"
            )

    # -- per-process file handles -------------------------------------------------------------
    def _reader(self, scene: _ResolvedScene, path: str) -> Any:
        """An open dataset (or a WarpedVRT onto the scene's grid) for ``path`` in this process."""
        if self._pid != os.getpid():  # forked after opening: the parent's handles are not ours
            self._handles = {}
            self._pid = os.getpid()
        warp = path in scene.warped
        key = (path, id(scene)) if warp else path
        handle = self._handles.get(key)
        if handle is None:
            src = self._handles.get(path)
            if src is None:
                src = self._handles[path] = _open(path)
            handle = src
            if warp:
                is_mask = path == scene.mask  # classes: never interpolated, no nodata
                src_nodata = None if is_mask else self._warp_nodata(src)
                handle = WarpedVRT(
                    src,
                    crs=scene.grid.crs,
                    transform=scene.grid.transform,
                    width=scene.grid.width,
                    height=scene.grid.height,
                    resampling=Resampling.nearest if is_mask else self.resampling,
                    **(
                        {}
                        if src_nodata is None
                        else {"src_nodata": src_nodata, "nodata": src_nodata}
                    ),
                )
                self._handles[key] = handle
        return handle

    def _warp_nodata(self, src: Any) -> float | None:
        declared = src.nodata if self.use_declared_nodata else None
        if declared is not None:
            return declared
        if self.nodata is not None:
            return self.nodata
        return math.nan if np.dtype(src.dtypes[0]).kind == "f" else None

    def close(self) -> None:
        """Close the files opened by this process (they reopen on the next read)."""
        for handle in reversed(list(self._handles.values())):
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    # -- reading ------------------------------------------------------------------------------
    def _plan(self, scene: _ResolvedScene, role: Role, dn_dtype: np.dtype | None) -> _ReadPlan:
        key = (role, None if dn_dtype is None else dn_dtype.str)
        plan = scene.plans.get(key)
        if plan is not None:
            return plan
        bands: list[_Band] = getattr(scene, role)
        dtype = np.dtype(np.float32) if dn_dtype is None else dn_dtype
        by_path: dict[str, list[int]] = {}
        for c, band in enumerate(bands):
            by_path.setdefault(band.path, []).append(c)
        steps = []
        for path, channels in by_path.items():
            contiguous = channels == list(range(channels[0], channels[0] + len(channels)))
            # a file's channels out of order in the output: one read per channel
            for group in [channels] if contiguous else [[c] for c in channels]:
                keys = [(path, bands[c].index) for c in group]
                direct = all(
                    scene.dtypes[k] == dtype  # no conversion at all
                    or (  # exact conversion; resampling must happen on the native values
                        dn_dtype is None and path not in scene.warped and scene.nodata_checks[k][2]
                    )
                    for k in keys
                )
                steps.append(
                    _ReadStep(
                        path,
                        [i for _, i in keys],
                        group[0],
                        group[0] + len(group),
                        direct,
                        [scene.nodata_checks[k][:2] for k in keys],
                    )
                )
        checks = {check for step in steps for check in step.checks}
        (values, nan), *others = checks
        shared = (
            values
            if not others and len(values) == 1 and not nan and all(s.direct for s in steps)
            else None
        )
        plan = scene.plans[key] = _ReadPlan(steps, len(bands), shared)
        return plan

    def _read_bands(
        self, scene: _ResolvedScene, role: Role, window: Window, dn_dtype: np.dtype | None
    ) -> tuple[np.ndarray, np.ndarray, list[bool]]:
        """DNs (C, H, W) of the ``role`` bands, their validity (C, H, W) bool (without the mask
        file) and whether each channel is valid throughout (so that the common fully valid patch
        skips later passes). Bands of one file are read in one call, straight into the output
        when GDAL's conversion is exact.

        ``dn_dtype=None``: a float32 working copy for scaling, NaN/inf set to 0 (they are
        invalid, and the arithmetic fill needs finite values). Otherwise the DNs as recorded,
        in ``dn_dtype`` (``output="dn"``)."""
        plan = self._plan(scene, role, dn_dtype)
        shape = (plan.channels, int(window.height), int(window.width))
        data = np.empty(shape, np.float32 if dn_dtype is None else dn_dtype)
        valid = np.empty(shape, bool)
        if plan.shared_nodata is not None:
            for step in plan.steps:
                reader = self._reader(scene, step.path)
                reader.read(step.indexes, window=window, out=data[step.first : step.stop])
            np.not_equal(data, plan.shared_nodata[0], out=valid)
            if valid.all():
                return data, valid, [True] * plan.channels
            return data, valid, valid.reshape(plan.channels, -1).all(axis=1).tolist()
        all_valid = [True] * plan.channels
        for step in plan.steps:
            reader = self._reader(scene, step.path)
            if step.direct:
                raw = reader.read(step.indexes, window=window, out=data[step.first : step.stop])
            else:
                raw = reader.read(step.indexes, window=window)  # (k, H, W) native
            for k, (values, nan) in enumerate(step.checks):
                c = step.first + k
                if values:
                    np.not_equal(raw[k], values[0], out=valid[c])
                    for value in values[1:]:
                        valid[c] &= raw[k] != value
                else:
                    valid[c] = True
                if not step.direct:
                    data[c] = raw[k]
                if nan:
                    finite = np.isfinite(raw[k])
                    valid[c] &= finite
                    if dn_dtype is None:
                        np.copyto(data[c], 0.0, where=~finite)
                if values or nan:
                    all_valid[c] = bool(valid[c].all())
        return data, valid, all_valid

    def _read_mask(self, scene: _ResolvedScene, window: Window) -> np.ndarray | None:
        if scene.mask is None:
            return None
        values = self._reader(scene, scene.mask).read(1, window=window)
        if self.mask_invalid_values is None:
            return values == 0
        return ~np.isin(values, self.mask_invalid_values)

    def _read(
        self, scene_index: int, window: Window, output: Literal["scaled", "dn"] = "scaled"
    ) -> _Patch:
        """The arrays of one patch before fill, transform and normalisation (see
        :class:`_Patch`). ``output="scaled"``: image and target scaled, float32; ``"dn"``: the
        recorded DNs in ``dn_dtypes``."""
        scene = self.scenes[scene_index]
        dn = output == "dn"
        in_dtype = self.dn_dtypes["inputs"] if dn else None
        out_dtype = self.dn_dtypes["targets"] if dn else None
        if in_dtype != out_dtype:
            image, input_ok, in_flags = self._read_bands(scene, "inputs", window, in_dtype)
            target, target_ok, out_flags = self._read_bands(scene, "targets", window, out_dtype)
        elif scene.targets_are_inputs:  # gap filling, identity: read once
            image, input_ok, in_flags = self._read_bands(scene, "inputs", window, in_dtype)
            target, target_ok, out_flags = image.copy(), input_ok.copy(), in_flags
        else:  # one buffer, so that the reads and checks of a file's bands are one call each
            both, both_ok, flags = self._read_bands(scene, "inputs_then_targets", window, in_dtype)
            n_in = len(scene.inputs)
            image, target, input_ok, target_ok = (
                both[:n_in],
                both[n_in:],
                both_ok[:n_in],
                both_ok[n_in:],
            )
            in_flags, out_flags = flags[:n_in], flags[n_in:]
        input_all, target_all = all(in_flags), all(out_flags)
        mask_ok = self._read_mask(scene, window)
        if mask_ok is not None and not mask_ok.all():
            input_ok &= mask_ok
            target_ok &= mask_ok
            input_all = target_all = False
        if self.require_valid_input and not input_all:
            target_ok &= np.logical_and.reduce(input_ok, axis=0)
            target_all = False
        if self.valid_mask_mode == "shared" and len(target_ok) > 1:
            target_ok = np.logical_and.reduce(target_ok, axis=0, keepdims=True)
        if not dn:
            image = self._scale(image, self.offset)
            target = self._scale(target, self.target_offset)
        return _Patch(image, target, input_ok, target_ok, input_all, target_all)

    def _scale(self, dn: np.ndarray, offset: float) -> np.ndarray:
        """``clip((DN + offset) * scale)``, in place on a float32 array."""
        x = dn
        if offset:
            x += np.float32(offset)
        x *= np.float32(self.scale)
        if self.clip is not None:
            np.clip(x, self.clip[0], self.clip[1], out=x)
        return x

    def __len__(self) -> int:
        return len(self.patches)

    def describe(self, index: int) -> str:
        """The scene name and pixel window of sample ``index`` (for messages)."""
        scene_index, window = self.patches[index]
        w = window
        return (
            f"{self.scenes[scene_index].name} rows {w.row_off}:{w.row_off + w.height} "
            f"cols {w.col_off}:{w.col_off + w.width}"
        )

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        index %= len(self)
        scene_index, window = self.patches[index]
        patch = self._read(scene_index, window, self.output)
        image, target, input_ok, valid = patch.image, patch.target, patch.input_ok, patch.valid
        input_all, valid_all = patch.input_all_valid, patch.all_valid
        scaled = self.output == "scaled"
        if self.transform is not None:
            if scaled:
                # Invalid pixels first get the value that normalises to fill_value, so that no
                # raw nodata value (e.g. -9999 * 1e-4) is interpolated into valid pixels.
                fill = self._unnormalised_fill(self.mean, self.std)
                _fill(image, input_ok, fill, input_all)
                fill = self._unnormalised_fill(self.target_mean, self.target_std)
                _fill(target, valid, fill, valid_all)
            hwc_image, out = apply_transform(
                self.transform,
                _hwc(image),
                {"target": _hwc(target), "valid_mask": _hwc(valid), "input_valid": _hwc(input_ok)},
                where=f"masked_bands sample {index} ({self.describe(index)})",
            )
            image, target = _chw(hwc_image, image.dtype), _chw(out["target"], target.dtype)
            valid, input_ok = _chw(out["valid_mask"], bool), _chw(out["input_valid"], bool)
            input_all = valid_all = None  # e.g. padding: look again
        if scaled:
            _normalise(image, self.mean, self.std)
            _normalise(target, self.target_mean, self.target_std)
            _fill(image, input_ok, np.float32(self.fill_value), input_all)
            _fill(target, valid, np.float32(self.fill_value), valid_all)
        sample = {"image": torch.from_numpy(image), "target": torch.from_numpy(target)}
        if not scaled:  # the scaler fills the invalid inputs on the device
            sample["input_valid"] = torch.from_numpy(input_ok)
        sample["valid_mask"] = torch.from_numpy(valid)
        fraction = 1.0 if valid_all else np.count_nonzero(valid) / valid.size
        sample["valid_fraction"] = torch.scalar_tensor(fraction, dtype=torch.float32)
        return sample

    def batch_transform(self) -> BandScaler | None:
        """What makes a batch of this dataset's samples model-ready, on the batch's device:
        for ``output="dn"`` a :class:`~smp_imbalance.datasets.band_scaling.BandScaler` with this
        dataset's scale, offsets, clip, statistics and fill value; ``None`` for ``"scaled"``
        samples (ready as they are). The training recipes apply it after the batch reaches
        the device."""
        if self.output == "scaled":
            return None
        stats = {
            name: None if v is None else v.tolist()
            for name, v in (
                ("mean", self.mean),
                ("std", self.std),
                ("target_mean", self.target_mean),
                ("target_std", self.target_std),
            )
        }
        return BandScaler(
            scale=self.scale,
            offset=self.offset,
            target_offset=self.target_offset,
            clip=self.clip,
            fill_value=self.fill_value,
            **stats,
        )

    def _unnormalised_fill(self, mean: np.ndarray | None, std: np.ndarray | None) -> Any:
        fill = np.float32(self.fill_value)
        if mean is None and std is None:
            return fill
        value = fill * (1.0 if std is None else std) + (0.0 if mean is None else mean)
        return np.asarray(value, np.float32).reshape(-1, 1, 1)


def _nodata_checks(
    dtype: np.dtype, declared: float | None, user: float | None
) -> tuple[tuple[Any, ...], bool, bool]:
    """The DN values to treat as nodata for a band of ``dtype`` (those it can hold), whether NaN
    is nodata (always, for float bands), and whether float32 holds every value of ``dtype``
    exactly (so the band may be read straight into float32)."""
    values = []
    for value in (declared, user):
        if value is None or math.isnan(value):
            continue
        if dtype.kind == "f":
            values.append(dtype.type(value))
        elif float(value).is_integer() and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max:
            values.append(dtype.type(int(value)))
    exact = dtype in (np.uint8, np.int8, np.uint16, np.int16, np.float32)
    return tuple(dict.fromkeys(values)), dtype.kind == "f", exact


def _normalise(x: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> None:
    """``x = (x - mean) / std`` per band of a (C, H, W) float32 array, in place."""
    if mean is not None:
        x -= mean[:, None, None]
    if std is not None:
        x /= std[:, None, None]


def _fill(x: np.ndarray, ok: np.ndarray, value: Any, all_valid: bool | None = None) -> None:
    """``x = where(ok, x, value)`` in place, as ``x * ok + value * ~ok`` (exact because ``x`` is
    finite; ``np.copyto(where=)`` is up to 40x slower on scattered masks). ``ok`` broadcasts to
    ``x``. A fully valid ``ok`` (most patches of a scene) returns at once: ``all_valid`` when
    the caller knows (True/False), else checked here (about a tenth of the multiply)."""
    if all_valid or (all_valid is None and ok.all()):
        return
    np.multiply(x, ok, out=x)
    if np.any(value != 0):
        x += np.logical_not(ok) * value


_CV2_DEPTHS = {np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32)} | {
    np.dtype(np.float32),
    np.dtype(np.float64),
}


def _hwc(x: np.ndarray) -> np.ndarray:
    """(C, H, W) -> contiguous (H, W, C) (``cv2.merge``: ~5x a numpy copy, for its dtypes)."""
    if x.shape[0] == 1:
        return x.reshape(x.shape[1], x.shape[2], 1)
    if x.dtype == np.bool_:
        return cv2.merge(list(x.view(np.uint8))).view(np.bool_)
    if x.dtype not in _CV2_DEPTHS:
        return np.ascontiguousarray(x.transpose(1, 2, 0))
    return cv2.merge(list(x))


def _chw(x: np.ndarray, dtype: type) -> np.ndarray:
    """(H, W, C) -> a C-contiguous, writable (C, H, W) array of ``dtype`` (a copy if needed)."""
    x = x.reshape(1, *x.shape[:2]) if x.shape[2] == 1 else x.transpose(2, 0, 1)
    return np.require(x, dtype, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"])


@dataclass(frozen=True)
class BandStatistics:
    """Per-band statistics over valid pixels, in scaled units (after scale/offset/clip).

    ``mean = sum(x) / n``, ``std = sqrt(sum(x^2) / n - mean^2)`` (population std, float64 sums).
    """

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: tuple[int, ...]


def band_statistics(
    dataset: MaskedBands, max_patches: int | None = None, seed: int = 0
) -> dict[str, BandStatistics]:
    """Mean and std of each input and target band over the valid pixels of ``dataset``'s patches.

    Reads the patches without transform or normalisation (overlapping patches count their shared
    pixels twice). A pixel of an input band counts where that band, and the mask file, are
    valid; a target band's pixel where ``valid_mask`` is True. ``max_patches`` draws that many
    patches at random (``seed``). Returns ``{"image": ..., "target": ...}``; pass
    ``stats["image"].mean`` as ``mean=`` etc. Raises ``ValueError`` if a band has no valid pixel.
    """
    if not isinstance(dataset, MaskedBands):
        raise TypeError(f"band_statistics needs a MaskedBands, got {type(dataset).__name__}")
    indices = np.arange(len(dataset))
    if max_patches is not None and max_patches < len(indices):
        indices = np.random.default_rng(seed).choice(indices, size=max_patches, replace=False)
    n_in, n_out = len(dataset.input_bands), len(dataset.target_bands)
    sums = {"image": np.zeros((3, n_in)), "target": np.zeros((3, n_out))}
    for i in indices:
        patch = dataset._read(*dataset.patches[int(i)])
        image, target, input_ok, valid = patch.image, patch.target, patch.input_ok, patch.valid
        valid = np.broadcast_to(valid, target.shape)  # (C, H, W)
        for key, x, ok in (("image", image, input_ok), ("target", target, valid)):
            x64 = np.where(ok, x, 0.0).astype(np.float64)
            sums[key] += [ok.sum(axis=(1, 2)), x64.sum(axis=(1, 2)), (x64**2).sum(axis=(1, 2))]
    out = {}
    for key, bands in (("image", dataset.input_bands), ("target", dataset.target_bands)):
        n, s, s2 = sums[key]
        empty = [b for b, k in zip(bands, n, strict=True) if k == 0]
        if empty:
            raise ValueError(f"band_statistics: {key} band(s) {empty} have no valid pixel")
        mean = s / n
        std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
        out[key] = BandStatistics(
            tuple(bands), tuple(map(float, mean)), tuple(map(float, std)), tuple(map(int, n))
        )
    return out


def _display(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, 3|1) in [0, 1]: the first 3 bands (or 1) stretched jointly between
    the 2nd and 98th percentiles of their valid pixels (keeps the colour balance); invalid black."""
    x = x[:3] if x.shape[0] >= 3 else x[:1]
    values = x[:, ok]
    lo, hi = np.percentile(values, [2, 98]) if values.size else (0.0, 1.0)
    out = np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)
    out[:, ~ok] = 0
    return out.transpose(1, 2, 0)


def preview_figure(dataset: MaskedBands, n: int = 4, seed: int = 0) -> Figure:
    """A grid of ``n`` random samples: input (first 3 bands as RGB), target, invalid mask."""
    from matplotlib.figure import Figure  # no pyplot: no global figure, no GUI backend

    rng = np.random.default_rng(seed)
    indices = rng.choice(len(dataset), size=min(n, len(dataset)), replace=False)
    fig = Figure(figsize=(9, 3 * len(indices)), layout="constrained")
    axes = fig.subplots(len(indices), 3, squeeze=False)
    scaler = dataset.batch_transform()  # DN samples: scaled as the training recipes would
    for row, i in enumerate(indices):
        sample = dataset[int(i)]
        if scaler is not None:
            sample = scaler(sample)
        valid = sample["valid_mask"].all(dim=0).numpy()
        panels = [
            (
                _display(sample["image"].numpy(), valid),
                "input " + "/".join(dataset.input_bands[:3]),
            ),
            (
                _display(sample["target"].numpy(), valid),
                "target " + "/".join(dataset.target_bands[:3]),
            ),
            (~valid, f"invalid ({1 - float(sample['valid_fraction']):.1%})"),
        ]
        for col, (img, title) in enumerate(panels):
            ax = axes[row, col]
            gray = img.ndim == 2 or img.shape[-1] == 1
            ax.imshow(img.squeeze(), cmap="gray" if gray else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(dataset.describe(int(i)).replace(" rows", "\nrows"), fontsize=7)
    return fig
