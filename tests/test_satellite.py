"""MaskedBands on small crops of real Sentinel-2 / Landsat files (tests/data/satellite)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.errors import NotGeoreferencedWarning
from torch.utils.data import DataLoader

from smp_imbalance.datasets.satellite import (
    MaskedBands,
    Scene,
    band_statistics,
    preview_figure,
)
from smp_imbalance.datasets.transforms.satellite import train_transforms, val_transforms
from smp_imbalance.registry import DATASET_REGISTRY

D = Path(__file__).resolve().parent / "data" / "satellite"  # = conftest.TEST_DATA / "satellite"
WEDGE = str(D / "s2_19UDP_wedge_{band}.tif")
T33 = str(D / "T33UUU_{band}.tif")
B11 = str(D / "T33UUU_B11.jp2")
LS = D / "landsat7_slc_off"
LS_150 = str(LS / "LE70350322008150EDC00" / "LE70350322008150EDC00_{band}.tif")
LS_118 = str(LS / "LE70350322008118EDC00" / "LE70350322008118EDC00_{band}.tif")
NAN_GAPS = str(D / "landsat7_nan_gaps_B1.tif")
RGB = str(D / "rgb_byte_3band.tif")
FMASK_INVALID = (2, 3, 4, 255)


def read(path: str | Path, band: int = 1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(band)


def wedge_dn(bands: list[str]) -> np.ndarray:
    return np.stack([read(WEDGE.format(band=b)) for b in bands])


def wedge(**kwargs) -> MaskedBands:
    kwargs.setdefault("nodata", 0)
    return MaskedBands([Scene(inputs=WEDGE)], ["B02", "B03", "B04"], ["B08"], **kwargs)


def write_raster(path: Path, data: np.ndarray, crs="EPSG:32633", transform=None, nodata=None):
    data = data[None] if data.ndim == 2 else data
    transform = transform or Affine(10.0, 0.0, 335120.0, 0.0, -10.0, 5819480.0)
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return str(path)


# -- the sample contract, on the Sentinel-2 nodata wedge -----------------------------------------
def test_sample_keys_shapes_dtypes():
    sample = wedge(patch_size=32)[4]
    assert set(sample) == {"image", "target", "valid_mask", "valid_fraction"}
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert sample["target"].shape == (1, 32, 32) and sample["target"].dtype == torch.float32
    assert sample["valid_mask"].shape == (1, 32, 32) and sample["valid_mask"].dtype == torch.bool
    assert sample["valid_fraction"].shape == () and sample["valid_fraction"].dtype == torch.float32


def test_wedge_values_and_mask_exact():
    """DN 0 outside the strip (no nodata declared; user nodata=0) -> invalid, filled with 0."""
    ds = wedge()
    sample = ds[0]
    dn_in, dn_out = wedge_dn(["B02", "B03", "B04"]), wedge_dn(["B08"])
    valid = (dn_in != 0).all(0) & (dn_out[0] != 0)
    assert 0.2 < 1 - valid.mean() < 0.5  # the crop holds the wedge edge
    np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), valid)
    assert sample["valid_fraction"].item() == pytest.approx(valid.mean())
    expected_in = np.where(dn_in != 0, dn_in.astype(np.float32) * np.float32(1e-4), 0.0)
    np.testing.assert_array_equal(sample["image"].numpy(), expected_in)
    expected_out = np.where(valid, dn_out[0].astype(np.float32) * np.float32(1e-4), 0.0)
    np.testing.assert_array_equal(sample["target"][0].numpy(), expected_out)


def test_without_user_nodata_the_wedge_is_data():
    sample = wedge(nodata=None)[0]
    assert sample["valid_mask"].all()  # the files declare no nodata: the user has to say 0


@pytest.mark.slow  # loading the OpenJPEG driver
def test_jpeg2000_crop_reads_like_the_geotiff():
    jp2 = MaskedBands([Scene(inputs={"B02": D / "s2_19UDP_wedge_B02.jp2"})], ["B02"], nodata=0)
    with rasterio.open(D / "s2_19UDP_wedge_B02.jp2") as src:
        assert src.driver == "JP2OpenJPEG"
    tif = MaskedBands([Scene(inputs={"B02": WEDGE.format(band="B02")})], ["B02"], nodata=0)
    for key in ("image", "target", "valid_mask"):
        torch.testing.assert_close(jp2[0][key], tif[0][key], rtol=0, atol=0)


@pytest.mark.parametrize("target_offset", [None, 500.0])
def test_offset_and_clip(target_offset):
    ds = wedge(offset=-1000, target_offset=target_offset, clip=(0.0, 1.0))
    dn = wedge_dn(["B02", "B03", "B04", "B08"]).astype(np.float32)
    offsets = np.float32([-1000] * 3 + [-1000 if target_offset is None else target_offset])
    expected = np.clip((dn + offsets[:, None, None]) * np.float32(1e-4), 0, 1)
    expected[dn == 0] = 0.0
    expected[3][(dn == 0).any(0)] = 0.0
    sample = ds[0]
    np.testing.assert_allclose(sample["image"].numpy(), expected[:3], rtol=0, atol=1e-7)
    np.testing.assert_allclose(sample["target"].numpy(), expected[3:], rtol=0, atol=1e-7)


def test_normalisation_and_fill():
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    ds = wedge(mean=mean, std=std, target_mean=[0.4], target_std=[0.1], fill_value=-7.0)
    sample = ds[0]
    dn = wedge_dn(["B02", "B03", "B04"])
    x = (dn * np.float32(1e-4) - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    expected = np.where(dn != 0, x, -7.0)
    np.testing.assert_allclose(sample["image"].numpy(), expected, rtol=1e-6, atol=1e-6)
    target = sample["target"].numpy()
    assert np.all(target[~sample["valid_mask"].numpy()] == -7.0)
    dn8 = wedge_dn(["B08"])[0]
    valid = sample["valid_mask"][0].numpy()
    np.testing.assert_allclose(target[0][valid], (dn8[valid] * 1e-4 - 0.4) / 0.1, atol=1e-5)


# -- Landsat: declared nodata -9999, fmask classes, NaN gaps, multi-band files -------------------
@pytest.mark.parametrize(
    ("invalid_values", "expected_invalid"),
    [(FMASK_INVALID, lambda m: np.isin(m, FMASK_INVALID)), (None, lambda m: m != 0)],
)
def test_landsat_declared_nodata_and_fmask(invalid_values, expected_invalid):
    scene = Scene(inputs=LS_150, mask=LS_150.format(band="fmask"))
    ds = MaskedBands([scene], ["b3", "b4"], ["b5"], mask_invalid_values=invalid_values)
    bands = np.stack([read(LS_150.format(band=b)) for b in ("b3", "b4", "b5")])
    fmask = read(LS_150.format(band="fmask"))
    expected = (bands != -9999).all(0) & ~expected_invalid(fmask)
    sample = ds[0]
    np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), expected)
    # the -9999 stripes and the clouds are filled, never passed on as -0.9999
    image = sample["image"].numpy()
    assert image.min() >= 0 and np.all(image[:, ~expected & (bands[0] == -9999)] == 0)


def test_mask_file_invalid_pixels_are_filled_in_the_input():
    scene = Scene(inputs=LS_150, mask=LS_150.format(band="fmask"))
    ds = MaskedBands([scene], ["b3"], mask_invalid_values=FMASK_INVALID, fill_value=-1.0)
    cloud = read(LS_150.format(band="fmask")) == 4
    assert cloud.any()
    assert np.all(ds[0]["image"][0].numpy()[cloud] == -1.0)


def test_paired_files_gap_filling_without_requiring_valid_input():
    """Input from one SLC-off date, target from another: the target may be valid in input gaps."""
    scene = Scene(inputs=LS_150, targets=LS_118)
    strict = MaskedBands([scene], ["b3"], ["b3"])
    loose = MaskedBands([scene], ["b3"], ["b3"], require_valid_input=False)
    gaps_in = read(LS_150.format(band="b3")) == -9999
    gaps_out = read(LS_118.format(band="b3")) == -9999
    np.testing.assert_array_equal(strict[0]["valid_mask"][0].numpy(), ~gaps_in & ~gaps_out)
    np.testing.assert_array_equal(loose[0]["valid_mask"][0].numpy(), ~gaps_out)
    np.testing.assert_array_equal(loose[0]["image"][0].numpy()[gaps_in], 0.0)


def test_nan_gaps_are_invalid_and_never_nan():
    ds = MaskedBands([Scene(inputs={"B1": NAN_GAPS})], ["B1"], scale=1e-3)
    raw = read(NAN_GAPS)
    sample = ds[0]
    np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), ~np.isnan(raw))
    assert not torch.isnan(sample["image"]).any() and not torch.isnan(sample["target"]).any()
    ok = ~np.isnan(raw)
    np.testing.assert_allclose(sample["image"][0].numpy()[ok], raw[ok] * 1e-3, rtol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "nodata"),
    [
        ("uint8", 0),
        ("int8", -128),
        ("uint16", 65535),
        ("int16", -9999),
        ("int32", -(2**31)),  # not exact in float32: read natively, then converted
        ("uint32", 2**32 - 1),
        ("float32", -3.0e38),
        ("float64", -9999.0),
    ],
)
def test_every_band_dtype_reads_the_same_values_and_validity(tmp_path, dtype, nodata):
    """Small integer and float32 bands are read straight into float32 by GDAL, wider ones
    natively: both give DN * scale and the nodata validity exactly as numpy does."""
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    lo, hi = max(float(info.min), -1e6), min(float(info.max), 1e6)
    dn = rng.uniform(lo, hi, (2, 20, 24)).astype(dtype)
    if np.dtype(dtype).kind in "iu":
        dn[:, 0, :3] = [info.min, info.max, 0]  # the extremes survive the float32 read as numpy
    dn[0, 5:9, 2:7] = nodata
    dn[1, 11:, :4] = nodata
    path = write_raster(tmp_path / f"{dtype}.tif", dn, nodata=nodata)
    sources = {"a": (path, 1), "b": (path, 2)}
    ds = MaskedBands(
        [Scene(inputs=sources)],
        ["a", "b"],
        scale=1e-4,
        valid_mask_mode="per_band",
        require_valid_input=False,
    )
    sample = ds[0]
    valid = dn != np.asarray(nodata, dtype)
    np.testing.assert_array_equal(sample["valid_mask"].numpy(), valid)
    expected = np.where(valid, dn.astype(np.float32) * np.float32(1e-4), 0.0).astype(np.float32)
    np.testing.assert_array_equal(sample["image"].numpy(), expected)


@pytest.mark.parametrize("by", ["index", "description"])
def test_multiband_file_with_declared_nodata(tmp_path, by):
    if by == "index":
        # a list as YAML gives it, as well as a tuple
        path, sources = RGB, {c: [RGB, i] for i, c in enumerate("rgb", start=1)}
    else:
        data = np.stack([read(RGB, i) for i in (1, 2, 3)])
        path = write_raster(tmp_path / "described.tif", data, nodata=0)
        with rasterio.open(path, "r+") as dst:
            for i, c in enumerate("rgb", start=1):
                dst.set_band_description(i, f"band_{c}")
        sources = {c: (path, f"band_{c}") for c in "rgb"}
    ds = MaskedBands([Scene(inputs=sources)], ["b", "g"], ["r"], scale=1 / 255)
    rgb = np.stack([read(path, i) for i in (1, 2, 3)])
    sample = ds[0]
    np.testing.assert_array_equal(sample["valid_mask"][0].numpy(), (rgb != 0).all(0))
    valid = sample["valid_mask"][0].numpy()
    np.testing.assert_allclose(sample["image"][0].numpy()[valid], rgb[2][valid] / 255, rtol=1e-6)


def test_per_band_valid_mask():
    ds = wedge(valid_mask_mode="per_band")
    ds_multi = MaskedBands(
        [Scene(inputs=WEDGE)], ["B02"], ["B03", "B08"], nodata=0, valid_mask_mode="per_band"
    )
    assert ds[0]["valid_mask"].shape == (1, 96, 96)
    mask = ds_multi[0]["valid_mask"].numpy()
    dn = wedge_dn(["B02", "B03", "B08"])
    assert mask.shape == (2, 96, 96)
    np.testing.assert_array_equal(mask[0], (dn[0] != 0) & (dn[1] != 0))
    np.testing.assert_array_equal(mask[1], (dn[0] != 0) & (dn[2] != 0))
    assert not np.array_equal(mask[0], mask[1])
    assert ds_multi[0]["valid_fraction"].item() == pytest.approx(mask.mean())


# -- mixed resolutions: B11 (20 m) onto the 10 m grid ------------------------------------------
def b11_dataset(**kwargs) -> MaskedBands:
    scene = Scene(inputs=T33, targets={"B11": B11})
    return MaskedBands([scene], ["B02", "B03", "B04", "B08"], ["B11"], **kwargs)


def test_b11_nearest_upsampling_is_exact_for_any_window():
    ds = b11_dataset(patch_size=31, stride=13, scale=1.0)
    up = np.repeat(np.repeat(read(B11), 2, axis=0), 2, axis=1)
    assert len(ds) == 9 * 9  # offsets 0, 13, ..., 91 and 97 = 128 - 31 on both axes
    for i, (_, w) in enumerate(ds.patches):
        rows = slice(int(w.row_off), int(w.row_off) + 31)
        cols = slice(int(w.col_off), int(w.col_off) + 31)
        np.testing.assert_array_equal(ds[i]["target"][0].numpy(), up[rows, cols])


def test_b11_bilinear_resampling():
    nearest, bilinear = b11_dataset(scale=1.0), b11_dataset(scale=1.0, resampling="bilinear")
    t_near, t_bil = nearest[0]["target"][0].numpy(), bilinear[0]["target"][0].numpy()
    src = read(B11)
    assert t_bil.shape == (128, 128) and bilinear[0]["valid_mask"].all()
    assert not np.array_equal(t_near, t_bil)
    assert src.min() <= t_bil.min() and t_bil.max() <= src.max()
    assert abs(t_bil.mean() - src.mean()) < 0.01 * src.mean()


@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
def test_coarse_band_nodata_never_bleeds_into_valid_pixels(tmp_path, resampling):
    """B11 with its left 20 columns (20 m) set to 0 = nodata: the warper leaves them out of
    the kernel, so valid 10 m pixels hold only values made from valid DNs."""
    b11 = read(B11)
    b11[:, :20] = 0
    with rasterio.open(B11) as src:
        coarse = write_raster(tmp_path / "B11.tif", b11, crs=src.crs, transform=src.transform)
    scene = Scene(inputs=T33, targets={"B11": coarse})
    ds = MaskedBands([scene], ["B02"], ["B11"], nodata=0, scale=1.0, resampling=resampling)
    sample = ds[0]
    valid = sample["valid_mask"][0].numpy()
    assert not valid[:, :39].any() and valid[:, 41:].all()
    values = sample["target"][0].numpy()[valid]
    assert values.min() >= 0.9 * b11[:, 20:].min()  # no blend with the zeros
    assert values.max() <= 1.1 * b11[:, 20:].max()


def test_files_reopen_in_a_forked_process():
    ds = b11_dataset(patch_size=64)
    ds[0]
    before = dict(ds._handles)
    ds._pid = -1  # as seen from a DataLoader worker forked after the parent read
    ds[0]
    assert before and all(ds._handles[k] is not before[k] for k in before)


def test_reference_band_picks_the_coarse_grid():
    ds = b11_dataset(reference_band="B11")
    assert ds[0]["image"].shape == (4, 64, 64) and ds[0]["target"].shape == (1, 64, 64)


# -- patches --------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(
    ph=st.integers(8, 96),
    pw=st.integers(8, 96),
    sh=st.integers(1, 96),
    sw=st.integers(1, 96),
)
def test_windowed_patches_equal_slices_of_the_whole_scene(ph, pw, sh, sw):
    whole = wedge()[0]
    ds = wedge(patch_size=(ph, pw), stride=(sh, sw))
    rows = {int(w.row_off) for _, w in ds.patches}
    cols = {int(w.col_off) for _, w in ds.patches}
    assert max(rows) == 96 - ph and max(cols) == 96 - pw  # the edges are covered
    for i in np.random.default_rng(ph * pw).choice(len(ds), size=min(3, len(ds)), replace=False):
        _, w = ds.patches[int(i)]
        r, c = int(w.row_off), int(w.col_off)
        sample = ds[int(i)]
        for key in ("image", "target", "valid_mask"):
            torch.testing.assert_close(sample[key], whole[key][:, r : r + ph, c : c + pw])


@settings(max_examples=15, deadline=None)
@given(
    fill=st.floats(-5, 5, width=32),
    mean=st.lists(st.floats(-1, 1, width=32), min_size=2, max_size=2),
    std=st.lists(st.floats(0.0625, 4, width=32), min_size=2, max_size=2),
    mode=st.sampled_from(["shared", "per_band"]),
    require_valid_input=st.booleans(),
    flip=st.booleans(),
)
def test_invalid_pixels_always_hold_the_fill_value(
    fill, mean, std, mode, require_valid_input, flip
):
    """Landsat: -9999 stripes + fmask; whatever the settings, invalid pixels hold exactly
    ``fill_value``, nothing is NaN, and ``valid_fraction`` is the mean of ``valid_mask``."""
    ds = MaskedBands(
        [Scene(inputs=LS_150, targets=LS_118, mask=LS_150.format(band="fmask"))],
        ["b3", "b4"],
        ["b4", "b5"],
        patch_size=40,
        stride=21,
        mask_invalid_values=FMASK_INVALID,
        mean=mean,
        std=std,
        target_mean=mean[::-1],
        target_std=std[::-1],
        fill_value=fill,
        valid_mask_mode=mode,
        require_valid_input=require_valid_input,
        transform=A.Compose([A.VerticalFlip(p=1.0)]) if flip else None,
    )
    for i in range(len(ds)):
        sample = ds[i]
        valid = sample["valid_mask"]
        assert valid.shape[0] == (1 if mode == "shared" else 2)
        target = sample["target"]
        assert torch.all(target.masked_select(~valid.expand_as(target)) == np.float32(fill))
        assert torch.isfinite(sample["image"]).all() and torch.isfinite(target).all()
        assert sample["valid_fraction"].item() == pytest.approx(valid.float().mean().item())
        _, w = ds.patches[i]
        r, c = int(w.row_off), int(w.col_off)
        gaps = (read(LS_150.format(band="b3")) == -9999)[r : r + 40, c : c + 40]
        gaps = torch.from_numpy((gaps[::-1] if flip else gaps).copy())
        assert gaps.any() and torch.all(sample["image"][0][gaps] == np.float32(fill))


def test_min_valid_fraction_skips_and_reports():
    full = wedge(patch_size=32)
    fractions = [full[i]["valid_fraction"].item() for i in range(len(full))]
    expected_skipped = sum(f < 0.5 for f in fractions)
    assert 0 < expected_skipped < len(full)
    with pytest.warns(UserWarning, match=rf"skipped {expected_skipped} of 9 patches"):
        ds = wedge(patch_size=32, min_valid_fraction=0.5)
    assert ds._handles == {}  # the scan closed its files
    assert ds.skipped_patches == expected_skipped and ds.total_patches == 9
    assert len(ds) == 9 - expected_skipped
    assert all(ds[i]["valid_fraction"] >= 0.5 for i in range(len(ds)))


def test_min_valid_fraction_nothing_left():
    with pytest.raises(ValueError, match="no patch has valid_fraction"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wedge(patch_size=32, min_valid_fraction=1.0)


def test_negative_index_and_out_of_range():
    ds = wedge(patch_size=48)
    torch.testing.assert_close(ds[-1]["image"], ds[3]["image"])
    with pytest.raises(IndexError):
        ds[4]


# -- statistics -----------------------------------------------------------------------------------
def test_band_statistics_match_numpy_over_valid_pixels():
    stats = band_statistics(wedge(patch_size=48))
    dn = wedge_dn(["B02", "B03", "B04", "B08"]).astype(np.float64) * 1e-4
    for c, band in enumerate(["B02", "B03", "B04"]):
        values = dn[c][dn[c] != 0]
        assert stats["image"].count[c] == values.size
        assert stats["image"].mean[c] == pytest.approx(values.mean(), rel=1e-6)
        assert stats["image"].std[c] == pytest.approx(values.std(), rel=1e-5)
        assert stats["image"].bands[c] == band
    valid = (dn != 0).all(0)
    assert stats["target"].count == (int(valid.sum()),)
    assert stats["target"].mean[0] == pytest.approx(dn[3][valid].mean(), rel=1e-6)


def test_band_statistics_normalise_to_zero_mean_unit_std():
    stats = band_statistics(wedge())
    ds = wedge(mean=stats["image"].mean, std=stats["image"].std)
    image = ds[0]["image"].numpy()
    dn = wedge_dn(["B02", "B03", "B04"])
    for c in range(3):
        values = image[c][dn[c] != 0]
        assert values.mean() == pytest.approx(0, abs=1e-5)
        assert values.std() == pytest.approx(1, abs=1e-4)


# -- transforms -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["shared", "per_band"])
@pytest.mark.parametrize("targets", [["B08"], ["B03", "B08"]])
def test_transform_moves_target_and_masks_with_the_image(mode, targets):
    def dataset(transform=None):
        return MaskedBands(
            [Scene(inputs=WEDGE)],
            ["B02", "B03", "B04"],
            targets,
            nodata=0,
            patch_size=48,
            valid_mask_mode=mode,
            mean=[0.1, 0.2, 0.3],
            std=[0.5, 0.5, 0.5],
            transform=transform,
        )

    plain = dataset()[1]
    transposed = dataset(A.Compose([A.Transpose(p=1.0)]))[1]
    assert not plain["valid_mask"].all()  # the patch crosses the wedge edge
    for key in ("image", "target", "valid_mask"):
        torch.testing.assert_close(transposed[key], plain[key].transpose(-1, -2), rtol=0, atol=0)


@pytest.mark.parametrize("crop", [None, 24])
def test_default_recipes(crop):
    train = wedge(patch_size=48, transform=train_transforms(crop_size=crop))
    val = wedge(patch_size=48, transform=val_transforms(crop_size=crop))
    size = crop or 48
    for ds in (train, val):
        sample = ds[1]
        assert sample["image"].shape == (3, size, size)
        assert sample["valid_mask"].shape == (1, size, size)
        # fill and mask stay consistent after the geometric transform
        assert torch.all(sample["target"][~sample["valid_mask"]] == 0)


def test_recipes_reject_bad_crop_size():
    with pytest.raises(ValueError, match="crop_size"):
        train_transforms(crop_size=0)
    with pytest.raises(ValueError, match="crop_size"):
        val_transforms(crop_size=-3)


def test_inconsistent_transform_raises_naming_the_sample():
    def crop_image_only(image, **targets):
        return {"image": image[:10], **targets}

    with pytest.raises(ValueError, match=r"masked_bands sample 0 .*s2_19UDP_wedge_B02\.tif"):
        wedge(transform=crop_image_only)[0]


# -- workers, pickling, registry, preview ---------------------------------------------------------
def test_dataloader_two_workers_matches_serial():
    ds = b11_dataset(patch_size=64, stride=32)
    ds[0]  # the parent opens files first: workers must not reuse its handles
    assert ds._handles
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    images = torch.cat([b["image"] for b in batches])
    targets = torch.cat([b["target"] for b in batches])
    assert images.shape == (9, 4, 64, 64)
    torch.testing.assert_close(images, torch.stack([ds[i]["image"] for i in range(9)]))
    torch.testing.assert_close(targets, torch.stack([ds[i]["target"] for i in range(9)]))


def test_pickle_drops_open_files():
    ds = b11_dataset(patch_size=64)
    before = ds[2]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    torch.testing.assert_close(clone[2]["target"], before["target"])


def test_registered_name():
    assert DATASET_REGISTRY.get("masked_bands") is MaskedBands
    ds = DATASET_REGISTRY.create(
        "masked_bands", scenes=[{"inputs": WEDGE}], input_bands=["B02"], nodata=0
    )
    assert len(ds) == 1


@pytest.mark.slow  # importing matplotlib
def test_preview_figure(tmp_path):
    fig = preview_figure(wedge(patch_size=48), n=2, seed=0)
    assert len(fig.axes) == 6
    fig.savefig(tmp_path / "preview.png")
    assert (tmp_path / "preview.png").stat().st_size > 1000


# -- errors name the file -------------------------------------------------------------------------
def test_band_not_found_in_dict_names_the_files():
    scene = Scene(inputs={"B02": WEDGE.format(band="B02")})
    with pytest.raises(ValueError, match=r"input band 'B05' not found.*s2_19UDP_wedge_B02\.tif"):
        MaskedBands([scene], ["B05"])


def test_band_not_matching_pattern_names_the_pattern():
    with pytest.raises(FileNotFoundError, match=r"'B05'.*no file.*s2_19UDP_wedge_B05\.tif"):
        MaskedBands([Scene(inputs=WEDGE)], ["B05"])


def test_pattern_matching_several_files():
    with pytest.raises(FileNotFoundError, match=r"2 files"):
        MaskedBands([Scene(inputs=str(D / "s2_19UDP_wedge_{band}.*"))], ["B02"])


def test_missing_file():
    missing = str(D / "nope_B02.tif")
    with pytest.raises(FileNotFoundError, match=r"nope_B02\.tif"):
        MaskedBands([Scene(inputs={"B02": missing})], ["B02"])


def test_band_index_and_description_errors():
    with pytest.raises(ValueError, match=r"index 4 out of range.*rgb_byte_3band\.tif"):
        MaskedBands([Scene(inputs={"x": (RGB, 4)})], ["x"])
    with pytest.raises(ValueError, match=r"no band described 'nir'.*rgb_byte_3band\.tif"):
        MaskedBands([Scene(inputs={"x": (RGB, "nir")})], ["x"])


def test_mismatched_crs_names_the_file(tmp_path):
    other = write_raster(tmp_path / "B08.tif", np.ones((128, 128), np.uint16), crs="EPSG:32632")
    scene = Scene(inputs=T33, targets={"B08": other})
    with pytest.raises(ValueError, match=r"B08\.tif has CRS EPSG:32632"):
        MaskedBands([scene], ["B02"], ["B08"])


def test_mismatched_extent_names_the_file(tmp_path):
    shifted = write_raster(
        tmp_path / "shifted.tif",
        np.ones((128, 128), np.uint16),
        transform=Affine(10.0, 0.0, 335120.0 + 50.0, 0.0, -10.0, 5819480.0),
    )
    scene = Scene(inputs=T33, targets={"B08": shifted})
    with pytest.raises(ValueError, match=r"shifted\.tif covers .*cannot be aligned"):
        MaskedBands([scene], ["B02"], ["B08"])


def test_mask_of_another_shape_names_the_mask(tmp_path):
    mask = write_raster(tmp_path / "cloudmask.tif", np.zeros((64, 64), np.uint8))  # 10 m pixels
    with pytest.raises(ValueError, match=r"mask file .*cloudmask\.tif is 64x64 .*128x128"):
        MaskedBands([Scene(inputs=T33, mask=mask)], ["B02"])


def test_coarser_mask_on_the_same_extent_is_resampled_nearest(tmp_path):
    """A 20 m class layer (like the L2A SCL) under the 10 m bands: each class pixel covers 2x2."""
    classes = np.random.default_rng(0).choice(np.array([0, 4, 9], np.uint8), size=(64, 64))
    with rasterio.open(B11) as src:
        mask = write_raster(tmp_path / "scl_20m.tif", classes, crs=src.crs, transform=src.transform)
    ds = MaskedBands(
        [Scene(inputs=T33, mask=mask)], ["B02"], mask_invalid_values=[9], resampling="bilinear"
    )
    expected = np.repeat(np.repeat(classes != 9, 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(ds[0]["valid_mask"][0].numpy(), expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mean": [0.1, 0.2]}, ValueError, "mean has 2 value"),
        ({"std": [1.0, 0.0, 1.0]}, ValueError, "std must be finite and > 0"),
        ({"target_mean": [0.1, 0.2]}, ValueError, "target_mean has 2"),
        ({"patch_size": 128}, ValueError, "smaller than patch_size"),
        ({"patch_size": 0}, ValueError, "patch_size"),
        ({"resampling": "bicubicc"}, ValueError, "unknown resampling"),
        ({"valid_mask_mode": "any"}, ValueError, "valid_mask_mode"),
        ({"min_valid_fraction": 1.5}, ValueError, "min_valid_fraction"),
        ({"clip": (1.0, 0.0)}, ValueError, "clip"),
        ({"scale": 0.0}, ValueError, "scale"),
        ({"target_offset": float("nan")}, ValueError, "target_offset"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        wedge(**kwargs)


@pytest.mark.parametrize(
    ("scenes", "bands", "error", "match"),
    [
        ("a.tif", ["B02"], TypeError, "sequence of Scene"),
        ([], ["B02"], ValueError, "empty"),
        ([{"input": WEDGE}], ["B02"], ValueError, r"scenes\[0\]: a scene dict needs 'inputs'"),
        ([42], ["B02"], TypeError, r"scenes\[0\]"),
        ([{"inputs": WEDGE}], "B02", TypeError, "input_bands"),
        ([{"inputs": WEDGE}], ["B02", "B02"], ValueError, "duplicates"),
        ([{"inputs": str(D / "x.tif")}], ["B02"], ValueError, "no '{band}' placeholder"),
        ([{"inputs": D / "x.tif"}], ["B02"], TypeError, "inputs must be a dict"),
        ([{"inputs": {"B02": (RGB, 1, 2)}}], ["B02"], ValueError, r"path or \(path, band\)"),
    ],
)
def test_bad_scenes(scenes, bands, error, match):
    with pytest.raises(error, match=match):
        MaskedBands(scenes, bands)
