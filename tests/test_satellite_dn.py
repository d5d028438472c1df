"""MaskedBands(output="dn") and BandScaler: raw-DN samples scaled per batch give the scaled samples."""

from __future__ import annotations

from typing import Any

import albumentations as A
import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_satellite import (
    B11,
    FMASK_INVALID,
    LS_118,
    LS_150,
    NAN_GAPS,
    RGB,
    T33,
    WEDGE,
    read,
    wedge_dn,
    write_raster,
)
from torch.utils.data import DataLoader, default_collate

from smp_imbalance.datasets.band_scaling import BandScaler
from smp_imbalance.datasets.satellite import MaskedBands, Scene, band_statistics, preview_figure
from smp_imbalance.datasets.transforms.satellite import train_transforms
from smp_imbalance.training.data import RegistryDataModule

WEDGE_STATS: dict[str, Any] = {
    "mean": [0.1, 0.2, 0.3],
    "std": [0.5, 0.6, 0.7],
    "target_mean": [0.2],
    "target_std": [0.3],
}

# (scenes, input bands, target bands, keywords): every reading path of the dataset
CASES = {
    "s2 wedge, stats, clip, fill": (
        [Scene(inputs=WEDGE)],
        ["B02", "B03", "B04"],
        ["B08"],
        {"nodata": 0, "patch_size": 32, "clip": (0.0, 0.4), "fill_value": -1.5, **WEDGE_STATS},
    ),
    "s2 wedge, offsets, per-band mask": (
        [Scene(inputs=WEDGE)],
        ["B02"],
        ["B03", "B08"],
        {"nodata": 0, "offset": -1000.0, "target_offset": 500.0, "valid_mask_mode": "per_band"},
    ),
    "landsat int16 -9999 + fmask": (
        [Scene(inputs=LS_150, mask=LS_150.format(band="fmask"))],
        ["b3", "b4"],
        ["b5"],
        {"mask_invalid_values": FMASK_INVALID, "fill_value": -1.0},
    ),
    "landsat gap filling, two dates": (
        [Scene(inputs=LS_150, targets=LS_118)],
        ["b3"],
        ["b3"],
        {"require_valid_input": False},
    ),
    "identity targets (read once)": ([Scene(inputs=LS_150)], ["b3", "b4"], None, {}),
    "float64 NaN gaps": ([Scene(inputs={"B1": NAN_GAPS})], ["B1"], None, {"scale": 1e-3}),
    "B11 20 m warped onto 10 m": (
        [Scene(inputs=T33, targets={"B11": B11})],
        ["B02", "B08"],
        ["B11"],
        {"patch_size": 64, "stride": 32, "resampling": "bilinear"},
    ),
    "multi-band byte file": (
        [Scene(inputs={"r": (RGB, 1), "g": (RGB, 2), "b": (RGB, 3)})],
        ["r", "g"],
        ["b", "r"],
        {"scale": 1 / 255, "nodata": 0},
    ),
    "two scenes": (
        [Scene(inputs=WEDGE), Scene(inputs=WEDGE, targets={"B08": WEDGE.format(band="B04")})],
        ["B02", "B03"],
        ["B08"],
        {"nodata": 0, "patch_size": 48},
    ),
}


def pair(case: str, **extra: Any) -> tuple[MaskedBands, MaskedBands]:
    scenes, inputs, targets, kwargs = CASES[case]
    kwargs = {**kwargs, **extra}
    scaled = MaskedBands(scenes, inputs, targets, **kwargs)
    dn = MaskedBands(scenes, inputs, targets, output="dn", **kwargs)
    return scaled, dn


