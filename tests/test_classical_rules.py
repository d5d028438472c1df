"""Classical hit rules: exact counts on hand-made frames, numpy brute-force parity, arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.datasets.detector_sim import denormalize_times, normalize_times
from smp_imbalance.models import NeighbourCountRule, TimeWindowRule

GAP, MAX_TIME = 0.1, 1000


def _frame(hits: list[tuple[int, int, int]], shape: tuple[int, int] = (64, 40)) -> torch.Tensor:
    """(row, col, time bin) hits -> a normalised float32 (1, 1, H, W) frame."""
    t = torch.zeros(shape, dtype=torch.int64)
    for r, c, time in hits:
        t[r, c] = time
    return normalize_times(t, GAP, MAX_TIME).view(1, 1, *shape)


def _at(out: torch.Tensor, hits: list[tuple[int, int, int]]) -> list[float]:
    return [out[0, 0, r, c].item() for r, c, _ in hits]


# -- hand-made frames ------------------------------------------------------------------------
def test_neighbour_counts_three_close_and_one_far() -> None:
    # three hits within radius 5 of each other (same time), one 30 pixels away
    hits = [(10, 10, 100), (10, 13, 100), (13, 10, 100), (40, 35, 100)]
    x = _frame(hits)
    rule = NeighbourCountRule(radius=5.0, time_scale=1.0, min_neighbours=2, empty_logit=-9.0)
    out = rule(x)
    # logits count - threshold + 0.5: counts 2, 2, 2 (the pair (10,13)-(13,10) is 4.24 apart), 0
    assert _at(out, hits) == [0.5, 0.5, 0.5, -1.5]
    empty = x == 0
    assert (out[empty] == -9.0).all()
    assert out.shape == x.shape and out.dtype == x.dtype
    # one more neighbour needed: nobody is kept
    out = NeighbourCountRule(radius=5.0, time_scale=1.0, min_neighbours=3)(x)
    assert _at(out, hits) == [-0.5, -0.5, -0.5, -2.5]


def test_neighbour_distance_includes_scaled_time() -> None:
    # same pixel neighbourhood, but the third hit is 50 bins later: 50 * 0.2 = 10 > radius
    hits = [(5, 5, 300), (5, 7, 301), (6, 5, 350)]
    x = _frame(hits)
    out = NeighbourCountRule(radius=4.0, time_scale=0.2, min_neighbours=1)(x)
    assert _at(out, hits) == [0.5, 0.5, -0.5]
    # with a small time scale the late hit joins
    out = NeighbourCountRule(radius=4.0, time_scale=0.01, min_neighbours=1)(x)
    assert _at(out, hits) == [1.5, 1.5, 1.5]


def test_time_window_counts_across_the_frame() -> None:
    # four hits within 10 bins of each other at opposite corners, one far in time
    hits = [(0, 0, 500), (63, 39, 505), (0, 39, 495), (63, 0, 502), (30, 20, 800)]
    x = _frame(hits)
    rule = TimeWindowRule(half_width=10.5, min_hits=3, empty_logit=-5.0)
    out = rule(x)
    assert _at(out, hits) == [0.5, 0.5, 0.5, 0.5, -2.5]
    assert (out[x == 0] == -5.0).all()
    # 495 and 505 are 10 apart; with half_width 7.5 each of them sees 2 (500, 502)
    out = TimeWindowRule(half_width=7.5, min_hits=3)(x)
    assert _at(out, hits) == [0.5, -0.5, -0.5, 0.5, -2.5]


def test_threshold_zero_keeps_every_hit() -> None:
    hits = [(1, 1, 1), (50, 30, 1000)]
    x = _frame(hits)
    for rule in (NeighbourCountRule(min_neighbours=0), TimeWindowRule(min_hits=0)):
        out = rule(x)
        assert _at(out, hits) == [0.5, 0.5]
        assert (out[x == 0] == -20.0).all()


def test_batch_frames_are_counted_apart() -> None:
    # the same hits in two frames: a hit never counts hits of another frame
    hits = [(3, 3, 200), (3, 4, 200)]
    x = torch.cat([_frame(hits), _frame([(3, 5, 200)]), torch.zeros(1, 1, 64, 40)])
    for rule in (
        NeighbourCountRule(radius=3.0, min_neighbours=1),
        TimeWindowRule(half_width=5.0, min_hits=1),
    ):
        out = rule(x)
        assert out[0, 0, 3, 3] == 0.5 and out[0, 0, 3, 4] == 0.5
        assert out[1, 0, 3, 5] == -0.5
        assert (out[2] == -20.0).all()


def test_all_empty_batch() -> None:
    x = torch.zeros(2, 1, 8, 8)
    for rule in (NeighbourCountRule(), TimeWindowRule()):
        out = rule(x)
        assert out.shape == x.shape
        assert (out == -20.0).all()


def test_rules_have_no_parameters() -> None:
    assert list(NeighbourCountRule().parameters()) == []
    assert list(TimeWindowRule().parameters()) == []


# -- brute-force parity ----------------------------------------------------------------------
def _reference_counts(
    times: np.ndarray, metric: str, scale: float, time_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (H, W) int bins: each hit's count of other hits within ``scale`` (float64), at
    ``scale (1 -+ 1e-6)``, so that pairs on the boundary (to float32 rounding) are told apart."""
    r, c = np.nonzero(times)
    t = times[r, c].astype(np.float64)
    if metric == "space":
        d = np.sqrt(
            (r[:, None] - r[None]) ** 2.0
            + (c[:, None] - c[None]) ** 2.0
            + (time_scale * (t[:, None] - t[None])) ** 2
        )
    else:
        d = np.abs(t[:, None] - t[None])
    np.fill_diagonal(d, np.inf)
    return (d <= scale * (1 - 1e-6)).sum(1), (d <= scale * (1 + 1e-6)).sum(1)


