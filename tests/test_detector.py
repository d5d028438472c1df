"""DetectorFrames: simulator, degradation, normalisation, file reading, transforms, loading."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.utils.data import DataLoader

from smp_imbalance.datasets.detector import DetectorFrames, preview_figure
from smp_imbalance.datasets.detector_sim import (
    FRAME_SHAPE,
    MAX_TIME,
    TorchGeometry,
    combine_hits,
    degrade,
    denormalize_times,
    normalize_times,
    rasterize,
    simulate_frame,
    simulate_photons,
)
from smp_imbalance.datasets.transforms.detector import train_transforms, val_transforms
from smp_imbalance.registry import create_dataset

H, W = FRAME_SHAPE
KEYS = ("image", "target", "signal_mask", "noise_mask")


def _frames(n: int, seed: int = 0, dtype: type = np.uint16) -> np.ndarray:
    """``n`` sparse clean frames (N, H, W) with times 1..1000 on about 3 % of the pixels."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(1, MAX_TIME + 1, (n, H, W)) * (rng.random((n, H, W)) < 0.03)
    return frames.astype(dtype)


# -- simulator ------------------------------------------------------------------------------
def test_simulator_is_deterministic_per_seed() -> None:
    a = simulate_frame(np.random.default_rng(7))
    b = simulate_frame(np.random.default_rng(7))
    c = simulate_frame(np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dataset_clean_frames_depend_on_seed_and_index_only() -> None:
    a = DetectorFrames(num_frames=5, seed=3, train=True)
    b = DetectorFrames(num_frames=5, seed=3, train=False)
    c = DetectorFrames(num_frames=5, seed=4)
    for i in range(5):
        np.testing.assert_array_equal(a.clean_frame(i), b.clean_frame(i))
    assert not np.array_equal(a.clean_frame(0), a.clean_frame(1))
    assert not np.array_equal(a.clean_frame(0), c.clean_frame(0))


@pytest.mark.parametrize(("tracks", "per_track"), [((1, 1), (40, 40)), ((2, 4), (10, 30))])
def test_simulated_photon_counts_within_ranges(
    tracks: tuple[int, int], per_track: tuple[int, int]
) -> None:
    for seed in range(10):
        p = simulate_photons(np.random.default_rng(seed), tracks, per_track)
        counts = np.bincount(p.track)
        assert tracks[0] <= counts.size <= tracks[1]
        assert ((counts >= per_track[0]) & (counts <= per_track[1])).all()


def test_simulated_photons_lie_on_the_detector() -> None:
    g = TorchGeometry()
    p = simulate_photons(np.random.default_rng(0), (3, 3), (200, 200), g)
    assert p.row.dtype == p.col.dtype == p.time.dtype == np.int64
    assert ((p.row >= 0) & (p.row < H) & (p.col >= 0) & (p.col < W)).all()
    assert ((p.time >= 1) & (p.time <= MAX_TIME)).all()
    assert ((p.x >= 0) & (p.x <= g.plate_width)).all()
    np.testing.assert_array_equal(p.col, np.minimum(np.floor(p.x / g.plate_width * W), W - 1))


def test_earliest_photon_takes_the_shortest_path() -> None:
    """Track along the plate normal, one index, no time smearing: the fastest trapped photon
    goes straight up at the Cherenkov angle, ``d_y = sin(theta_c)``, so
    ``t = L n_g / (c sin(theta_c))``."""
    n, dist = 1.47, 1.0
    g = TorchGeometry(
        refractive_index=(n, n),
        emission_distance=(dist, dist),
        max_track_tilt=0.0,
        time_resolution=0.0,
        track_time=(0.0, 0.0),
    )
    p = simulate_photons(np.random.default_rng(0), (1, 1), (3000, 3000), g)
    sin_c = np.sqrt(1 - 1 / n**2)
    t_ns = dist / sin_c * (n + g.group_index_offset) / 0.299792458
    assert p.time.min() == 1 + int(t_ns / g.time_bin)
    # and its angle atan(cos / sin) is the row it lands on
    expected_row = int((np.arctan2(1 / n, sin_c) - 0.6) / 0.3 * H)
    assert abs(int(np.median(p.row[p.time == p.time.min()])) - expected_row) <= 1


def test_empty_frames_are_served() -> None:
    ds = DetectorFrames(num_frames=2, tracks=0, train=False)
    assert not ds.clean_frame(0).any()
    s = ds[0]
    assert not s["target"].any() and not s["signal_mask"].any()
    assert s["noise_mask"].sum() > 150


def test_simulated_frame_shape_dtype_and_collisions() -> None:
    rng = np.random.default_rng(1)
    p = simulate_photons(rng)
    frame = rasterize(p.row, p.col, p.time)
    assert frame.shape == FRAME_SHAPE and frame.dtype == np.int64
    assert 0 < (frame > 0).sum() <= p.row.size
    # every lit pixel holds the latest of the photons that landed on it
    latest = {}
    for r, c, t in zip(p.row, p.col, p.time, strict=True):
        latest[(r, c)] = max(latest.get((r, c), 0), t)
    assert {(r, c): frame[r, c] for r, c in zip(*np.nonzero(frame), strict=True)} == latest


def test_rasterize_later_time_wins() -> None:
    frame = rasterize(
        np.array([0, 0, 1, 0]), np.array([0, 0, 2, 0]), np.array([5, 9, 7, 3]), (2, 3)
    )
    np.testing.assert_array_equal(frame, [[9, 0, 0], [0, 0, 7]])


def test_combine_hits_exact_small_example() -> None:
    kept = np.array([[5, 0, 7], [3, 0, 0]])
    noise = np.array([[4, 0, 9], [3, 2, 0]])
    noisy, signal, noise_mask = combine_hits(kept, noise)
    np.testing.assert_array_equal(noisy, [[5, 0, 9], [3, 2, 0]])
    # (0, 0): signal later than noise; (0, 2): noise overwrote signal; (1, 0): a tie is signal
    np.testing.assert_array_equal(signal, [[True, False, False], [True, False, False]])
    np.testing.assert_array_equal(noise_mask, [[False, False, True], [False, True, False]])


# -- degradation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("signal_hits", "noise_hits"), [((25, 35), (180, 220)), ((0, 5), (0, 0)), ((10, 10), (50, 60))]
)
def test_degrade_counts_within_ranges(
    signal_hits: tuple[int, int], noise_hits: tuple[int, int]
) -> None:
    clean = _frames(1)[0].astype(np.int64)
    for seed in range(10):
        d = degrade(clean, np.random.default_rng(seed), signal_hits, noise_hits)
        assert signal_hits[0] <= d.num_signal <= signal_hits[1]
        assert noise_hits[0] <= d.num_noise <= noise_hits[1]
        assert (d.kept > 0).sum() == d.num_signal  # no jitter: distinct clean pixels
        assert d.signal_mask.sum() <= d.num_signal
        assert d.noise_mask.sum() <= d.num_noise
        # kept hits are clean hits with their clean times
        np.testing.assert_array_equal(d.kept[d.kept > 0], clean[d.kept > 0])


