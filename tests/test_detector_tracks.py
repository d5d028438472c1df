"""detector_sim's track-level API (draw_tracks, sample_track_photons, simulate_event) and the
refactor of simulate_photons on top of it: the same photons as before for a given generator.

(A file of its own rather than inside test_detector_oracle.py: these are simulator tests,
independent of the oracle.)
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from smp_imbalance.datasets.detector_sim import (
    FRAME_SHAPE,
    MAX_TIME,
    Photons,
    TorchGeometry,
    Tracks,
    draw_tracks,
    rasterize,
    sample_track_photons,
    simulate_event,
    simulate_frame,
    simulate_photons,
)

H, W = FRAME_SHAPE

# Photons of simulate_photons before the refactor (commit of detector_sim.py before Tracks):
# (seed, kwargs) -> (count, per-track counts, sum row, sum col, sum time, sha256[:16] of the
# int64 row|col|time|track, next rng.integers(0, 2**62) after the call)
GOLDEN = [
    (7, {}, (313, [98, 101, 114], 21109, 11329, 122312, "3537522bbc1917b9", 3625243971452680822)),
    (
        0,
        {"tracks": (3, 3), "photons_per_track": (200, 200)},
        (600, [200, 200, 200], 36448, 27550, 256734, "1d9143434ad23f57", 554567839475601351),
    ),
    (
        123,
        {"tracks": (2, 4), "photons_per_track": (10, 30)},
        (46, [24, 22], 2137, 2404, 18506, "31ba143fd83f43c2", 1435832283702900859),
    ),
]


def _digest(p: Photons) -> str:
    ints = np.concatenate([p.row, p.col, p.time, p.track]).astype("<i8")
    return hashlib.sha256(ints.tobytes()).hexdigest()[:16]


@pytest.mark.parametrize(("seed", "kwargs", "expected"), GOLDEN)
def test_simulate_photons_unchanged_by_the_refactor(
    seed: int, kwargs: dict, expected: tuple
) -> None:
    rng = np.random.default_rng(seed)
    p = simulate_photons(rng, **kwargs)
    count, per_track, rows, cols, times, digest, after = expected
    assert p.row.size == count
    assert np.bincount(p.track).tolist() == per_track
    assert (int(p.row.sum()), int(p.col.sum()), int(p.time.sum())) == (rows, cols, times)
    assert _digest(p) == digest
    # the same number of draws: what follows in the generator is unchanged too
    assert int(rng.integers(0, 2**62)) == after


@pytest.mark.parametrize("seed", [7, 8, 1000])
def test_simulate_event_photons_equal_simulate_photons(seed: int) -> None:
    a = simulate_photons(np.random.default_rng(seed))
    b, tracks = simulate_event(np.random.default_rng(seed))
    for name in ("row", "col", "time", "track", "x"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert isinstance(tracks, Tracks)
    # every track delivers the photons it was drawn to deliver
    np.testing.assert_array_equal(np.bincount(b.track, minlength=len(tracks)), tracks.photons)
    # the tracks are the first draws of the generator
    drawn = draw_tracks(np.random.default_rng(seed))
    np.testing.assert_array_equal(drawn.params, tracks.params)
    np.testing.assert_array_equal(drawn.photons, tracks.photons)
    np.testing.assert_array_equal(
        rasterize(b.row, b.col, b.time), simulate_frame(np.random.default_rng(seed))
    )


@pytest.mark.parametrize(
    ("tracks", "per_track", "geometry"),
    [
        ((1, 3), (60, 120), TorchGeometry()),
        ((4, 4), (5, 5), TorchGeometry()),
        (
            (2, 6),
            (0, 10),
            TorchGeometry(
                plate_width=0.4,
                emission_distance=(1.0, 1.2),
                max_track_tilt=0.1,
                track_time=(3.0, 4.0),
            ),
        ),
    ],
)
def test_draw_tracks_ranges(
    tracks: tuple[int, int], per_track: tuple[int, int], geometry: TorchGeometry
) -> None:
    g = geometry
    for seed in range(20):
        t = draw_tracks(np.random.default_rng(seed), tracks, per_track, g)
        assert tracks[0] <= len(t) <= tracks[1]
        assert t.params.shape == (len(t), 12) and t.params.dtype == np.float64
        assert t.photons.dtype == np.int64
        assert ((t.photons >= per_track[0]) & (t.photons <= per_track[1])).all()
        u, e1, e2 = t.params[:, 0:3], t.params[:, 3:6], t.params[:, 6:9]
        x0, dist, t0 = t.params[:, 9:12].T
        basis = np.stack([u, e1, e2], 1)  # (T, 3, 3): orthonormal rows
        np.testing.assert_allclose(
            basis @ basis.transpose(0, 2, 1), np.broadcast_to(np.eye(3), basis.shape), atol=1e-12
        )
        # tilt from the plate normal (z) at most max_track_tilt, pointing away from the beam
        assert (u[:, 2] >= np.cos(g.max_track_tilt) - 1e-12).all()
        assert (u[:, 1] >= 0).all()
        assert ((x0 >= 0) & (x0 <= g.plate_width)).all()
        assert ((dist >= g.emission_distance[0]) & (dist <= g.emission_distance[1])).all()
        assert ((t0 >= g.track_time[0]) & (t0 <= g.track_time[1])).all()


def test_draw_tracks_rejects_bad_ranges() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        draw_tracks(rng, tracks=(3, 1))
    with pytest.raises(ValueError):
        draw_tracks(rng, photons_per_track=(-1, 5))
    with pytest.raises(TypeError):
        draw_tracks(rng, tracks=(1.0, 2.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("candidates", [1, 500, 5000])
def test_sample_track_photons_in_range(candidates: int) -> None:
    g = TorchGeometry()
    tracks = draw_tracks(np.random.default_rng(3), (3, 3), (60, 120), g)
    p = sample_track_photons(np.random.default_rng(4), tracks, candidates, g)
    assert p.row.dtype == p.col.dtype == p.time.dtype == p.track.dtype == np.int64
    assert p.row.size == p.col.size == p.time.size == p.track.size == p.x.size
    assert p.row.size <= 3 * candidates
    assert ((p.row >= 0) & (p.row < H) & (p.col >= 0) & (p.col < W)).all()
    assert ((p.time >= 1) & (p.time <= MAX_TIME)).all()
    assert ((p.track >= 0) & (p.track < len(tracks))).all()
    assert ((p.x >= 0) & (p.x <= g.plate_width)).all()
    assert np.bincount(p.track, minlength=3).max() <= candidates
    if candidates >= 500:  # each track has a sizeable acceptance
        counts = np.bincount(p.track, minlength=3)
        assert (counts > 0).all()
        assert np.all(np.diff(p.track) >= 0)  # grouped by track


def test_sampled_photons_follow_the_event_photons() -> None:
    """The samples of a track land where the event's photons of that track land."""
    photons, tracks = simulate_event(np.random.default_rng(12), (2, 2), (120, 120))
    sampled = sample_track_photons(np.random.default_rng(13), tracks, 20_000)
    for j in range(len(tracks)):
        cells = set(
            zip(
                sampled.row[sampled.track == j].tolist(),
                sampled.col[sampled.track == j].tolist(),
                strict=True,
            )
        )
        own = list(
            zip(
                photons.row[photons.track == j].tolist(),
                photons.col[photons.track == j].tolist(),
                strict=True,
            )
        )
        assert np.mean([c in cells for c in own]) > 0.9
        # and the times agree on average
        assert (
            abs(
                np.median(sampled.time[sampled.track == j])
                - np.median(photons.time[photons.track == j])
            )
            < 30
        )


def test_sample_track_photons_deterministic() -> None:
    tracks = draw_tracks(np.random.default_rng(0))
    a = sample_track_photons(np.random.default_rng(1), tracks, 100)
    b = sample_track_photons(np.random.default_rng(1), tracks, 100)
    for name in ("row", "col", "time", "track", "x"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