def assert_same_sample(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(expected) | {"input_valid"}
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key  # equal values, not close ones


@pytest.mark.parametrize("case", sorted(CASES))
def test_dn_samples_scaled_on_the_batch_equal_scaled_samples(case):
    scaled, dn = pair(case)
    scaler = dn.batch_transform()
    assert scaled.batch_transform() is None and isinstance(scaler, BandScaler)
    for i in range(len(scaled)):
        assert_same_sample(scaled[i], scaler(dn[i]))  # unbatched
    batch = default_collate([dn[i] for i in range(len(dn))])
    assert_same_sample(default_collate([scaled[i] for i in range(len(scaled))]), scaler(batch))


@pytest.mark.parametrize(
    ("case", "image_dtype", "target_dtype"),
    [
        ("s2 wedge, stats, clip, fill", torch.uint16, torch.uint16),
        ("landsat int16 -9999 + fmask", torch.int16, torch.int16),
        ("float64 NaN gaps", torch.float64, torch.float64),
        ("multi-band byte file", torch.uint8, torch.uint8),
    ],
)
def test_dn_sample_holds_the_recorded_values(case, image_dtype, target_dtype):
    scaled, dn = pair(case)
    sample = dn[0]
    assert sample["image"].dtype == image_dtype and sample["target"].dtype == target_dtype
    assert sample["input_valid"].dtype == torch.bool
    assert sample["input_valid"].shape == sample["image"].shape
    assert torch.equal(sample["valid_mask"], scaled[0]["valid_mask"])


def test_dn_values_are_the_files_dns_nodata_and_nan_included():
    _, dn = pair("s2 wedge, stats, clip, fill", patch_size=None)
    sample = dn[0]
    raw = wedge_dn(["B02", "B03", "B04"])
    np.testing.assert_array_equal(sample["image"].numpy(), raw)
    np.testing.assert_array_equal(sample["input_valid"].numpy(), raw != 0)
    assert (raw == 0).any()  # the wedge: nodata DNs are passed on, flagged invalid

    _, nan_dn = pair("float64 NaN gaps")
    raw = read(NAN_GAPS)
    image = nan_dn[0]["image"][0].numpy()
    np.testing.assert_array_equal(np.isnan(image), np.isnan(raw))
    np.testing.assert_array_equal(image[~np.isnan(raw)], raw[~np.isnan(raw)])
    np.testing.assert_array_equal(nan_dn[0]["input_valid"][0].numpy(), ~np.isnan(raw))


def test_mixed_band_dtypes_promote_per_role(tmp_path):
    """uint8 and uint16 inputs share uint16; an int16 target stays int16 (read separately)."""
    rng = np.random.default_rng(0)
    a = write_raster(tmp_path / "a.tif", rng.integers(1, 255, (16, 16)).astype(np.uint8))
    b = write_raster(tmp_path / "b.tif", rng.integers(1, 60000, (16, 16)).astype(np.uint16))
    t = rng.integers(-500, 500, (16, 16)).astype(np.int16)
    t[3, 4] = -9999
    c = write_raster(tmp_path / "c.tif", t, nodata=-9999)
    scenes = [Scene(inputs={"a": a, "b": b}, targets={"c": c})]
    scaled = MaskedBands(scenes, ["a", "b"], ["c"], scale=1e-2)
    dn = MaskedBands(scenes, ["a", "b"], ["c"], scale=1e-2, output="dn")
    assert dn.dn_dtypes == {"inputs": np.dtype(np.uint16), "targets": np.dtype(np.int16)}
    sample = dn[0]
    np.testing.assert_array_equal(sample["image"][0].numpy(), read(a).astype(np.uint16))
    np.testing.assert_array_equal(sample["target"][0].numpy(), t)
    assert not sample["valid_mask"][0, 3, 4]
    assert_same_sample(scaled[0], dn.batch_transform()(sample))


def test_dn_with_the_default_recipe_equals_scaled_with_it():
    """Geometric transforms are exact on DNs: the same draws give the same samples."""
    scaled, dn = pair("s2 wedge, stats, clip, fill", patch_size=48)
    scaled.transform = A.Compose(train_transforms(crop_size=32).transforms, seed=7)
    dn.transform = A.Compose(train_transforms(crop_size=32).transforms, seed=7)
    scaler = dn.batch_transform()
    for i in range(len(scaled)):
        expected, got = scaled[i], dn[i]
        assert got["image"].dtype == torch.uint16 and got["image"].shape == (3, 32, 32)
        assert_same_sample(expected, scaler(got))


def test_dataloader_workers_carry_dn_batches():
    _, dn = pair("B11 20 m warped onto 10 m")
    batches = list(DataLoader(dn, batch_size=3, num_workers=2))
    assert batches[0]["image"].dtype == torch.uint16
    images = torch.cat([b["image"] for b in batches])
    assert torch.equal(images, torch.stack([dn[i]["image"] for i in range(len(dn))]))


def test_band_statistics_and_preview_do_not_depend_on_output(tmp_path):
    scaled, dn = pair("s2 wedge, stats, clip, fill")
    assert band_statistics(dn) == band_statistics(scaled)
    fig = preview_figure(dn, n=2, seed=0)
    fig.savefig(tmp_path / "preview.png")
    assert (tmp_path / "preview.png").stat().st_size > 1000


def test_dn_output_rejects_complex_bands(tmp_path):
    path = write_raster(tmp_path / "c.tif", np.ones((8, 8), np.complex64))
    MaskedBands([Scene(inputs={"c": path})], ["c"])  # "scaled" does not look at the type here
    with pytest.raises(ValueError, match=r"real-valued inputs bands.*c\.tif.*complex64"):
        MaskedBands([Scene(inputs={"c": path})], ["c"], output="dn")


def test_unknown_output_is_rejected():
    with pytest.raises(ValueError, match="output must be 'scaled' or 'dn'"):
        MaskedBands([Scene(inputs=WEDGE)], ["B02"], output="raw")


# -- the data module applies the scaler after the transfer ----------------------------------------
def test_data_module_scales_dn_batches_after_transfer():
    common = {
        "scenes": [{"inputs": WEDGE}],
        "input_bands": ["B02", "B03", "B04"],
        "target_bands": ["B08"],
        "nodata": 0,
        "patch_size": 32,
        **WEDGE_STATS,
    }
    ready = RegistryDataModule(
        "masked_bands", common_kwargs=common, transforms="none", batch_size=4
    )
    dn = RegistryDataModule(
        "masked_bands", common_kwargs={**common, "output": "dn"}, transforms="none", batch_size=4
    )
    for dm in (ready, dn):
        dm.setup("fit")
    assert ready.batch_transform("val") is None
    raw = next(iter(dn.val_dataloader()))
    assert raw["image"].dtype == torch.uint16
    scaled = dn.on_after_batch_transfer(raw, 0)
    assert_same_sample(next(iter(ready.val_dataloader())), scaled)
    assert ready.on_after_batch_transfer(raw, 0) is raw  # ready samples pass through


# -- BandScaler on its own ------------------------------------------------------------------------
def reference_scaling(
    dn: np.ndarray, valid: np.ndarray, offset: float, scale: float, clip, mean, std, fill: float
) -> np.ndarray:
    """The formula in float32 numpy, band by band."""
    x = dn.astype(np.float32)
    x = (x + np.float32(offset)) * np.float32(scale)
    if clip is not None:
        x = np.clip(x, np.float32(clip[0]), np.float32(clip[1]))
    if mean is not None:
        x = x - np.asarray(mean, np.float32)[:, None, None]
    if std is not None:
        x = x / np.asarray(std, np.float32)[:, None, None]
    return np.where(valid, x, np.float32(fill)).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    channels=st.integers(1, 3),
    offset=st.sampled_from([0.0, -1000.0, 250.5]),
    scale=st.sampled_from([1e-4, 1 / 255, 2.0]),
    clip=st.sampled_from([None, (0.0, 1.0), (-0.5, 0.25)]),
    with_stats=st.booleans(),
    fill=st.sampled_from([0.0, -1.5, 3.0]),
    dtype=st.sampled_from([np.uint16, np.int16, np.uint8, np.float32]),
)
def test_scaler_matches_the_formula(seed, channels, offset, scale, clip, with_stats, fill, dtype):
    rng = np.random.default_rng(seed)
    dn = rng.integers(0, 200, (2, channels, 5, 6)).astype(dtype)
    valid = rng.random((2, channels, 5, 6)) > 0.3
    if dtype == np.float32:
        dn[~valid] = np.nan  # invalid NaNs never reach the output
    mean = rng.normal(size=channels).tolist() if with_stats else None
    std = rng.uniform(0.5, 2, size=channels).tolist() if with_stats else None
    scaler = BandScaler(
        scale=scale, offset=offset, clip=clip, mean=mean, std=std, fill_value=fill,
        target_mean=mean, target_std=std,
    )  # fmt: skip
    batch = {
        "image": torch.from_numpy(dn),
        "target": torch.from_numpy(dn),
        "input_valid": torch.from_numpy(valid),
        "valid_mask": torch.from_numpy(valid.all(axis=1, keepdims=True)),
        "valid_fraction": torch.zeros(2),
    }
    before = batch["image"].clone()
    out = scaler(batch)
    expected = np.stack(
        [
            reference_scaling(d, v, offset, scale, clip, mean, std, fill)
            for d, v in zip(dn, valid, strict=True)
        ]
    )
    np.testing.assert_array_equal(out["image"].numpy(), expected)
    assert out["target"].dtype == torch.float32 and not torch.isnan(out["target"]).any()
    assert out["valid_fraction"] is batch["valid_fraction"]  # the other entries pass through
    assert torch.equal(batch["image"].nan_to_num(), before.nan_to_num())  # not scaled in place
    np.testing.assert_array_equal(
        out["target"].numpy()[~np.broadcast_to(valid.all(axis=1, keepdims=True), dn.shape)],
        np.float32(fill),
    )


