"""Throughput of ``MaskedBands`` against the bare rasterio windowed read of the same patches.

Scene: a 512 x 512 crop (at 10 m; B11 at 20 m) of a Sentinel-2 L1C subset of tile 33UUU, shipped
in ``benchmarks/data/s2_l1c_T33UUU_20170216`` (see its ``SOURCES.md``; ``--scene DIR`` reads
another folder of ``T33UUU_20170216T102101_{band}.jp2`` files, e.g. the whole 1536 x 768 subset
of eo-box on which BENCHMARKS.md was measured), inputs B02, B03, B04, target B08 (or B11), 256 x 256 patches, ``nodata=0``.
One timed call ("a pass") reads every patch once. Cases:

* ``jp2``: the original JPEG2000 files;
* ``gtiff``: the same bands rewritten as tiled (256 x 256), deflate GeoTIFFs in a temporary folder;
* ``jp2 + B11``: target B11 (20 m) resampled onto the 10 m grid (nearest): the adapter reads it
  through a ``WarpedVRT``, the bare read is a decimated ``read(out_shape=...)`` of its window.

Each case is timed twice: with the files opened anew on every pass (GDAL's block cache starts
empty, so every tile is decoded, as when the data are larger than the cache) and with the files
kept open (a warm cache: the "decode" is a copy, so the adapter's own work is most visible).

Contenders (interleaved medians, ``benchmarks/_timing.py``):

* ``bare rasterio``: ``src.read(1, window=w)`` per band file;
* ``masked_bands``: ``dataset[i]`` (validity, scaling, fill, tensors), no transform;
* ``masked_bands + norm + flips``: with ``mean``/``std`` and ``train_transforms()``;
* ``masked_bands output="dn"``: samples of raw DNs and validity masks, scaled per batch on the
  device by ``BandScaler``; ``... + BandScaler on the CPU``: the same, with the scaler run here on
  each sample (the work it moves off the workers, when there is no GPU to take it);
* ``floor: ...`` (cases on one grid): the least a sample can cost over the bare read, with the
  bands in one native buffer and one numpy op per step -- raw uint16 DNs + validity, or a
  float32 scaled image + validity (``floor_reader``). They bound what any adapter returning such
  a sample could reach here, so they show what the 15 % goal asks of the sample contract.

    python benchmarks/speed_satellite.py [--quick] [--scene DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.windows import Window, from_bounds

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine_line, markdown_table, time_interleaved

from smp_imbalance.datasets.satellite import MaskedBands, Scene, band_statistics
from smp_imbalance.datasets.transforms.satellite import train_transforms

SCENE = Path(__file__).resolve().parent / "data" / "s2_l1c_T33UUU_20170216"
PATTERN = "T33UUU_20170216T102101_{band}.jp2"
INPUTS = ["B02", "B03", "B04"]
PATCH = 256


def to_gtiff(src_path: Path, dst_path: Path) -> None:
    with rasterio.open(src_path) as src:
        profile = src.profile | {
            "driver": "GTiff",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "predictor": 2,
        }
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read())


def _open_for_pass(handles: list[rasterio.DatasetReader], files: list[str], cold: bool) -> None:
    """Fill ``handles`` with the open ``files``: anew on every pass when ``cold`` (GDAL's block
    cache then starts empty), once otherwise."""
    if cold or not handles:
        for h in handles:
            h.close()
        handles[:] = [rasterio.open(f) for f in files]


def bare_reader(files: list[str], windows: list[Window], cold: bool) -> Callable[[], None]:
    """Read every window of every file (``files[0]`` is on the patch grid; a coarser file is
    read decimated onto the same ground window). ``cold``: open the files anew on each call."""
    with rasterio.open(files[0]) as ref:
        bounds = [ref.window_bounds(w) for w in windows]
        ref_shape = (ref.height, ref.width)
    handles: list[rasterio.DatasetReader] = []

    def read_all() -> None:
        _open_for_pass(handles, files, cold)
        for w, b in zip(windows, bounds, strict=True):
            for h in handles:
                if (h.height, h.width) == ref_shape:
                    h.read(1, window=w)
                else:
                    h.read(
                        1,
                        window=from_bounds(*b, transform=h.transform),
                        out_shape=(int(w.height), int(w.width)),
                        resampling=Resampling.nearest,
                    )

    return read_all


def floor_reader(
    files: list[str], windows: list[Window], cold: bool, scaled: bool
) -> Callable[[], None]:
    """The least a sample can cost over the bare read, for uint16 files on the patch grid with
    nodata 0: each band read into one native (C, H, W) buffer, one validity test for the stack, torch
    tensors; ``scaled`` adds one float32 cast and one scaling for the stack (no fill, no
    normalisation, no checks). A floor for the adapter's design, not a usable reader."""
    handles: list[rasterio.DatasetReader] = []

    def sample(window: Window) -> dict[str, torch.Tensor]:
        raw = np.empty((len(handles), int(window.height), int(window.width)), np.uint16)
        for c, h in enumerate(handles):
            h.read(1, window=window, out=raw[c])
        valid = raw != 0
        image = raw
        if scaled:
            image = raw.astype(np.float32)
            image *= np.float32(1e-4)
        return {"image": torch.from_numpy(image), "valid_mask": torch.from_numpy(valid)}

    def read_all() -> None:
        _open_for_pass(handles, files, cold)
        for w in windows:
            sample(w)

    return read_all


