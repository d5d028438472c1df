"""The oracle denoiser of simulated detector frames: best_operating_point by hand, oracle_hits
against the dataset's own masks, and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.datasets.detector_oracle import OracleHits, best_operating_point, oracle_hits

SAMPLES = 20_000


# -- best_operating_point ---------------------------------------------------------------------
def _bool(*values: int) -> np.ndarray:
    return np.array(values, dtype=bool)


def test_best_operating_point_by_hand() -> None:
    # sorted: 5 (s), 4 (s), 4 (n), 2 (s), 1 (n), 1 (n); 3 signal, 3 noise
    # keep >= 5: ret 1/3, rem 1   -> 2 (1/3)(1) / (4/3) = 0.5
    # keep >= 4: ret 2/3, rem 2/3 -> 2/3
    # keep >= 2: ret 1,   rem 2/3 -> 2 (2/3) / (5/3) = 0.8   <- best
    # keep >= 1: ret 1,   rem 0   -> 0
    odds = np.array([1.0, 4.0, 2.0, 5.0, 1.0, 4.0])  # shuffled
    signal = _bool(0, 1, 1, 1, 0, 0)
    noise = ~signal
    best = best_operating_point(odds, signal, noise)
    assert best == pytest.approx(
        {"threshold": 2.0, "signal_retention": 1.0, "noise_removal": 2 / 3, "score": 0.8}
    )
    assert set(best) == {"threshold", "signal_retention", "noise_removal", "score"}
    assert all(isinstance(v, float) for v in best.values())


def test_best_operating_point_only_cuts_between_distinct_odds() -> None:
    # odds 2, 2 (signal), 2 (noise), 0.5 (noise): cutting inside the tie of 2s (after the two
    # signal hits) would score 1, but a threshold keeps all three or none of them
    odds = np.array([2.0, 2.0, 2.0, 0.5])
    signal = _bool(1, 1, 0, 0)
    best = best_operating_point(odds, signal, ~signal)
    assert best == pytest.approx(
        {"threshold": 2.0, "signal_retention": 1.0, "noise_removal": 0.5, "score": 2 / 3}
    )
    # the tie's order in the input does not matter
    odds, signal = odds[[2, 0, 3, 1]], signal[[2, 0, 3, 1]]
    assert best_operating_point(odds, signal, ~signal) == pytest.approx(best)


def test_best_operating_point_all_signal() -> None:
    odds = np.array([3.0, 1.0, 2.0])
    signal = _bool(1, 1, 1)
    best = best_operating_point(odds, signal, ~signal)
    assert best == pytest.approx(
        {"threshold": 1.0, "signal_retention": 1.0, "noise_removal": 1.0, "score": 1.0}
    )


def test_best_operating_point_all_noise() -> None:
    odds = np.array([3.0, 1.0, 2.0, 2.0])
    noise = _bool(1, 1, 1, 1)
    best = best_operating_point(odds, ~noise, noise)
    assert best["score"] == 0.0
    assert best["signal_retention"] == 0.0
    assert best["threshold"] in odds
    assert 0.0 <= best["noise_removal"] <= 1.0


def test_best_operating_point_perfect_separation() -> None:
    odds = np.array([0.1, 9.0, 0.2, 7.0, 8.0])
    signal = odds > 1
    best = best_operating_point(odds, signal, ~signal)
    assert best == pytest.approx(
        {"threshold": 7.0, "signal_retention": 1.0, "noise_removal": 1.0, "score": 1.0}
    )


@pytest.mark.parametrize("seed", range(5))
def test_best_operating_point_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    odds = rng.integers(0, 12, n).astype(np.float64)  # many ties
    signal = rng.random(n) < 0.4 + 0.04 * odds
    noise = ~signal
    best = best_operating_point(odds, signal, noise)
    scores = {}
    for t in np.unique(odds):
        kept = odds >= t
        ret = (kept & signal).sum() / max(signal.sum(), 1)
        rem = 1 - (kept & noise).sum() / max(noise.sum(), 1)
        scores[t] = (2 * ret * rem / max(ret + rem, 1e-12), ret, rem)
    top = max(s for s, _, _ in scores.values())
    assert best["score"] == pytest.approx(top)
    score, ret, rem = scores[best["threshold"]]
    assert best["score"] == pytest.approx(score)
    assert best["signal_retention"] == pytest.approx(ret)
    assert best["noise_removal"] == pytest.approx(rem)


# -- oracle_hits ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset() -> DetectorFrames:
    return DetectorFrames(num_frames=4, seed=1000, train=False, target="kept")


@pytest.fixture(scope="module")
def oracle(dataset: DetectorFrames) -> list[OracleHits]:
    return [oracle_hits(dataset, i, samples=SAMPLES) for i in range(3)]


def test_oracle_flags_are_the_metrics_true_hits(
    dataset: DetectorFrames, oracle: list[OracleHits]
) -> None:
    for i, hits in enumerate(oracle):
        sample = dataset.arrays(i)
        lit = np.nonzero(sample["image"])
        n = lit[0].size
        assert hits.odds.shape == hits.signal.shape == hits.noise.shape == (n,)
        assert hits.odds.dtype == np.float64
        assert hits.signal.dtype == hits.noise.dtype == bool
        # a true hit is a pixel of a kept signal hit (target > 0), as DetectorHitMetrics counts,
        # also where a later noise hit overwrote it; every other hit is noise
        np.testing.assert_array_equal(hits.signal, sample["target"][lit] > 0)
        np.testing.assert_array_equal(hits.noise, sample["noise_mask"][lit] & ~hits.signal)
        assert (hits.signal >= sample["signal_mask"][lit]).all()
        assert not (hits.signal & hits.noise).any()
        assert (hits.signal | hits.noise).all()
        assert hits.signal.sum() > 10 and hits.noise.sum() > 100


def test_oracle_odds_separate_signal_from_noise(oracle: list[OracleHits]) -> None:
    for hits in oracle:
        assert np.isfinite(hits.odds).all()
        assert (hits.odds >= 0).all()
        # at 20k samples the Monte-Carlo density still misses many signal cells (odds 0), so
        # compare means and the hits with any density at all
        assert hits.odds[hits.signal].mean() > 100 * max(hits.odds[hits.noise].mean(), 0.01)
        assert (hits.odds[hits.signal] > 0).mean() > 0.3
        assert (hits.odds[hits.noise] > 0).mean() < 0.02


def test_oracle_medians_with_more_samples(dataset: DetectorFrames) -> None:
    """With 200k samples (still a few ms a frame) the median signal hit has odds far above the
    median noise hit, and the oracle's best operating point is close to perfect."""
    for i in range(len(dataset)):
        hits = oracle_hits(dataset, i, samples=200_000)
        signal, noise = np.median(hits.odds[hits.signal]), np.median(hits.odds[hits.noise])
        assert signal > 10.0
        assert signal > 100 * max(noise, 0.01)
        best = best_operating_point(hits.odds, hits.signal, hits.noise)
        assert best["score"] > 0.95
        assert best["threshold"] > 0.1