def test_degrade_caps_k_at_the_clean_hit_count() -> None:
    clean = np.zeros(FRAME_SHAPE, np.int64)
    clean[3, 4], clean[5, 6] = 10, 20
    d = degrade(clean, np.random.default_rng(0), (30, 30), (0, 0))
    assert d.num_signal == 2
    np.testing.assert_array_equal(d.noisy, clean)


def test_degrade_jitter_moves_hits_within_bounds() -> None:
    clean = _frames(1)[0].astype(np.int64)
    plain = degrade(clean, np.random.default_rng(0), (30, 30), (0, 0))
    jittered = degrade(clean, np.random.default_rng(0), (30, 30), (0, 0), 2.0, 5.0)
    assert not np.array_equal(plain.kept, jittered.kept)
    assert 0 < (jittered.kept > 0).sum() <= 30
    assert jittered.kept.min() >= 0 and jittered.kept.max() <= MAX_TIME
    with pytest.raises(ValueError, match="jitter"):
        degrade(clean, np.random.default_rng(0), position_jitter=-1.0)


def test_default_noisy_frames_are_about_98_percent_empty() -> None:
    ds = DetectorFrames(num_frames=20, train=False)
    zeros = np.mean([(ds[i]["image"] == 0).float().mean().item() for i in range(20)])
    assert 0.975 < zeros < 0.985