def adapter(ds: MaskedBands, cold: bool) -> Callable[[], None]:
    def read_all() -> None:
        if cold:
            ds.close()
        for i in range(len(ds)):
            ds[i]

    return read_all


def adapter_scaled_on_cpu(ds: MaskedBands, cold: bool) -> Callable[[], None]:
    scaler = ds.batch_transform()
    assert scaler is not None

    def read_all() -> None:
        if cold:
            ds.close()
        for i in range(len(ds)):
            scaler(ds[i])

    return read_all


def case(label: str, folder: Path, pattern: str, target: str, repeats: int) -> str:
    """Markdown tables (cold and warm) for one set of files."""
    target_path = str(folder / pattern.format(band=target))
    scene = Scene(inputs=str(folder / pattern), targets={target: target_path})
    ds = MaskedBands([scene], INPUTS, [target], patch_size=PATCH, nodata=0)
    stats = band_statistics(ds)
    ds_full = MaskedBands(
        [scene],
        INPUTS,
        [target],
        patch_size=PATCH,
        nodata=0,
        mean=stats["image"].mean,
        std=stats["image"].std,
        transform=train_transforms(),
    )
    ds_dn = MaskedBands([scene], INPUTS, [target], patch_size=PATCH, nodata=0, output="dn")
    windows = [w for _, w in ds.patches]
    files = [str(folder / pattern.format(band=b)) for b in INPUTS] + [target_path]
    parts = []
    shapes = set()
    for f in files:
        with rasterio.open(f) as src:
            shapes.add(src.shape)
    same_grid = len(shapes) == 1  # the floors read every band on the patch grid
    for cold in (True, False):
        floors = (
            [
                ("floor: uint16 DNs + validity", floor_reader(files, windows, cold, False)),
                ("floor: float32 scaled + validity", floor_reader(files, windows, cold, True)),
            ]
            if same_grid
            else []
        )
        rows = time_interleaved(
            [
                ("bare rasterio", bare_reader(files, windows, cold)),
                ("masked_bands", adapter(ds, cold)),
                ("masked_bands + norm + flips", adapter(ds_full, cold)),
                ('masked_bands output="dn"', adapter(ds_dn, cold)),
                (
                    'masked_bands output="dn" + BandScaler on the CPU',
                    adapter_scaled_on_cpu(ds_dn, cold),
                ),
                *floors,
            ],
            repeats=repeats,
            warmup=1,
        )
        overhead = rows[1].median_s / rows[0].median_s - 1
        more_lines = [
            f"{row.label}: overhead over the bare read {row.median_s / rows[0].median_s - 1:+.0%}"
            for row in rows[3:]
        ]
        cache = "files opened each pass (cold cache)" if cold else "files kept open (warm cache)"
        title = f"{label}, {cache}: {len(windows)} patches of 3+1 bands x {PATCH}^2 a pass"
        parts += [
            markdown_table(title, rows, "bare rasterio"),
            "",
            f"masked_bands: {len(windows) / rows[1].median_s:.0f} samples/s, "
            f"overhead over the bare read {overhead:+.0%}"
            + "".join(f"; {line}" for line in more_lines),
            "",
        ]
    return "\n".join(parts)


def run(quick: bool = False, scene: Path = SCENE) -> str:
    """Time the contenders on each case (on the files of ``scene``); return a markdown report."""
    if not scene.is_dir():
        raise FileNotFoundError(f"speed_satellite: --scene {scene} is not a folder")
    parts = [f"### masked_bands read speed{' -- quick' if quick else ''}", "", machine_line(), ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        for band in [*INPUTS, "B08"]:
            to_gtiff(scene / PATTERN.format(band=band), tmp_dir / f"{band}.tif")
        # (label, folder, pattern, target, repeats): more of the fast GeoTIFF passes, whose
        # spread on a shared 2-core machine is as large as the differences looked for
        cases = [
            ("jp2", scene, PATTERN, "B08", 11),
            ("gtiff", tmp_dir, "{band}.tif", "B08", 41),
            ("jp2 + B11 (20 m -> 10 m)", scene, PATTERN, "B11", 11),
        ]
        for label, folder, pattern, target, repeats in cases[:2] if quick else cases:
            parts.append(case(label, folder, pattern, target, 3 if quick else repeats))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, two cases")
    parser.add_argument("--scene", type=Path, default=SCENE, help="folder of the band files")
    args = parser.parse_args()
    print(run(quick=args.quick, scene=args.scene))


if __name__ == "__main__":
    main()