def test_scaler_moves_with_to_and_keeps_no_state():
    scaler = BandScaler(mean=[1.0, 2.0], std=[2.0, 4.0])
    assert {name for name, _ in scaler.named_buffers()} == {"mean", "std"}
    assert scaler.state_dict() == {}  # dataset settings, not model state
    moved = scaler.to(torch.float64)  # buffers follow .to(); the arithmetic stays float32
    assert moved.mean.dtype == torch.float64


def dn_batch(channels: int = 2, valid_channels: int | None = None, valid_dtype=torch.bool):
    """An unbatched DN sample of ``channels`` input bands and one target band, 2 x 2 pixels."""
    valid_channels = channels if valid_channels is None else valid_channels
    return {
        "image": torch.zeros(channels, 2, 2),
        "target": torch.zeros(1, 2, 2),
        "input_valid": torch.ones(valid_channels, 2, 2, dtype=valid_dtype),
        "valid_mask": torch.ones(1, 2, 2, dtype=torch.bool),
    }


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ({"image": torch.zeros(1, 2, 2)}, ValueError, "has no 'target'"),
        (dn_batch(valid_dtype=torch.float32), TypeError, "'input_valid' must be bool"),
        (
            dn_batch(valid_channels=1),
            ValueError,
            r"input_valid \(1, 2, 2\) does not match image \(2, 2, 2\)",
        ),
        (
            dn_batch(channels=3),
            ValueError,
            r"image has shape \(3, 2, 2\) but the statistics are for 2 band",
        ),
    ],
)
def test_scaler_rejects_bad_batches(batch, error, match):
    BandScaler(mean=[0.0, 0.0])(dn_batch())  # the well-formed batch passes
    with pytest.raises(error, match=match):
        BandScaler(mean=[0.0, 0.0])(batch)