@pytest.mark.parametrize("target", ["clean", "kept"])
@pytest.mark.parametrize("jitter", [0.0, 1.5])
def test_masks_are_consistent_with_the_frames(target: str, jitter: float) -> None:
    ds = DetectorFrames(
        num_frames=6, train=False, target=target, position_jitter=jitter, time_jitter=jitter
    )
    for i in range(len(ds)):
        s = ds[i]
        image, tgt, sig, noi = (s[k][0] for k in KEYS)
        assert not (sig & noi).any()
        assert torch.equal(sig | noi, image > 0)
        assert sig.any() and noi.any()
        if target == "kept":  # the kept frame is where the signal hits are
            assert torch.equal(image[sig], tgt[sig])
            assert (tgt[noi & (tgt > 0)] < image[noi & (tgt > 0)]).all()  # overwritten by noise
        elif jitter == 0.0:  # kept hits are clean hits: same pixel, same time
            assert torch.equal(image[sig], tgt[sig])
        clean = normalize_times(ds.clean_frame(i))
        if target == "clean":
            np.testing.assert_array_equal(tgt.numpy(), clean)


def test_sample_keys_shapes_and_dtypes() -> None:
    s = DetectorFrames(num_frames=2)[1]
    assert set(s) == set(KEYS)
    for key, dtype in zip(
        KEYS, (torch.float32, torch.float32, torch.bool, torch.bool), strict=True
    ):
        assert s[key].shape == (1, H, W) and s[key].dtype == dtype
    assert s["image"].min() >= 0 and s["image"].max() <= 1
    nonzero = s["image"][s["image"] > 0]
    assert nonzero.min() >= 0.1  # the gap


def test_validation_degradation_is_fixed_training_is_fresh() -> None:
    val_a = DetectorFrames(num_frames=3, train=False, seed=5)
    val_b = DetectorFrames(num_frames=3, train=False, seed=5)
    for key in KEYS:
        assert torch.equal(val_a[2][key], val_b[2][key])
    train = DetectorFrames(num_frames=3, train=True, seed=5)
    first, second = train[2], train[2]
    assert not torch.equal(first["image"], second["image"])
    assert torch.equal(first["target"], second["target"])


def test_training_degradation_is_reproducible_under_torch_seed() -> None:
    torch.manual_seed(123)
    a = DetectorFrames(num_frames=2, train=True)[0]["image"]
    torch.manual_seed(123)
    b = DetectorFrames(num_frames=2, train=True)[0]["image"]
    assert torch.equal(a, b)


def test_raw_times_when_not_normalized() -> None:
    ds = DetectorFrames(num_frames=2, train=False, normalize=False)
    s = ds[0]
    np.testing.assert_array_equal(s["target"][0].numpy(), ds.clean_frame(0).astype(np.float32))
    assert s["image"].max() <= MAX_TIME and s["image"].max() > 1


