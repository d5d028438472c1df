"""Regenerate the small crops in this folder and ``benchmarks/data/s2_l1c_T33UUU_20170216``.

Run from the repository root: ``python tests/data/satellite/make_crops.py SOURCE_ROOT``, where
``SOURCE_ROOT`` holds the upstream files named in ``SOURCES.md`` (folders
``s2_l1c_19UDP_20170729``, ``s2_l1c_T33UUU_20170216``, ``landsat7_slc_off_timeseries``,
``landsat7_slc_off_nan_gaps``, ``landsat7_rgb_byte``). Crops are written with rasterio, keeping
each file's CRS, the window's geotransform, dtype and declared nodata.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
BENCHMARK_DATA = HERE.parents[2] / "benchmarks" / "data" / "s2_l1c_T33UUU_20170216"


def crop(src_path: Path, dst_path: Path, window: Window, driver: str = "GTiff") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(src_path) as src:
            data = src.read(window=window)
            profile = {
                "driver": driver,
                "width": int(window.width),
                "height": int(window.height),
                "count": src.count,
                "dtype": src.dtypes[0],
                "crs": src.crs,
                "transform": src.window_transform(window),
                "nodata": src.nodata,
            }
            if driver == "GTiff":
                profile.update(compress="deflate", predictor=2 if data.dtype.kind in "iu" else 3)
            else:
                profile.update(reversible="YES", quality=100)
            with rasterio.open(dst_path, "w", **profile) as dst:
                dst.write(data)
                for i, desc in enumerate(src.descriptions, start=1):
                    if desc:
                        dst.set_band_description(i, desc)


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    source = Path(sys.argv[1])
    # Sentinel-2 L1C 19UDP preview (not georeferenced): 96x96 across the nodata wedge edge.
    wedge = Window(260, 180, 96, 96)
    for band in ("B02", "B03", "B04", "B08"):
        src = source / "s2_l1c_19UDP_20170729" / f"preview_{band}.jp2"
        crop(src, HERE / f"s2_19UDP_wedge_{band}.tif", wedge)
    crop(
        source / "s2_l1c_19UDP_20170729/preview_B02.jp2",
        HERE / "s2_19UDP_wedge_B02.jp2",
        wedge,
        driver="JP2OpenJPEG",
    )
    # Sentinel-2 L1C 33UUU: 128x128 at 10 m, the same extent of B11 at 20 m (64x64, as JP2).
    for band in ("B02", "B03", "B04", "B08"):
        src = source / "s2_l1c_T33UUU_20170216" / f"T33UUU_20170216T102101_{band}.jp2"
        crop(src, HERE / f"T33UUU_{band}.tif", Window(512, 256, 128, 128))
    crop(
        source / "s2_l1c_T33UUU_20170216" / "T33UUU_20170216T102101_B11.jp2",
        HERE / "T33UUU_B11.jp2",
        Window(256, 128, 64, 64),
        driver="JP2OpenJPEG",
    )
    # benchmarks/speed_satellite.py: 512x512 at 10 m (B11: the same extent at 20 m), lossless JP2
    BENCHMARK_DATA.mkdir(parents=True, exist_ok=True)
    for band, window in [
        *((b, Window(384, 128, 512, 512)) for b in ("B02", "B03", "B04", "B08")),
        ("B11", Window(192, 64, 256, 256)),
    ]:
        crop(
            source / "s2_l1c_T33UUU_20170216" / f"T33UUU_20170216T102101_{band}.jp2",
            BENCHMARK_DATA / f"T33UUU_20170216T102101_{band}.jp2",
            window,
            driver="JP2OpenJPEG",
        )
    # Landsat 7 SLC-off, nodata=-9999 + fmask: two whole 61x61 scenes (already tiny).
    for scene in ("LE70350322008118EDC00", "LE70350322008150EDC00"):
        dst = HERE / "landsat7_slc_off" / scene
        dst.mkdir(parents=True, exist_ok=True)
        for suffix in ("b3", "b4", "b5", "fmask"):
            name = f"{scene}_{suffix}.tif"
            shutil.copyfile(source / "landsat7_slc_off_timeseries" / scene / name, dst / name)
    # Landsat 7 SLC-off float64 with NaN gaps (declared nodata 32768 does not match).
    crop(
        source / "landsat7_slc_off_nan_gaps" / "LE07_L2SP_225078_20110306_02_T1_B1.tif",
        HERE / "landsat7_nan_gaps_B1.tif",
        Window(40, 40, 64, 64),
    )
    # Landsat 7 RGB uint8, 3 bands in one file, declared nodata=0 (collar edge).
    crop(
        source / "landsat7_rgb_byte" / "RGB.byte.tif",
        HERE / "rgb_byte_3band.tif",
        Window(50, 300, 64, 64),
    )


if __name__ == "__main__":
    main()