def test_oracle_is_deterministic(dataset: DetectorFrames, oracle: list[OracleHits]) -> None:
    again = oracle_hits(dataset, 0, samples=SAMPLES)
    np.testing.assert_array_equal(again.odds, oracle[0].odds)
    # negative indices address the same frame
    last = oracle_hits(dataset, -4, samples=SAMPLES)
    np.testing.assert_array_equal(last.odds, oracle[0].odds)


def test_oracle_with_jitter() -> None:
    ds = DetectorFrames(num_frames=2, seed=3, train=False, position_jitter=1.0, time_jitter=3.0)
    hits = oracle_hits(ds, 1, samples=200_000)
    sample = ds.arrays(1)
    lit = np.nonzero(sample["image"])
    np.testing.assert_array_equal(hits.signal, sample["signal_mask"][lit])
    np.testing.assert_array_equal(hits.noise, sample["noise_mask"][lit])
    assert np.median(hits.odds[hits.signal]) > 100 * max(np.median(hits.odds[hits.noise]), 0.01)
    assert best_operating_point(hits.odds, hits.signal, hits.noise)["score"] > 0.85


def test_oracle_rejects_training_sets() -> None:
    with pytest.raises(ValueError, match="train=False"):
        oracle_hits(DetectorFrames(num_frames=2, seed=0, train=True), 0, samples=100)


@pytest.mark.parametrize("kind", ["array", "file"])
def test_oracle_rejects_frames_without_tracks(kind: str, tmp_path) -> None:
    frames = np.zeros((2, 128, 88), dtype=np.uint16)
    frames[:, 5, 5] = 17
    if kind == "file":
        path = tmp_path / "frames.npy"
        np.save(path, frames)
        ds = DetectorFrames(path, train=False)
    else:
        ds = DetectorFrames(frames, train=False)
    with pytest.raises(ValueError, match="simulated"):
        oracle_hits(ds, 0, samples=100)


@pytest.mark.parametrize("samples", [0, -5, 2.5, True])
def test_oracle_rejects_bad_samples(samples: object, dataset: DetectorFrames) -> None:
    with pytest.raises(ValueError, match="samples"):
        oracle_hits(dataset, 0, samples=samples)  # type: ignore[arg-type]


def test_oracle_rejects_bad_index(dataset: DetectorFrames) -> None:
    with pytest.raises(IndexError):
        oracle_hits(dataset, 4, samples=100)