# -- normalisation --------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(
    times=arrays(np.int64, st.integers(1, 64), elements=st.integers(0, MAX_TIME)),
    gap=st.floats(0.001, 0.99),
)
def test_denormalize_inverts_normalize_exactly(times: np.ndarray, gap: float) -> None:
    norm = normalize_times(times, gap)
    assert norm.dtype == np.float32
    np.testing.assert_array_equal(denormalize_times(norm, gap), times)
    tensor = normalize_times(torch.from_numpy(times), gap)
    assert tensor.dtype == torch.float32
    assert torch.equal(denormalize_times(tensor, gap), torch.from_numpy(times))
    hits = norm[times > 0]
    assert (norm[times == 0] == 0).all() and (hits >= np.float32(gap) * 0.9999).all()


def test_normalize_exact_values_and_decoding_outputs() -> None:
    t = np.array([0, 1, 500, 1000])
    expected = [0.0, 0.1, 0.1 + 0.9 * 499 / 999, 1.0]
    np.testing.assert_allclose(normalize_times(t, 0.1), expected, rtol=1e-7)
    # network outputs: below gap / 2 is no hit, beyond [gap, 1] clips to the valid bins
    np.testing.assert_array_equal(
        denormalize_times(np.array([0.0, 0.049, 0.051, 1.3]), 0.1), [0, 0, 1, 1000]
    )


@pytest.mark.parametrize("gap", [0.0, 1.0, -0.1])
def test_gap_must_be_inside_the_unit_interval(gap: float) -> None:
    with pytest.raises(ValueError, match="gap"):
        normalize_times(np.zeros(2), gap)
    with pytest.raises(ValueError, match="gap"):
        DetectorFrames(num_frames=1, gap=gap)


# -- reading frames -------------------------------------------------------------------------
def test_reads_single_npy_frame_and_stack_memory_mapped(tmp_path: Path) -> None:
    frames = _frames(4)
    np.save(tmp_path / "stack.npy", frames)
    np.save(tmp_path / "single.npy", frames[0].astype(np.float32))
    stack = DetectorFrames(tmp_path / "stack.npy", train=False)
    single = DetectorFrames(tmp_path / "single.npy", train=False)
    assert len(stack) == 4 and len(single) == 1
    for i in range(4):
        np.testing.assert_array_equal(stack.clean_frame(i), frames[i])
    np.testing.assert_array_equal(single.clean_frame(0), frames[0])
    assert isinstance(stack._open(0), np.memmap)
    assert stack[3]["target"].shape == (1, H, W)
    assert "stack.npy (frame 2)" in stack.where(2)


def test_pickling_drops_open_files(tmp_path: Path) -> None:
    np.save(tmp_path / "stack.npy", _frames(64))
    ds = DetectorFrames(tmp_path / "stack.npy", train=False)
    ds[0]
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # the 64 frames (1.4 MB) are not in it
    clone = pickle.loads(blob)
    assert torch.equal(clone[5]["image"], ds[5]["image"])


def test_reads_npz_by_single_array_or_key(tmp_path: Path) -> None:
    frames = _frames(3)
    np.savez_compressed(tmp_path / "one.npz", frames=frames)
    np.savez(tmp_path / "two.npz", frames=frames, other=frames[:1])
    ds = DetectorFrames(tmp_path / "one.npz", train=False)
    np.testing.assert_array_equal(ds.clean_frame(2), frames[2])
    keyed = DetectorFrames(tmp_path / "two.npz", npz_key="other", train=False)
    assert len(keyed) == 1
    with pytest.raises(ValueError, match=r"two\.npz.*npz_key"):
        DetectorFrames(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=r"two\.npz.*'missing'"):
        DetectorFrames(tmp_path / "two.npz", npz_key="missing")


def test_reads_a_folder_in_sorted_order(tmp_path: Path) -> None:
    frames = _frames(5)
    np.save(tmp_path / "a.npy", frames[:2])
    np.savez(tmp_path / "b.npz", frames[2])
    np.save(tmp_path / "c.npy", frames[3:])
    (tmp_path / "README.txt").write_text("not a frame")
    ds = DetectorFrames(tmp_path, train=False)
    assert [f.path.name for f in ds.files] == ["a.npy", "b.npz", "c.npy"]
    assert len(ds) == 5
    for i in range(5):
        np.testing.assert_array_equal(ds.clean_frame(i), frames[i])
    assert len(DetectorFrames(tmp_path, num_frames=3)) == 3
    with pytest.raises(ValueError, match="num_frames=9"):
        DetectorFrames(tmp_path, num_frames=9)


