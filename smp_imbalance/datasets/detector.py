"""Sparse particle-detector frames (LHCb-TORCH-like) for denoising, degraded on the fly.

A frame is a (H, W) = (128, 88) image of the photon-detector plane whose pixel value is a
time-of-arrival bin 1..1000 (0 = no hit); about 98 % of the pixels of a noisy frame are zero.
:class:`DetectorFrames` serves clean frames, simulated (``source=None``, see
:mod:`smp_imbalance.datasets.detector_sim` for the physics) or read from files, and degrades
each one when it is fetched: keep ``k`` random signal hits, optionally jitter them, add ``n``
uniform noise hits, the later time winning where hits share a pixel.

Sample (a dict of tensors)
--------------------------
* ``"image"``: (1, H, W) float32, the noisy frame (normalised times, see below).
* ``"target"``: (1, H, W) float32, ``target="clean"`` (default): the *whole* clean frame, every
  signal hit, as DeepClean3D reconstructs; ``target="kept"``: only the kept (jittered) signal
  hits. The default asks the network to recover the full track pattern from a few hits, which
  is a denser, learnable target (a random subset of hits is not predictable from the input);
  the input's own hits can then be kept where the output lights up. ``"kept"`` is the pure
  hit-classification target.
* ``"signal_mask"``: (1, H, W) bool, pixels whose noisy value is a kept signal hit's time.
* ``"noise_mask"``: (1, H, W) bool, pixels whose noisy value is a noise hit's time.
  Where noise and signal share a pixel the later time wins and the pixel belongs to the winner
  (a tie is one value and counts as signal); a signal hit overwritten by later noise is in
  ``noise_mask``, not ``signal_mask`` (it is lost from the input but still in the clean
  target). The masks are disjoint and ``signal_mask | noise_mask == (image > 0)``.

Times are normalised (``normalize=True``) as ``t_norm = gap + (1 - gap) (t - 1) / 999`` for
``t >= 1`` and ``0`` for no hit (:func:`normalize_times`; invert network outputs with
:func:`denormalize_times`), else served as raw bins in float32.

Randomness
----------
A simulated clean frame depends only on ``(seed, index)``. The degradation is drawn per frame
(never per batch): with ``train=False`` from ``(seed, index)`` too, so a validation set is the
same in every epoch, whatever the worker count; with ``train=True`` from a generator seeded by
``(seed, torch.initial_seed())`` per process, so every epoch (DataLoader workers are reseeded
each epoch) and every worker sees new degradations, reproducibly under ``torch.manual_seed``.

Files
-----
``source`` may be a ``.npy`` or ``.npz`` file, a folder (its ``*.npy`` and ``*.npz`` files,
sorted, not recursive), a list of such files, or an in-memory array. Each file holds one frame
(128, 88) or a stack (N, 128, 88), integer or float with integral values in 0..1000. ``.npy``
files are memory-mapped (``np.load(mmap_mode="r")``), so only the frames fetched are read.
``.npz`` archives are zip members and cannot be memory-mapped: the member (``npz_key``, or the
only array in the archive) is decompressed whole on first use and kept in that process; convert
big stacks to ``.npy``. Shapes and dtypes are checked from the headers when the dataset is built;
values are checked per frame when it is read (``validate=True`` checks every frame up front).
Files are opened lazily in each process and never pickled, so ``DataLoader(num_workers>0)`` works.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from smp_imbalance.datasets._common import apply_transform
from smp_imbalance.datasets.detector_sim import (
    FRAME_SHAPE,
    MAX_TIME,
    TorchGeometry,
    check_range,
    degrade,
    denormalize_times,
    normalize_times,
    simulate_frame,
)
from smp_imbalance.registry import register_dataset

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FRAME_SHAPE",
    "MAX_TIME",
    "DetectorFrames",
    "TorchGeometry",
    "denormalize_times",
    "normalize_times",
    "preview_figure",
]

Source = str | os.PathLike | np.ndarray | Sequence[str | os.PathLike] | None
_SUFFIXES = (".npy", ".npz")
_CHUNK = 1024  # frames per chunk when validating a whole file


@dataclass(frozen=True)
class _FrameFile:
    """One file of frames: ``count`` frames, a stack (N, H, W) if ``stacked`` else one (H, W)."""

    path: Path
    key: str | None  # the .npz member, None for .npy
    count: int
    stacked: bool


@register_dataset(name="detector_frames")
class DetectorFrames(Dataset):
    """Noisy/clean pairs of sparse TORCH-like frames, simulated or read, degraded on the fly.

    See the module docstring for the sample keys, the mask semantics, the randomness and the
    file formats.

    Args:
        source: ``None`` to simulate frames; a ``.npy``/``.npz`` file, a folder of them, a list
            of files, or an array (128, 88) / (N, 128, 88) of clean frames (validated here,
            not copied).
        num_frames: frames to simulate (default 1000); with a ``source``, use only the first
            ``num_frames`` frames (``ValueError`` if there are fewer; default all).
        seed: seed of the simulation and of the validation degradation.
        signal_hits: inclusive range of ``k``, the signal hits kept per frame (capped at the
            clean frame's hit count).
        noise_hits: inclusive range of ``n``, the noise hits added per frame.
        position_jitter: sigma (pixels) of the Gaussian shift of each kept hit, rounded.
        time_jitter: sigma (time bins) of the Gaussian shift of each kept hit's time, rounded.
        gap: the normalised value of the earliest time bin, in (0, 1).
        normalize: serve times normalised to {0} U [gap, 1] (else raw bins as float32).
        target: ``"clean"`` (all signal hits) or ``"kept"`` (the kept signal hits only).
        train: random degradation per fetch (True) or fixed per index (False).
        transform: an ``A.Compose`` (or a callable with its convention) applied to the image
            (H, W, 1) float32 and the targets ``target``, ``signal_mask``, ``noise_mask``,
            declared as masks so they move with the image. Leave ``ToTensorV2`` out.
        tracks: inclusive range of the number of tracks per simulated frame.
        photons_per_track: inclusive range of the detected photons per simulated track.
        geometry: the simulated detector (:class:`TorchGeometry`; default values if None).
        npz_key: the array to read from ``.npz`` archives (default: their only array).
        validate: check every frame's values when the dataset is built (default: per fetch).
    """

    def __init__(
        self,
        source: Source = None,
        num_frames: int | None = None,
        *,
        seed: int = 0,
        signal_hits: int | tuple[int, int] = (25, 35),
        noise_hits: int | tuple[int, int] = (180, 220),
        position_jitter: float = 0.0,
        time_jitter: float = 0.0,
        gap: float = 0.1,
        normalize: bool = True,
        target: Literal["clean", "kept"] = "clean",
        train: bool = True,
        transform: Callable[..., Mapping[str, Any]] | None = None,
        tracks: int | tuple[int, int] = (1, 3),
        photons_per_track: int | tuple[int, int] = (60, 120),
        geometry: TorchGeometry | None = None,
        npz_key: str | None = None,
        validate: bool = False,
    ) -> None:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if target not in ("clean", "kept"):
            raise ValueError(f"target must be 'clean' or 'kept', got {target!r}")
        for name, value in (("position_jitter", position_jitter), ("time_jitter", time_jitter)):
            number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not number or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        # normalised value of every time bin 0..MAX_TIME (validates gap); frames index it
        self._lut = normalize_times(np.arange(MAX_TIME + 1), gap)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if num_frames is not None and (
            not isinstance(num_frames, (int, np.integer))
            or isinstance(num_frames, bool)
            or num_frames < 1
        ):
            raise ValueError(f"num_frames must be a positive int or None, got {num_frames!r}")
        self.seed = int(seed)
        self.signal_hits = check_range(signal_hits, "signal_hits")
        self.noise_hits = check_range(noise_hits, "noise_hits")
        self.position_jitter = float(position_jitter)
        self.time_jitter = float(time_jitter)
        self.gap = float(gap)
        self.normalize = bool(normalize)
        self.target = target
        self.train = bool(train)
        self.transform = transform
        self.tracks = check_range(tracks, "tracks")
        self.photons_per_track = check_range(photons_per_track, "photons_per_track")
        self.geometry = geometry or TorchGeometry()
        self.npz_key = npz_key

        self.files: list[_FrameFile] = []
        self._memory: np.ndarray | None = None
        self.simulated = source is None
        if source is None:
            total = 1000 if num_frames is None else int(num_frames)
        elif isinstance(source, np.ndarray):
            self._memory = _check_memory_array(source)
            total = len(self._memory)
        else:
            self.files = [_inspect_file(p, npz_key) for p in _list_files(source)]
            total = sum(f.count for f in self.files)
        if source is not None and num_frames is not None:
            if num_frames > total:
                raise ValueError(f"num_frames={num_frames} but the source holds {total} frames")
            total = int(num_frames)
        self._len = total
        self._offsets = np.cumsum([0] + [f.count for f in self.files])
        self._arrays: dict[int, np.ndarray] = {}  # per-process cache of opened files
        self._rng: np.random.Generator | None = None
        self._rng_key: int | None = None
        if validate and self.files:
            for i in range(len(self.files)):
                self._validate_file(i)

    # -- pickling: file handles and generators stay in their process -------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}
        state["_rng"] = None
        state["_rng_key"] = None
        return state

    def __len__(self) -> int:
        return self._len

    # -- clean frames -------------------------------------------------------------------------
    def where(self, index: int) -> str:
        """Where frame ``index`` comes from, for messages: a file and frame, or the simulator."""
        index = self._check_index(index)
        if self.simulated:
            return f"DetectorFrames[{index}] (simulated, seed={self.seed})"
        if self._memory is not None:
            return f"DetectorFrames[{index}] (in-memory array, frame {index})"
        i, local = self._locate(index)
        return f"{self.files[i].path} (frame {local})"

    def clean_frame(self, index: int) -> np.ndarray:
        """The clean frame ``index`` as an int64 (128, 88) array of time bins (0 = no hit)."""
        index = self._check_index(index)
        if self.simulated:
            rng = np.random.default_rng([self.seed, index, 0])
            return simulate_frame(rng, self.tracks, self.photons_per_track, self.geometry)
        if self._memory is not None:
            return self._memory[index].astype(np.int64)
        i, local = self._locate(index)
        array = self._open(i)
        frame = np.asarray(array[local] if self.files[i].stacked else array)
        _check_values(frame, f"{self.files[i].path} (frame {local})")
        return frame.astype(np.int64)

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"DetectorFrames index must be an int, got {type(index).__name__}")
        if not -self._len <= index < self._len:
            raise IndexError(f"DetectorFrames index {index} out of range for {self._len} frames")
        return int(index) % self._len

    def _locate(self, index: int) -> tuple[int, int]:
        i = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return i, index - int(self._offsets[i])

    def _open(self, i: int) -> np.ndarray:
        array = self._arrays.get(i)
        if array is None:
            f = self.files[i]
            if f.key is None:
                array = np.load(f.path, mmap_mode="r", allow_pickle=False)
            else:
                with np.load(f.path, allow_pickle=False) as archive:
                    array = archive[f.key]
            self._arrays[i] = array
        return array

    def _validate_file(self, i: int) -> None:
        f, array = self.files[i], self._open(i)
        if not f.stacked:
            _check_values(np.asarray(array), f"{f.path} (frame 0)")
            return
        for start in range(0, f.count, _CHUNK):
            chunk = np.asarray(array[start : start + _CHUNK])
            _check_values(chunk, f"{f.path} (frames {start}..{start + len(chunk) - 1})")

    # -- samples ------------------------------------------------------------------------------
    def _degradation_rng(self, index: int) -> np.random.Generator:
        if not self.train:
            return np.random.default_rng([self.seed, index, 1])
        key = torch.initial_seed()  # differs per DataLoader worker and per epoch
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng([self.seed, key, 2])
            self._rng_key = key
        return self._rng

    def arrays(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` before the transform: numpy (H, W), float32 frames, bool masks."""
        index = self._check_index(index)
        clean = self.clean_frame(index)
        degraded = degrade(
            clean,
            self._degradation_rng(index),
            self.signal_hits,
            self.noise_hits,
            self.position_jitter,
            self.time_jitter,
        )
        target = clean if self.target == "clean" else degraded.kept
        return {
            "image": self._scale(degraded.noisy),
            "target": self._scale(target),
            "signal_mask": degraded.signal_mask,
            "noise_mask": degraded.noise_mask,
        }

    def _scale(self, frame: np.ndarray) -> np.ndarray:
        """int time bins (validated, 0..MAX_TIME) -> float32, normalised or raw."""
        return self._lut[frame] if self.normalize else frame.astype(np.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index``: ``image``/``target`` (1, H, W) float32, masks (1, H, W) bool."""
        sample = self.arrays(index)
        if self.transform is not None:
            image = sample.pop("image")[..., None]
            targets = {k: v[..., None] for k, v in sample.items()}
            image, targets = apply_transform(
                self.transform, image, targets, where=self.where(index)
            )
            sample = {"image": image, **targets}
        dtypes = {"image": np.float32, "target": np.float32}
        return {k: _to_tensor(v, dtypes.get(k, np.bool_)) for k, v in sample.items()}

    def __repr__(self) -> str:
        if self.simulated:
            what = f"simulated, seed={self.seed}"
        elif self._memory is not None:
            what = "in-memory array"
        else:
            what = f"{len(self.files)} file(s)"
        return (
            f"DetectorFrames({len(self)} frames, {what}, signal_hits={self.signal_hits}, "
            f"noise_hits={self.noise_hits}, target={self.target!r}, train={self.train})"
        )


def _to_tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    """(H, W) or (H, W, C) numpy -> (1, H, W) or (C, H, W) tensor of ``dtype``."""
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))


# -- reading and checking ---------------------------------------------------------------------
def _list_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file()
            )
            if not files:
                raise FileNotFoundError(f"no .npy or .npz files in the folder {path}")
            return files
        paths = [path]
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, bytearray)):
        paths = [Path(p) for p in source]
        if not paths:
            raise ValueError("source is an empty list of files")
    else:
        raise TypeError(
            "source must be None, a path, a list of paths or a numpy array, "
            f"got {type(source).__name__}"
        )
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        if path.suffix.lower() not in _SUFFIXES:
            raise ValueError(f"{path}: expected a .npy or .npz file")
    return paths


def _inspect_file(path: Path, npz_key: str | None) -> _FrameFile:
    """Shape and dtype of a file's array from its header (nothing decompressed or mapped)."""
    try:
        if path.suffix.lower() == ".npy":
            key = None
            with open(path, "rb") as fp:
                shape, dtype = _read_header(fp)
        else:
            with zipfile.ZipFile(path) as archive:
                members = [m[:-4] for m in archive.namelist() if m.endswith(".npy")]
                if npz_key is not None:
                    key = npz_key
                    if key not in members:
                        raise ValueError(f"has no array {key!r} (arrays: {members})")
                elif len(members) == 1:
                    key = members[0]
                else:
                    raise ValueError(f"holds arrays {members}; pick one with npz_key")
                with archive.open(key + ".npy") as fp:
                    shape, dtype = _read_header(fp)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable frame file: {err}") from err
    if shape[-2:] != FRAME_SHAPE or len(shape) not in (2, 3) or (len(shape) == 3 and not shape[0]):
        raise ValueError(
            f"{path}: array of shape {shape}; expected one frame {FRAME_SHAPE} or a stack "
            f"(N, {FRAME_SHAPE[0]}, {FRAME_SHAPE[1]}) with N >= 1"
        )
    if dtype.kind not in "iuf":
        raise ValueError(f"{path}: dtype {dtype} is not an integer or float type")
    return _FrameFile(path, key, shape[0] if len(shape) == 3 else 1, len(shape) == 3)


def _read_header(fp: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):  # 3.0 differs from 2.0 only by a utf-8 header
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _check_values(frames: np.ndarray, where: str) -> None:
    """Values must be whole numbers (any int or float dtype) in 0..MAX_TIME, else ValueError."""
    if frames.dtype.kind == "f":
        if not np.isfinite(frames).all():
            raise ValueError(f"{where}: holds NaN or infinite values")
        if not (frames == np.round(frames)).all():
            raise ValueError(f"{where}: float values must be whole time bins (integral)")
    elif frames.dtype.kind not in "iu":
        raise ValueError(f"{where}: dtype {frames.dtype} is not an integer or float type")
    if frames.size and (frames.min() < 0 or frames.max() > MAX_TIME):
        raise ValueError(
            f"{where}: values must be time bins in 0..{MAX_TIME} (0 = no hit), found "
            f"{frames.min()}..{frames.max()}"
        )


def _check_memory_array(array: np.ndarray) -> np.ndarray:
    where = "in-memory source array"
    if array.shape[-2:] != FRAME_SHAPE or array.ndim not in (2, 3) or array.size == 0:
        raise ValueError(
            f"{where}: shape {array.shape}; expected one frame {FRAME_SHAPE} or a stack "
            f"(N, {FRAME_SHAPE[0]}, {FRAME_SHAPE[1]}) with N >= 1"
        )
    _check_values(array, where)
    return array[None] if array.ndim == 2 else array


# -- preview ----------------------------------------------------------------------------------
def preview_figure(dataset: DetectorFrames, n: int = 4, seed: int = 0) -> Figure:
    """A grid of ``n`` random samples, one row each: noisy input, clean target, which input
    hits are signal (green) or noise (red), and the target's hits in (x column, time bin).

    Reads the samples without the dataset's transform. Uses the matplotlib object API with the
    Agg canvas (no pyplot, no global backend change); save with ``fig.savefig(path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    if not isinstance(dataset, DetectorFrames):
        raise TypeError(f"preview_figure: expected a DetectorFrames, got {type(dataset).__name__}")
    if n < 1:
        raise ValueError(f"preview_figure: n must be >= 1, got {n}")
    picks = np.sort(np.random.default_rng(seed).choice(len(dataset), min(n, len(dataset)), False))
    fig = Figure(figsize=(10, 3.2 * len(picks)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(picks), 4, squeeze=False, width_ratios=[1, 1, 1, 1.6])
    hit_colors = ListedColormap(["#1a1a1a", "#2ca02c", "#d62728"])
    vmax = 1.0 if dataset.normalize else float(MAX_TIME)
    for row, index in zip(axes, picks, strict=True):
        s = dataset.arrays(int(index))
        image, target = s["image"], s["target"]
        times = denormalize_times(target, dataset.gap) if dataset.normalize else target
        for ax, frame, title in (
            (row[0], image, f"noisy input #{index}: {int((image > 0).sum())} hits"),
            (row[1], target, f"{dataset.target} target: {int((target > 0).sum())} hits"),
        ):
            shown = np.ma.masked_equal(frame, 0)
            ax.set_facecolor("#1a1a1a")
            im = ax.imshow(shown, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(title, fontsize=8)
        classes = s["signal_mask"].astype(np.int8) + 2 * s["noise_mask"].astype(np.int8)
        row[2].imshow(classes, cmap=hit_colors, vmin=0, vmax=2, interpolation="nearest")
        row[2].set_title(
            f"signal {int(s['signal_mask'].sum())} (green) / noise "
            f"{int(s['noise_mask'].sum())} (red)",
            fontsize=8,
        )
        hit_rows, hit_cols = np.nonzero(times)
        row[3].scatter(hit_cols, times[hit_rows, hit_cols], c=hit_rows, s=4, cmap="plasma")
        row[3].set_xlim(-0.5, FRAME_SHAPE[1] - 0.5)
        row[3].set_xlabel("x (column)", fontsize=7)
        row[3].set_ylabel("time bin", fontsize=7)
        row[3].set_title("target hits in (x, t), colour = row", fontsize=8)
        for ax in row[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=row[1], fraction=0.05, label="time" if dataset.normalize else "bin")
    fig.suptitle(f"detector_frames: {dataset!r}", fontsize=8)
    return fig