def test_scaler_rejects_non_finite_statistics():
    with pytest.raises(ValueError, match="target_std must be finite"):
        BandScaler(target_std=[float("nan")])


def test_geotiff_read_paths_agree_with_rasterio(tmp_path):
    """A tiled deflate GeoTIFF, read straight into the DN buffer, gives rasterio's values."""
    dn = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 7) % 5000
    path = tmp_path / "tiled.tif"
    profile = {
        "driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": rasterio.Affine(10, 0, 0, 0, -10, 640), "tiled": True,
        "blockxsize": 32, "blockysize": 32, "compress": "deflate", "predictor": 2,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn, 1)
    ds = MaskedBands([Scene(inputs={"x": str(path)})], ["x"], patch_size=32, output="dn")
    for i, (_, w) in enumerate(ds.patches):
        rows, cols = w.toslices()
        np.testing.assert_array_equal(ds[i]["image"][0].numpy(), dn[rows, cols])


@pytest.mark.parametrize("output", ["scaled", "dn"])
def test_bands_of_one_file_out_of_order_with_two_nodata_values(tmp_path, output):
    """Channels of a multi-band file around another file's band (one read per channel), with
    a declared and a user nodata value (the per-channel path, not the shared-nodata one)."""
    rng = np.random.default_rng(1)
    multi = rng.integers(1, 3000, (3, 12, 10)).astype(np.uint16)
    multi[0, 0, :4] = 7  # declared nodata
    multi[2, 5, 5] = 9  # the user's nodata
    single = rng.integers(1, 3000, (12, 10)).astype(np.uint16)
    a = write_raster(tmp_path / "a.tif", multi, nodata=7)
    b = write_raster(tmp_path / "b.tif", single)
    scene = Scene(inputs={"a1": (a, 1), "b": b, "a3": (a, 3)})
    ds = MaskedBands(
        [scene], ["a1", "b", "a3"], nodata=9, scale=1.0, output=output,
        valid_mask_mode="per_band", require_valid_input=False,
    )  # fmt: skip
    sample = ds[0]
    dn = np.stack([multi[0], single, multi[2]])
    valid = (dn != 7) & (dn != 9)
    np.testing.assert_array_equal(sample["valid_mask"].numpy(), valid)
    expected = dn if output == "dn" else np.where(valid, dn, 0).astype(np.float32)
    np.testing.assert_array_equal(sample["image"].numpy(), expected)
    assert sample["valid_fraction"].item() == pytest.approx(valid.mean())
