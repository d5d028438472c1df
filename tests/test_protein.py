"""ProteinAtlas: csv parsing, channel decoding and stacking, errors, recipes, loader, preview."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from conftest import HPA_SAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from smp_imbalance.datasets.protein import (
    CLASS_NAMES,
    COLOURS,
    NUM_CLASSES,
    ProteinAtlas,
    _unit_float,
    preview_figure,
    read_hpa_csv,
)
from smp_imbalance.datasets.transforms.protein import (
    HPA_MEAN,
    HPA_STD,
    NormalizeChannels,
    train_transforms,
    val_transforms,
)
from smp_imbalance.registry import create_dataset
from smp_imbalance.sample_data import hpa_train_labels

FIXTURE_IMAGES = HPA_SAMPLE / "images"
FIXTURE_CSV = HPA_SAMPLE / "train.csv"
FIXTURE_IDS = [f"hpa-fixture-{i}" for i in range(4)]
FIXTURE_TARGETS = {0: [2, 25], 1: [19, 25], 2: [21], 3: [25]}


def raw(image_id: str, colour: str, root: Path = FIXTURE_IMAGES, ext: str = ".png") -> np.ndarray:
    return cv2.imread(str(root / f"{image_id}_{colour}{ext}"), cv2.IMREAD_UNCHANGED)


def copy_fixtures(dst: Path) -> Path:
    shutil.copytree(FIXTURE_IMAGES, dst / "images")
    shutil.copy(FIXTURE_CSV, dst / "train.csv")
    return dst / "images"


def write_csv(path: Path, rows: list[str], header: str = "Id,Target") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# -- labels ---------------------------------------------------------------------------------------
def test_class_names_match_the_shipped_class_counts() -> None:
    with (HPA_SAMPLE / "class_counts.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert NUM_CLASSES == 28
    assert [int(r["class_id"]) for r in rows] == list(range(28))
    assert tuple(r["name"] for r in rows) == CLASS_NAMES


def test_real_train_csv_statistics(tmp_path: Path) -> None:
    """The real labels of the competition's train.csv (shipped without the Ids), written back
    as a csv with made-up Ids and read by the parser."""
    real = hpa_train_labels()
    rows = [f"id-{i}," + " ".join(map(str, np.flatnonzero(r)[::-1])) for i, r in enumerate(real)]
    ids, labels = read_hpa_csv(write_csv(tmp_path / "train.csv", rows))
    assert labels is not None
    assert np.array_equal(labels, real)
    assert len(ids) == labels.shape[0] == 31_072
    assert labels.shape == (31_072, 28) and labels.dtype == np.uint8
    with (HPA_SAMPLE / "class_counts.csv").open(newline="") as handle:
        counts = [int(r["count"]) for r in csv.DictReader(handle)]
    assert labels.sum(axis=0).tolist() == counts
    per_image = np.bincount(labels.sum(axis=1), minlength=6)
    assert per_image.tolist() == [0, 15_126, 12_485, 3_160, 299, 2]  # the documented HPA facts
    assert np.flatnonzero(labels[1]).tolist() == [0, 1, 2, 7]  # "7 1 2 0" in the real file


def test_fixture_csv_targets() -> None:
    ids, labels = read_hpa_csv(FIXTURE_CSV)
    assert ids == FIXTURE_IDS
    assert labels is not None
    for i, classes in FIXTURE_TARGETS.items():
        assert np.flatnonzero(labels[i]).tolist() == classes


def test_unlabelled_csv_reads_ids_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sub.csv", ["a,0", "b,0"], header="Id,Predicted")
    assert read_hpa_csv(path, labelled=False) == (["a", "b"], None)
    with pytest.raises(ValueError, match=r"sub\.csv.*Target.*labelled=False"):
        read_hpa_csv(path)


@pytest.mark.parametrize(
    ("rows", "pattern"),
    [
        (["a,1", "b,28"], r"line 3 \(Id b\): label\(s\) \[28\] outside 0\.\.27"),
        (["a,-1"], r"line 2 \(Id a\): label\(s\) \[-1\] outside"),
        (["a,1 x"], r"line 2 \(Id a\): Target '1 x' is not space-separated integers"),
        (["a,1.5"], r"line 2 .*not space-separated integers"),
        (["a,"], r"line 2 \(Id a\): empty Target"),
        (["a,3 3"], r"line 2 \(Id a\): repeated label"),
        (["a,1", "b,2", "a,3"], r"line 4: duplicate Id 'a' \(first seen on line 2\)"),
        (["a,1,extra"], r"line 2: 3 fields, the header has 2"),
        ([",1"], r"line 2: empty Id"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path: Path, rows: list[str], pattern: str) -> None:
    path = write_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(ValueError, match=r"labels\.csv, " + pattern):
        read_hpa_csv(path)


def test_csv_missing_file_and_bad_header(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_hpa_csv(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) 'Id' and 'Target'"):
        read_hpa_csv(write_csv(tmp_path / "h.csv", ["a,1"], header="image,label"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_hpa_csv(tmp_path / "empty.csv")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.sets(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=6), min_size=1, max_size=20
    )
)
def test_csv_roundtrip(tmp_path_factory: pytest.TempPathFactory, targets: list[set[int]]) -> None:
    rows = [f"id{i}," + " ".join(map(str, sorted(t, reverse=True))) for i, t in enumerate(targets)]
    path = write_csv(tmp_path_factory.mktemp("csv") / "t.csv", rows)
    ids, labels = read_hpa_csv(path)
    assert ids == [f"id{i}" for i in range(len(targets))]
    assert labels is not None
    assert [set(np.flatnonzero(row).tolist()) for row in labels] == targets


# -- decoding -------------------------------------------------------------------------------------
def test_sample_keys_shapes_and_exact_values() -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV)
    assert len(ds) == 4
    for i, image_id in enumerate(FIXTURE_IDS):
        sample = ds[i]
        assert set(sample) == {"image", "target", "id"}
        assert sample["id"] == image_id
        image, target = sample["image"], sample["target"]
        assert image.shape == (4, 128, 128) and image.dtype == torch.float32
        assert image.is_contiguous()
        expected = np.stack([raw(image_id, c) for c in COLOURS]) / 255.0
        np.testing.assert_array_equal(image.numpy(), expected.astype(np.float32))
        assert target.dtype == torch.float32 and target.shape == (28,)
        assert torch.nonzero(target).flatten().tolist() == FIXTURE_TARGETS[i]
        assert target.sum().item() == len(FIXTURE_TARGETS[i])
    assert ds[-1]["id"] == FIXTURE_IDS[-1]
    with pytest.raises(IndexError):
        ds[4]


@pytest.mark.parametrize("shape", [(16, 16), (8, 8, 4)])
def test_every_8bit_value_scales_to_the_rounded_quotient(shape: tuple[int, ...]) -> None:
    """The look-up table gives x / 255 rounded once to float32, for all 256 values, in place."""
    plane = np.arange(256, dtype=np.uint8).reshape(shape)
    out = np.full((2, *shape), -1.0, np.float32)
    assert _unit_float(plane, out[1]).base is out
    np.testing.assert_array_equal(out[1], (plane / 255.0).astype(np.float32))
    assert (out[0] == -1).all()


@pytest.mark.parametrize(
    "channels", [("yellow", "blue", "green", "red"), ("red", "green", "blue"), ("green",)]
)
def test_channel_order_and_subsets(channels: tuple[str, ...]) -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, channels=channels, dtype="uint8")
    image = ds[1]["image"]
    assert image.dtype == torch.uint8
    expected = np.stack([raw(FIXTURE_IDS[1], c) for c in channels])
    np.testing.assert_array_equal(image.numpy(), expected)
    assert ds.channel_names == channels
    assert len(ds.paths(1)) == len(channels)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_rgb_mode_blends_yellow_into_red(dtype: str) -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, mode="rgb", dtype=dtype)  # type: ignore[arg-type]
    image = ds[2]["image"].numpy()
    assert image.shape == (3, 128, 128)
    r, g, b, y = (raw(FIXTURE_IDS[2], c).astype(np.int64) for c in COLOURS)
    expected = np.stack([(r + y + 1) // 2, g, b]).astype(np.uint8)
    if dtype == "float32":
        expected = (expected / 255.0).astype(np.float32)
    np.testing.assert_array_equal(image, expected)
    assert ds.channel_names == ("red+yellow", "green", "blue")


def test_unlabelled_split_has_no_target(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "test.csv", [f"{i},0" for i in FIXTURE_IDS], "Id,Predicted")
    ds = ProteinAtlas(FIXTURE_IMAGES, path, labelled=False)
    sample = ds[0]
    assert set(sample) == {"image", "id"}
    assert ds.labels is None


def test_real_images_are_read_unchanged(tmp_path: Path) -> None:
    """One Id made of four real images of different Ids (symlinked under a new Id)."""
    sources = {colour: f"hpa-fixture-{i}" for i, colour in enumerate(COLOURS)}
    for colour, image_id in sources.items():
        src = FIXTURE_IMAGES / f"{image_id}_{colour}.png"
        (tmp_path / f"real_{colour}.png").symlink_to(src)
    ds = ProteinAtlas(tmp_path, write_csv(tmp_path / "t.csv", ["real,25 2"]), dtype="uint8")
    image = ds[0]["image"]
    assert image.shape == (4, 128, 128)
    for c, (colour, image_id) in enumerate(sources.items()):
        np.testing.assert_array_equal(image[c].numpy(), raw(image_id, colour))


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_16bit_files_scale_like_8bit(tmp_path: Path, ext: str) -> None:
    for image_id in FIXTURE_IDS[:2]:
        for colour in COLOURS:
            wide = raw(image_id, colour).astype(np.uint16) * 257  # 255 -> 65535 exactly
            assert cv2.imwrite(str(tmp_path / f"{image_id}_{colour}{ext}"), wide)
    csv_path = write_csv(tmp_path / "t.csv", ["hpa-fixture-0,2 25", "hpa-fixture-1,19 25"])
    ref = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV)
    wide_f = ProteinAtlas(tmp_path, csv_path, extension=ext)
    wide_u8 = ProteinAtlas(tmp_path, csv_path, extension=ext, dtype="uint8")
    ref_u8 = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, dtype="uint8")
    for i in range(2):
        assert torch.equal(wide_f[i]["image"], ref[i]["image"])
        assert torch.equal(wide_u8[i]["image"], ref_u8[i]["image"])


def test_mixed_bit_depths_within_one_id(tmp_path: Path) -> None:
    images = copy_fixtures(tmp_path)
    wide = raw(FIXTURE_IDS[0], "green").astype(np.uint16) * 257
    (images / f"{FIXTURE_IDS[0]}_green.png").unlink()
    cv2.imwrite(str(images / f"{FIXTURE_IDS[0]}_green.png"), wide)
    ref = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV)[0]["image"]
    got = ProteinAtlas(images, tmp_path / "train.csv")[0]["image"]
    assert torch.equal(got, ref)
    # rgb mode blends at 16 bits here, so red+yellow is (r + y) / 510 to within 16-bit rounding
    got = ProteinAtlas(images, tmp_path / "train.csv", mode="rgb")[0]["image"].numpy()
    r, y = (raw(FIXTURE_IDS[0], c).astype(np.float64) for c in ("red", "yellow"))
    np.testing.assert_allclose(got[0], (r + y) / 510.0, atol=1 / 65535)
    np.testing.assert_array_equal(got[1:], ref[1:3].numpy())


def test_uint16_to_uint8_rounding_is_exact() -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, dtype="uint8")
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.floor(every / 257.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(ds._convert(every), expected)


def test_hpav18_jpeg_layout(tmp_path: Path) -> None:
    for colour in COLOURS:
        gray = raw(FIXTURE_IDS[3], colour)
        cv2.imwrite(
            str(tmp_path / f"10580_1610_C1_1_{colour}.jpg"), gray, [cv2.IMWRITE_JPEG_QUALITY, 95]
        )
    csv_path = write_csv(tmp_path / "HPAv18.csv", ["10580_1610_C1_1,25"])
    ds = ProteinAtlas(tmp_path, csv_path, extension="jpg", dtype="uint8")
    image = ds[0]["image"].numpy().astype(np.int64)
    expected = np.stack([raw(FIXTURE_IDS[3], c) for c in COLOURS]).astype(np.int64)
    assert np.abs(image - expected).mean() < 2.0  # JPEG at q95 on 128 px crops


def test_colour_file_raises_or_converts_by_max(tmp_path: Path) -> None:
    images = copy_fixtures(tmp_path)
    gray = raw(FIXTURE_IDS[0], "yellow")
    path = images / f"{FIXTURE_IDS[0]}_yellow.png"
    bgr = np.zeros((*gray.shape, 3), np.uint8)
    bgr[..., 1] = gray  # an HPA-style rendering: yellow = R and G
    bgr[..., 2] = gray
    cv2.imwrite(str(path), bgr)
    ds = ProteinAtlas(images, tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"hpa-fixture-0_yellow\.png is a colour image"):
        ds[0]
    converted = ProteinAtlas(images, tmp_path / "train.csv", colour_files="max", dtype="uint8")
    np.testing.assert_array_equal(converted[0]["image"][3].numpy(), gray)


# -- errors ---------------------------------------------------------------------------------------
def test_missing_file_named_at_init_and_at_read(tmp_path: Path) -> None:
    images = copy_fixtures(tmp_path)
    (images / "hpa-fixture-2_blue.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 channel file.*hpa-fixture-2_blue\.png"):
        ProteinAtlas(images, tmp_path / "train.csv")
    ds = ProteinAtlas(images, tmp_path / "train.csv", check_files=False)
    ds[1]
    with pytest.raises(FileNotFoundError, match=r"missing channel file .*hpa-fixture-2_blue\.png"):
        ds[2]
    # the channels not read are not required
    ProteinAtlas(images, tmp_path / "train.csv", channels=("red", "green"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_named(tmp_path: Path, damage: str) -> None:
    images = copy_fixtures(tmp_path)
    path = images / "hpa-fixture-1_green.png"
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a png", "empty": b""}[damage]
    )
    ds = ProteinAtlas(images, tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"could not decode .*hpa-fixture-1_green\.png"):
        ds[1]


def test_mismatched_sizes_named(tmp_path: Path) -> None:
    images = copy_fixtures(tmp_path)
    small = cv2.resize(raw(FIXTURE_IDS[3], "red"), (64, 64))
    cv2.imwrite(str(images / "hpa-fixture-3_red.png"), small)
    ds = ProteinAtlas(images, tmp_path / "train.csv")
    with pytest.raises(
        ValueError, match=r"sizes differ for Id hpa-fixture-3.*_red\.png \(64, 64\)"
    ):
        ds[3]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"mode": "rgbx"}, ValueError, "mode must be"),
        ({"channels": ("red", "red")}, ValueError, "distinct names"),
        ({"channels": ("red", "purple")}, ValueError, "distinct names"),
        ({"channels": ()}, ValueError, "non-empty"),
        ({"channels": "red"}, ValueError, r"got the string 'red' \(write channels=\('red',\)\)"),
        ({"mode": "rgb", "channels": ("red", "green", "blue")}, ValueError, "leave channels"),
        ({"dtype": "float16"}, ValueError, "dtype must be"),
        ({"colour_files": "luma"}, ValueError, "colour_files must be"),
        ({"transform": 3}, TypeError, "transform must be callable"),
        ({"extension": ".jpg"}, FileNotFoundError, "16 channel file"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, **kwargs)


def test_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        ProteinAtlas(tmp_path / "nope", FIXTURE_CSV)


# -- transforms -----------------------------------------------------------------------------------
def test_transform_sees_hwc_float_in_unit_range() -> None:
    seen = []

    def spy(image: np.ndarray) -> dict:
        seen.append((image.shape, image.dtype, float(image.min()), float(image.max())))
        return {"image": image[:64, :32]}

    sample = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, transform=spy)[0]
    shape, dtype, low, high = seen[0]
    assert shape == (128, 128, 4) and dtype == np.float32
    assert 0.0 <= low <= high <= 1.0
    assert sample["image"].shape == (4, 64, 32)


@pytest.mark.parametrize(
    ("transform", "error", "pattern"),
    [
        (lambda image: image, TypeError, "must return a dict with 'image'"),
        (lambda image: {"image": torch.zeros(4, 8, 8)}, TypeError, "leave ToTensorV2 out"),
    ],
)
def test_inconsistent_transform_raises(transform, error: type[Exception], pattern: str) -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, transform=transform)
    with pytest.raises(error, match=f"ProteinAtlas Id hpa-fixture-0.*{pattern}"):
        ds[0]


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_val_recipe_normalises_exactly(dtype: str) -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, dtype=dtype, transform=val_transforms())  # type: ignore[arg-type]
    image = ds[0]["image"].numpy()
    x = np.stack([raw(FIXTURE_IDS[0], c) for c in COLOURS]).astype(np.float64) / 255.0
    mean = np.asarray(HPA_MEAN)[:, None, None]
    std = np.asarray(HPA_STD)[:, None, None]
    np.testing.assert_allclose(image, (x - mean) / std, atol=1e-5)


def test_train_recipe_shapes_and_determinism() -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, transform=train_transforms(96))
    first = []
    for seed in (0, 0, 1):
        ds.transform.set_random_seed(seed)  # type: ignore[union-attr]
        first.append(ds[0]["image"])
    assert first[0].shape == (4, 96, 96) and first[0].dtype == torch.float32
    assert torch.equal(first[0], first[1])
    assert not torch.equal(first[0], first[2])
    rgb = ProteinAtlas(
        FIXTURE_IMAGES,
        FIXTURE_CSV,
        mode="rgb",
        transform=val_transforms(64, channels=3, mean=HPA_MEAN[:3], std=HPA_STD[:3]),
    )
    assert rgb[0]["image"].shape == (3, 64, 64)


@pytest.mark.parametrize("recipe", [train_transforms, val_transforms])
def test_recipe_rejects_mismatched_stats(recipe) -> None:
    # A.Normalize alone would silently reuse mean[0] for the fourth channel:
    x = np.full((8, 8, 4), 0.5, np.float32)
    out = A.Normalize(mean=(0.1, 0.2, 0.3), std=(1, 1, 1), max_pixel_value=1.0)(image=x)["image"]
    assert out.shape == (8, 8, 4)
    with pytest.raises(ValueError, match="mean has 3 and std 3 values for 4 channels"):
        recipe(mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    with pytest.raises(ValueError, match="std must be positive"):
        recipe(mean=(0, 0, 0, 0), std=(1, 1, 0, 1))
    # a 4-channel recipe on a 3-channel (rgb mode) dataset
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, mode="rgb", transform=recipe())
    with pytest.raises(ValueError, match="built for 4 channels, the image has shape"):
        ds[0]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(0, 2**16),
)
def test_normalize_channels_matches_formula(channels: int, h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.random((h, w, channels), dtype=np.float32)
    mean = rng.uniform(-1, 1, channels)
    std = rng.uniform(0.05, 2, channels)
    out = NormalizeChannels(tuple(mean), tuple(std))(image=image)["image"]
    assert out.dtype == np.float32 and out.shape == (h, w, channels)
    np.testing.assert_allclose(out, (image.astype(np.float64) - mean) / std, rtol=1e-5, atol=1e-5)


def test_normalize_channels_checks_and_serialises() -> None:
    norm = NormalizeChannels(HPA_MEAN, HPA_STD)
    with pytest.raises(ValueError, match=r"4 means/stds for an image of shape \(8, 8, 3\)"):
        norm(image=np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="mean has 2 and std 1 values"):
        NormalizeChannels((0.1, 0.2), (0.3,))
    recipe = train_transforms(64)
    again = A.from_dict(A.to_dict(recipe))
    x = np.random.default_rng(0).random((80, 80, 4), dtype=np.float32)
    recipe.set_random_seed(3)
    again.set_random_seed(3)
    np.testing.assert_array_equal(recipe(image=x)["image"], again(image=x)["image"])


# -- loader, registry, preview --------------------------------------------------------------------
def test_dataloader_two_workers() -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, transform=val_transforms(64))
    pickle.loads(pickle.dumps(ds))  # what a spawn worker needs
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    batches = list(loader)
    assert [b["id"] for b in batches] == [FIXTURE_IDS[:2], FIXTURE_IDS[2:]]
    assert batches[0]["image"].shape == (2, 4, 64, 64)
    assert batches[1]["target"].shape == (2, 28)
    assert torch.equal(batches[1]["image"][0], ds[2]["image"])


def test_registered_name() -> None:
    ds = create_dataset("protein_atlas", root=FIXTURE_IMAGES, csv_file=FIXTURE_CSV)
    assert isinstance(ds, ProteinAtlas) and len(ds) == 4


@pytest.mark.slow
def test_preview_figure(tmp_path: Path) -> None:
    ds = ProteinAtlas(FIXTURE_IMAGES, FIXTURE_CSV, transform=val_transforms())
    fig = preview_figure(ds, n=3, seed=0)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3
    titles = " ".join(ax.get_title() for ax in axes)
    assert "hpa-fixture" in titles and ("Cytosol" in titles or "Plasma membrane" in titles)
    shown = axes[0].images[0].get_array()
    assert shown.shape == (128, 128, 3) and shown.min() >= 0.0 and shown.max() <= 1.0
    fig.savefig(tmp_path / "preview.png")
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    assert len(preview_figure(ds, n=10).axes) == 4  # capped at len(dataset)
    with pytest.raises(ValueError, match="n must be >= 1"):
        preview_figure(ds, n=0)
    with pytest.raises(TypeError, match="expected a ProteinAtlas"):
        preview_figure([1, 2], n=1)  # type: ignore[arg-type]