def _check_against_reference(
    out: torch.Tensor, times: np.ndarray, threshold: int, lo: np.ndarray, hi: np.ndarray
) -> None:
    r, c = np.nonzero(times)
    got = out[0, r, c].numpy().astype(np.float64) + threshold - 0.5  # logits -> counts
    assert np.array_equal(got, np.round(got))
    assert ((got >= lo) & (got <= hi)).all()
    sure = lo == hi
    assert sure.mean() > 0.9
    np.testing.assert_array_equal(got[sure], lo[sure])
    assert (out[0][times == 0] == -20.0).all()


@pytest.fixture(scope="module")
def detector_batch() -> np.ndarray:
    """Four noisy frames of int time bins (4, H, W), different hit counts."""
    ds = DetectorFrames(num_frames=4, seed=5, train=False, noise_hits=(50, 250))
    return np.stack([ds.arrays(i)["image"] for i in range(4)])


def _random_batch(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.0, 0.15, (5, 1, 1))
    times = rng.integers(1, MAX_TIME + 1, (5, 24, 16)) * (rng.random((5, 24, 16)) < density)
    # time-correlated clusters so that the counts are not all zero
    times[:, :8, :8] = np.where(times[:, :8, :8] > 0, rng.integers(400, 440, (5, 8, 8)), 0)
    return times


@pytest.mark.parametrize("source", ["detector", 0, 1, 2])
@pytest.mark.parametrize(
    ("radius", "time_scale", "threshold"), [(28.0, 1.2, 3), (5.0, 0.3, 1), (9.5, 0.05, 0)]
)
def test_neighbour_rule_matches_brute_force(
    source: str | int,
    radius: float,
    time_scale: float,
    threshold: int,
    detector_batch: np.ndarray,
) -> None:
    if source == "detector":
        times = denormalize_times(detector_batch, GAP, MAX_TIME)
    else:
        times = _random_batch(int(source))
    x = normalize_times(torch.from_numpy(times), GAP, MAX_TIME).unsqueeze(1)
    out = NeighbourCountRule(radius, time_scale, threshold)(x)
    for i in range(len(times)):
        lo, hi = _reference_counts(times[i], "space", radius, time_scale)
        _check_against_reference(out[i], times[i], threshold, lo, hi)


@pytest.mark.parametrize("source", ["detector", 0, 1, 2])
@pytest.mark.parametrize(("half_width", "threshold"), [(20.5, 12), (3.5, 1), (100.25, 0)])
def test_time_window_rule_matches_brute_force(
    source: str | int, half_width: float, threshold: int, detector_batch: np.ndarray
) -> None:
    if source == "detector":
        times = denormalize_times(detector_batch, GAP, MAX_TIME)
    else:
        times = _random_batch(int(source))
    x = normalize_times(torch.from_numpy(times), GAP, MAX_TIME).unsqueeze(1)
    out = TimeWindowRule(half_width, threshold)(x)
    for i in range(len(times)):
        lo, hi = _reference_counts(times[i], "time", half_width)
        _check_against_reference(out[i], times[i], threshold, lo, hi)


# -- the boundary of the window, exactly ------------------------------------------------------
def test_time_window_is_inclusive_at_exactly_half_width() -> None:
    missed = []
    for t in range(1, MAX_TIME - 20 + 1):
        x = _frame([(0, 0, t), (1, 1, t + 20)], shape=(2, 2))
        if not (TimeWindowRule(half_width=20.0, min_hits=1)(x)[x > 0] > 0).all():
            missed.append(t)
    assert missed == []


def test_neighbour_rule_is_inclusive_at_exactly_the_radius() -> None:
    missed = []
    for a in range(0, 100):
        x = _frame([(a, 0, 500), (a + 28, 0, 500)], shape=(128, 2))
        if not (NeighbourCountRule(radius=28.0, min_neighbours=1)(x)[x > 0] > 0).all():
            missed.append(a)
    assert missed == []


def test_just_outside_the_window_is_never_counted() -> None:
    for t in range(1, MAX_TIME - 21 + 1, 7):
        x = _frame([(0, 0, t), (1, 1, t + 21)], shape=(2, 2))
        assert (TimeWindowRule(half_width=20.0, min_hits=1)(x)[x > 0] < 0).all()


# -- arguments --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"radius": 0.0},
        {"radius": -1.0},
        {"radius": float("nan")},
        {"time_scale": 0.0},
        {"min_neighbours": -1},
        {"min_neighbours": 2.0},
        {"min_neighbours": True},
    ],
)
def test_neighbour_rule_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        NeighbourCountRule(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"half_width": 0.0}, {"half_width": -3.0}, {"min_hits": -1}, {"min_hits": 1.5}],
)
def test_time_window_rule_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TimeWindowRule(**kwargs)


@pytest.mark.parametrize("rule", [NeighbourCountRule, TimeWindowRule])
@pytest.mark.parametrize("kwargs", [{"gap": 0.0}, {"gap": 1.0}, {"max_time": 1}])
def test_rules_bad_gap_or_max_time(rule: type, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        rule(**kwargs)