def test_reads_in_memory_arrays() -> None:
    frames = _frames(3, dtype=np.float64)
    assert len(DetectorFrames(frames)) == 3
    single = DetectorFrames(frames[1], train=False)
    assert len(single) == 1
    np.testing.assert_array_equal(single.clean_frame(0), frames[1])
    assert single.clean_frame(0).dtype == np.int64


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((88, 128), np.int16), r"shape \(88, 128\)"),
        (np.zeros((2, 3, H, W), np.int16), "shape"),
        (np.zeros((0, H, W), np.int16), "N >= 1"),
        (np.zeros((H, W), bool), "dtype bool"),
        (np.zeros((H, W), np.complex64), "dtype complex64"),
    ],
)
def test_bad_file_headers_name_the_file(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "bad_frames.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=rf"bad_frames\.npy.*{match}"):
        DetectorFrames(path)
    with pytest.raises(ValueError, match=match):
        DetectorFrames(array)


@pytest.mark.parametrize(
    ("value", "dtype", "match"),
    [
        (1001, np.int32, r"0\.\.1000"),
        (-1, np.int32, r"0\.\.1000"),
        (2.5, np.float32, "whole time bins"),
        (np.nan, np.float64, "NaN"),
    ],
)
def test_bad_values_name_the_file_and_frame(
    tmp_path: Path, value: float, dtype: type, match: str
) -> None:
    frames = _frames(3).astype(dtype)
    frames[1, 4, 5] = value
    path = tmp_path / "values.npy"
    np.save(path, frames)
    ds = DetectorFrames(path)
    ds[0]  # the good frames read fine
    with pytest.raises(ValueError, match=rf"values\.npy \(frame 1\).*{match}"):
        ds[1]
    with pytest.raises(ValueError, match=rf"values\.npy \(frames 0\.\.2\).*{match}"):
        DetectorFrames(path, validate=True)
    with pytest.raises(ValueError, match=match):
        DetectorFrames(frames)


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.npy"):
        DetectorFrames(tmp_path / "nowhere.npy")
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(ValueError, match=r"junk\.npy"):
        DetectorFrames(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        DetectorFrames(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(ValueError, match=r"empty\.npz"):
        DetectorFrames(tmp_path / "empty.npz")
    (tmp_path / "frames.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"frames\.txt: expected a \.npy or \.npz"):
        DetectorFrames(tmp_path / "frames.txt")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        DetectorFrames(empty)
    with pytest.raises(TypeError, match="source"):
        DetectorFrames(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"signal_hits": (5, 2)}, ValueError, "signal_hits"),
        ({"noise_hits": (-1, 2)}, ValueError, "noise_hits"),
        ({"noise_hits": 2.5}, TypeError, "noise_hits"),
        ({"target": "noisy"}, ValueError, "target"),
        ({"time_jitter": -1.0}, ValueError, "time_jitter"),
        ({"position_jitter": "2"}, ValueError, "position_jitter"),
        ({"num_frames": 0}, ValueError, "num_frames"),
        ({"seed": -1}, ValueError, "seed"),
        ({"transform": "flip"}, TypeError, "transform"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        DetectorFrames(**{"num_frames": 2, **kwargs})


def test_index_errors() -> None:
    ds = DetectorFrames(num_frames=2)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    assert torch.equal(ds[-1]["target"], ds[1]["target"])
    with pytest.raises(TypeError, match="int"):
        ds[1.0]  # type: ignore[index]


# -- transforms -----------------------------------------------------------------------------
@pytest.mark.parametrize(("hflip", "vflip", "dims"), [(1.0, 0.0, [-1]), (0.0, 1.0, [-2])])
def test_flips_move_every_target(hflip: float, vflip: float, dims: list[int]) -> None:
    plain = DetectorFrames(num_frames=3, train=False)
    flipped = DetectorFrames(
        num_frames=3, train=False, transform=train_transforms(hflip=hflip, vflip=vflip)
    )
    for i in range(3):
        a, b = plain[i], flipped[i]
        for key in KEYS:
            assert b[key].dtype == a[key].dtype
            assert torch.equal(b[key], torch.flip(a[key], dims)), key
            assert not torch.equal(b[key], a[key]), key


def test_val_transforms_and_standardisation() -> None:
    plain = DetectorFrames(num_frames=1, train=False)[0]
    same = DetectorFrames(num_frames=1, train=False, transform=val_transforms())[0]
    for key in KEYS:
        assert torch.equal(plain[key], same[key])
    std = DetectorFrames(
        num_frames=1, train=False, transform=val_transforms(mean=[0.02], std=[0.1])
    )[0]
    torch.testing.assert_close(std["image"], (plain["image"] - 0.02) / 0.1)
    assert torch.equal(std["target"], plain["target"])  # the target is not standardised


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mean": [0.1, 0.2], "std": [0.3, 0.3]}, "one value per channel"),
        ({"mean": [0.1]}, "both mean and std"),
        ({"mean": [0.1], "std": [0.0]}, "std"),
        ({"hflip": 1.5}, "hflip"),
    ],
)
def test_transform_recipe_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_transforms(**kwargs)


def test_inconsistent_transform_names_the_sample() -> None:
    def crop_image_only(image: np.ndarray, **targets: np.ndarray) -> dict:
        return {"image": image[:64], **targets}

    ds = DetectorFrames(num_frames=2, transform=crop_image_only)
    with pytest.raises(ValueError, match=r"DetectorFrames\[1\].*'target'"):
        ds[1]


# -- loading, registry, preview ------------------------------------------------------------
def test_dataloader_with_two_workers(tmp_path: Path) -> None:
    np.save(tmp_path / "stack.npy", _frames(6))
    for ds in (
        DetectorFrames(tmp_path / "stack.npy", train=False),
        DetectorFrames(num_frames=6, train=False, transform=train_transforms(hflip=1.0)),
    ):
        serial = list(DataLoader(ds, batch_size=3, num_workers=0))
        parallel = list(DataLoader(ds, batch_size=3, num_workers=2))
        assert len(parallel) == 2
        for a, b in zip(serial, parallel, strict=True):
            assert b["image"].shape == (3, 1, H, W) and b["signal_mask"].dtype == torch.bool
            for key in KEYS:
                assert torch.equal(a[key], b[key])


def test_registered_as_detector_frames() -> None:
    ds = create_dataset("detector_frames", num_frames=3, seed=1)
    assert isinstance(ds, DetectorFrames) and len(ds) == 3


@pytest.mark.slow
def test_preview_figure(tmp_path: Path) -> None:
    ds = DetectorFrames(num_frames=5, train=False)
    fig = preview_figure(ds, n=2, seed=0)
    grids = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grids) == 8
    fig.savefig(tmp_path / "preview.png")
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="n must be"):
        preview_figure(ds, n=0)


@pytest.mark.parametrize("recipe", ["train", "val"])
def test_recipes_pad_to_a_divisor_with_empty_pixels(recipe: str) -> None:
    from smp_imbalance.datasets.transforms import detector as recipes

    make = recipes.train_transforms if recipe == "train" else recipes.val_transforms
    ds = DetectorFrames(num_frames=2, train=False, transform=make(pad_divisor=32))
    sample = ds[0]
    for key, value in sample.items():
        assert tuple(value.shape) == (1, 128, 96), key
        assert not value[..., 88:].any(), key  # padding is "no hit" everywhere
    with pytest.raises(ValueError, match="pad_divisor"):
        make(pad_divisor=0)
