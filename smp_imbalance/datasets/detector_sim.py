"""Simulated LHCb-TORCH-like detector frames, their degradation, and time normalisation (numpy).

A frame is a (H, W) = (128, 88) integer image of the TORCH photon-detector plane: the pixel value
is the photon's time-of-arrival bin, 1..1000, and 0 means "no hit". No real frames are public, so
this module simulates clean frames from the physics, then degrades them the way the denoising
task sees them (keep a few signal hits, add uniform noise hits).

Geometry of the simulator (all lengths in metres, times in ns)
----------------------------------------------------------------
TORCH is a quartz (fused silica) plate: ``x`` runs across its width (``0 <= x < w``), ``y`` along
its length up to a focusing block at the top edge, ``z`` across its thickness. A charged track
crosses the plate at ``(x0, y = 0)``, a distance ``L`` below the focusing block, with direction
``u`` tilted from the plate normal by a polar angle ``<= max_track_tilt``; the module sits
above the beam line and tracks come from the interaction point, so the tilt points away from the
beam (``u_y >= 0``, azimuth uniform in ``[0, pi]``). The track emits Cherenkov
photons on a cone around ``u`` at ``cos(theta_c) = 1 / n`` (``beta = 1``); ``n`` is drawn per
photon from the refractive-index range of the detected wavelengths (chromatic dispersion widens
the bands). A photon direction is ``d = cos(theta_c) u + sin(theta_c) (cos(phi) e1 + sin(phi) e2)``
with ``phi`` uniform and ``(u, e1, e2)`` orthonormal.

* Trapping: a photon stays in the plate by total internal reflection at a face of normal ``k``
  when ``1 - d_k^2 > 1 / n^2``; we require it at the large faces (``z``) and the side faces (``x``).
  Photons going down (``d_y <= 0``) are taken as absorbed at the bottom edge.
* Propagation: reflections flip signs but keep ``|d_x|, |d_y|, |d_z|``, so the path length up to
  the focusing block is ``s = L / d_y``. Unfolded, the photon reaches ``x_u = x0 + s d_x``; each
  reflection off a side face folds ``x`` back: ``x = w - |w - (x_u mod 2w)|`` (a triangle wave).
* Time of arrival: ``t = t0 + s n_g / c`` (group index ``n_g = n + group_index_offset``), plus a
  Gaussian time resolution; binned as ``bin = 1 + floor(t / time_bin)``, kept if ``<= 1000``.
  For one detector row (a fixed angle, see below) ``a = d_x / d_y`` varies and ``b = d_z / d_y``
  is fixed, so ``(c (t - t0) / n_g)^2 = L^2 (1 + b^2) + (x_u - x0)^2``: a hyperbola in
  ``(x_u, t)``, folded at the side faces into the zig-zag of hyperbola-like arcs TORCH sees.
* Focusing: the focusing block maps the photon's angle in the ``(y, z)`` plane,
  ``theta = atan(|d_z| / d_y)``, linearly onto the 128 detector rows over ``angle_range``
  (photons outside it miss the detector); the 88 columns sample ``x`` across the plate width.

Defaults (:class:`TorchGeometry`): a 0.66 m wide plate, ``L`` in 0.3..2.5 m, ``n`` in 1.46..1.49,
tilts up to 0.3 rad, rows over 0.6..0.9 rad, 1000 bins of 50 ps (a 50 ns window), 70 ps time
resolution; :func:`simulate_frame` draws 1..3 tracks of 60..120 detected photons each, so a
clean frame has about 60..350 lit pixels (98..99.5 % zeros).

Simplifications: no focusing-block path (a constant time offset per row), no photon-detection
efficiency curve, straight tracks, no bottom-edge reflections, ``beta = 1``. Photons landing on an
already lit pixel follow the frame's collision rule (the later time wins, see :func:`rasterize`).

Degradation (:func:`degrade`)
-----------------------------
From a clean frame with ``M`` hits: keep ``k = min(k_drawn, M)`` hits chosen uniformly without
replacement, optionally jitter their position (Gaussian, ``position_jitter`` pixels, rounded and
clipped to the frame) and time (Gaussian, ``time_jitter`` bins, rounded and clipped to 1..1000),
then add ``n`` noise hits at uniform pixels (with replacement) with uniform times 1..1000. Where
two hits share a pixel the later time wins (ties are one value, attributed to the signal).

Normalisation (:func:`normalize_times`, :func:`denormalize_times`)
-------------------------------------------------------------------
``t_norm = gap + (1 - gap) (t - 1) / (max_time - 1)`` for ``t >= 1`` and ``0`` for no hit, so the
earliest hit sits at ``gap`` and "no hit" stays distinguishable; the inverse rounds to the nearest
bin and maps everything below ``gap / 2`` to "no hit".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FRAME_SHAPE",
    "MAX_TIME",
    "Degraded",
    "Photons",
    "TorchGeometry",
    "Tracks",
    "check_range",
    "combine_hits",
    "degrade",
    "denormalize_times",
    "draw_tracks",
    "normalize_times",
    "rasterize",
    "sample_track_photons",
    "simulate_event",
    "simulate_frame",
    "simulate_photons",
]

FRAME_SHAPE: tuple[int, int] = (128, 88)
"""(H, W) = (detector rows ~ photon angle, columns ~ x across the plate)."""
MAX_TIME: int = 1000
"""Number of time-of-arrival bins; hits take values 1..MAX_TIME, 0 is "no hit"."""

_C_M_PER_NS = 0.299792458


@dataclass(frozen=True)
class TorchGeometry:
    """Parameters of the simulated TORCH module (lengths in m, times in ns, angles in rad).

    Attributes:
        plate_width: quartz plate width, mapped onto the 88 columns.
        emission_distance: range of ``L``, the distance from the track crossing to the focusing
            block, drawn uniformly per track.
        refractive_index: range of the phase index over the detected wavelengths, drawn
            uniformly per photon (chromatic dispersion).
        group_index_offset: ``n_g - n`` (about 0.03 for fused silica near 400 nm).
        max_track_tilt: largest polar angle of a track from the plate normal.
        angle_range: photon angles ``atan(|d_z| / d_y)`` mapped onto rows 0..127.
        time_bin: width of one time bin (1000 bins of 50 ps = a 50 ns window).
        time_resolution: Gaussian sigma of the per-photon time measurement.
        track_time: range of the track's arrival time ``t0`` at the plate, drawn per track.
    """

    plate_width: float = 0.66
    emission_distance: tuple[float, float] = (0.3, 2.5)
    refractive_index: tuple[float, float] = (1.46, 1.49)
    group_index_offset: float = 0.03
    max_track_tilt: float = 0.3
    angle_range: tuple[float, float] = (0.6, 0.9)
    time_bin: float = 0.05
    time_resolution: float = 0.07
    track_time: tuple[float, float] = (0.0, 15.0)


@dataclass
class Photons:
    """Detected photons of one simulated frame (1-D arrays of equal length).

    ``row``/``col``: int64 pixel indices; ``time``: int64 bins 1..1000; ``track``: int64 index
    of the emitting track; ``x``: float64 folded position across the plate (m), before binning.
    """

    row: np.ndarray
    col: np.ndarray
    time: np.ndarray
    track: np.ndarray
    x: np.ndarray


@dataclass
class Degraded:
    """A degraded frame and what it is made of; all frames (H, W), masks bool.

    Attributes:
        noisy: int64 frame the denoiser sees: ``max(kept, noise)`` pixel-wise.
        kept: int64 frame of the kept (and jittered) signal hits only.
        signal_mask: pixels whose ``noisy`` value is a kept signal hit's time
            (``kept > 0 and kept >= noise``).
        noise_mask: pixels whose ``noisy`` value is a noise hit's time (``noise > kept``); a
            signal hit overwritten by later noise is *not* in ``signal_mask``. The two masks are
            disjoint and their union is ``noisy > 0``.
        num_signal: number of signal hits kept (before collisions).
        num_noise: number of noise hits added (before collisions).
    """

    noisy: np.ndarray
    kept: np.ndarray
    signal_mask: np.ndarray
    noise_mask: np.ndarray
    num_signal: int
    num_noise: int


def check_range(value: int | tuple[int, int], name: str, low: int = 0) -> tuple[int, int]:
    """``value`` as an inclusive integer range ``(lo, hi)`` with ``low <= lo <= hi``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        pair: tuple[Any, ...] = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise TypeError(f"{name} must be an int or a (low, high) pair of ints, got {value!r}")
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must hold ints, got {value!r}")
    lo, hi = int(pair[0]), int(pair[1])
    if not low <= lo <= hi:
        raise ValueError(f"{name} must satisfy {low} <= low <= high, got {value!r}")
    return lo, hi


def rasterize(
    row: np.ndarray, col: np.ndarray, time: np.ndarray, shape: tuple[int, int] = FRAME_SHAPE
) -> np.ndarray:
    """Hits -> an int64 frame of ``shape``; where several hits share a pixel the later time wins.

    Indices must lie inside ``shape`` and times be >= 1 (0 would be "no hit").
    """
    frame = np.zeros(shape[0] * shape[1], dtype=np.int64)
    np.maximum.at(frame, np.asarray(row) * shape[1] + np.asarray(col), np.asarray(time))
    return frame.reshape(shape)


def _candidate_photons(
    rng: np.random.Generator, geometry: TorchGeometry, params: np.ndarray, track: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Draw one candidate photon per row of ``params``; return the detected ones as
    ``(track, row, col, time, x)``.

    ``params`` (m, 12) holds, per candidate, its track's direction ``u``, the unit vectors
    ``e1, e2`` completing it to an orthonormal basis (x, y, z components each), then ``x0``,
    ``L`` and ``t0``; ``track`` (m,) is the track index of each candidate.
    """
    g = geometry
    m = track.size
    n_lo, n_hi = g.refractive_index
    draws = rng.random((2, m))
    n = n_lo + (n_hi - n_lo) * draws[0]
    phi = (2.0 * np.pi) * draws[1]
    cos_c = 1.0 / n
    sin2_c = 1.0 - cos_c * cos_c
    sin_c = np.sqrt(sin2_c)
    d = (
        cos_c[:, None] * params[:, 0:3]
        + (sin_c * np.cos(phi))[:, None] * params[:, 3:6]
        + (sin_c * np.sin(phi))[:, None] * params[:, 6:9]
    )
    d2 = d * d
    # total internal reflection at the side (x) and large (z) faces, travelling up the plate (y)
    keep = np.flatnonzero((d[:, 1] > 0) & (d2[:, 0] < sin2_c) & (d2[:, 2] < sin2_c))
    d, n, params, track = d[keep], n[keep], params[keep], track[keep]
    dx, dy, dz = d.T
    x0, dist, t0 = params[:, 9:12].T
    s = dist / dy
    w = g.plate_width
    x = w - np.abs(w - np.mod(x0 + s * dx, 2.0 * w))
    t = t0 + s * (n + g.group_index_offset) / _C_M_PER_NS
    t += g.time_resolution * rng.standard_normal(t.size)
    time = 1 + np.floor(t / g.time_bin).astype(np.int64)
    lo, hi = g.angle_range
    row = np.floor((np.arctan2(np.abs(dz), dy) - lo) * (FRAME_SHAPE[0] / (hi - lo)))
    col = np.minimum(np.floor(x * (FRAME_SHAPE[1] / w)), FRAME_SHAPE[1] - 1)
    keep = np.flatnonzero((row >= 0) & (row < FRAME_SHAPE[0]) & (time >= 1) & (time <= MAX_TIME))
    return track[keep], row[keep].astype(np.int64), col[keep].astype(np.int64), time[keep], x[keep]


@dataclass(frozen=True)
class Tracks:
    """The charged tracks of one simulated frame (``T`` tracks).

    ``params`` (T, 12) float64: per track its direction ``u``, then ``e1``, ``e2`` completing it
    to an orthonormal basis (x, y, z components each), then ``x0``, ``L`` and ``t0`` (see the
    module docstring); ``photons`` (T,) int64: the detected photons wanted from each track.
    """

    params: np.ndarray
    photons: np.ndarray

    def __len__(self) -> int:
        return len(self.photons)


def draw_tracks(
    rng: np.random.Generator,
    tracks: tuple[int, int] = (1, 3),
    photons_per_track: tuple[int, int] = (60, 120),
    geometry: TorchGeometry | None = None,
) -> Tracks:
    """Draw the tracks of one frame: their number and photon counts uniformly from the inclusive
    ranges, then ``x0``, ``L``, ``t0``, the tilt and the azimuth uniformly from the geometry's."""
    g = geometry or TorchGeometry()
    tracks = check_range(tracks, "tracks")
    photons_per_track = check_range(photons_per_track, "photons_per_track")
    num_tracks = int(rng.integers(tracks[0], tracks[1] + 1))
    wanted = rng.integers(photons_per_track[0], photons_per_track[1] + 1, num_tracks)
    lo, hi = np.array(
        [
            (0.0, g.plate_width),  # x0
            g.emission_distance,  # L
            g.track_time,  # t0
            (0.0, g.max_track_tilt),  # polar angle from the plate normal
            (0.0, np.pi),  # azimuth: the in-plane direction points up (u_y >= 0)
        ],
        dtype=np.float64,
    ).T
    x0, dist, t0, tilt, azimuth = lo[:, None] + (hi - lo)[:, None] * rng.random((5, num_tracks))
    ct, st, ca, sa = np.cos(tilt), np.sin(tilt), np.cos(azimuth), np.sin(azimuth)
    # per track: u (the direction), e1 = du/dtilt, e2 = u x e1, then x0, L, t0
    params = np.stack(
        [st * ca, st * sa, ct, ct * ca, ct * sa, -st, -sa, ca, 0.0 * ct, x0, dist, t0], axis=1
    )
    return Tracks(params, wanted.astype(np.int64))


def sample_track_photons(
    rng: np.random.Generator, tracks: Tracks, candidates: int, geometry: TorchGeometry | None = None
) -> Photons:
    """``candidates`` candidate photons from each track, of which the detected ones are returned
    (their number varies with each track's acceptance): samples of each track's photon
    distribution, e.g. for a Monte-Carlo density (see :mod:`.detector_oracle`)."""
    g = geometry or TorchGeometry()
    track = np.repeat(np.arange(len(tracks)), candidates)
    track, row, col, time, x = _candidate_photons(
        rng, g, np.repeat(tracks.params, candidates, axis=0), track
    )
    return Photons(row, col, time, track, x)


def simulate_photons(
    rng: np.random.Generator,
    tracks: tuple[int, int] = (1, 3),
    photons_per_track: tuple[int, int] = (60, 120),
    geometry: TorchGeometry | None = None,
    max_rounds: int = 10,
) -> Photons:
    """Detected Cherenkov photons of one frame (see the module docstring for the geometry)."""
    return simulate_event(rng, tracks, photons_per_track, geometry, max_rounds)[0]


def simulate_event(
    rng: np.random.Generator,
    tracks: tuple[int, int] = (1, 3),
    photons_per_track: tuple[int, int] = (60, 120),
    geometry: TorchGeometry | None = None,
    max_rounds: int = 10,
) -> tuple[Photons, Tracks]:
    """The detected photons of one frame and the tracks that emitted them.

    The number of tracks and each track's number of detected photons are drawn uniformly from
    the inclusive ranges (:func:`draw_tracks`). Candidates are drawn in rounds and filtered by
    trapping, detector acceptance and the time window; after ``max_rounds`` (only reachable with
    a geometry that detects almost nothing) a track keeps the photons found so far.
    """
    g = geometry or TorchGeometry()
    drawn = draw_tracks(rng, tracks, photons_per_track, g)
    params, num_tracks = drawn.params, len(drawn)
    parts: list[tuple[np.ndarray, ...]] = []
    missing = drawn.photons.copy()
    acceptance = np.full(num_tracks, 0.2)  # a first guess, then the fraction measured per track
    for _ in range(max_rounds):
        if not missing.any():
            break
        draws = np.where(missing > 0, np.ceil(1.2 * missing / acceptance).astype(np.int64) + 8, 0)
        track, row, col, time, x = _candidate_photons(
            rng, g, np.repeat(params, draws, axis=0), np.repeat(np.arange(num_tracks), draws)
        )
        found = np.bincount(track, minlength=num_tracks)
        acceptance = np.maximum(np.where(draws > 0, found / np.maximum(draws, 1), 1.0), 0.05)
        # keep the first `missing[i]` accepted photons of each track i (track is sorted)
        rank = np.arange(track.size) - np.searchsorted(track, track)
        keep = rank < missing[track]
        parts.append((row[keep], col[keep], time[keep], track[keep], x[keep]))
        missing -= np.minimum(found, missing)
    if len(parts) == 1:
        return Photons(*parts[0]), drawn
    if not parts:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return Photons(empty_i, empty_i, empty_i, empty_i, empty_f), drawn
    return Photons(*(np.concatenate(a) for a in zip(*parts, strict=True))), drawn


def simulate_frame(
    rng: np.random.Generator,
    tracks: tuple[int, int] = (1, 3),
    photons_per_track: tuple[int, int] = (60, 120),
    geometry: TorchGeometry | None = None,
) -> np.ndarray:
    """A clean (128, 88) int64 frame of time bins (0 = no hit) from :func:`simulate_photons`."""
    p = simulate_photons(rng, tracks, photons_per_track, geometry)
    return rasterize(p.row, p.col, p.time)


def degrade(
    clean: np.ndarray,
    rng: np.random.Generator,
    signal_hits: tuple[int, int] = (25, 35),
    noise_hits: tuple[int, int] = (180, 220),
    position_jitter: float = 0.0,
    time_jitter: float = 0.0,
) -> Degraded:
    """Keep ``k`` random hits of ``clean`` (H, W), jitter them, add ``n`` uniform noise hits.

    ``k`` and ``n`` are drawn uniformly from the inclusive ranges ``signal_hits`` and
    ``noise_hits``; ``k`` is capped at the clean frame's hit count. See :class:`Degraded` for the
    outputs and the module docstring for the rules.
    """
    if position_jitter < 0 or time_jitter < 0:
        raise ValueError(
            f"jitter must be >= 0, got position_jitter={position_jitter}, time_jitter={time_jitter}"
        )
    height, width = clean.shape
    flat = clean.reshape(-1)
    hits = np.flatnonzero(flat)
    k = min(int(rng.integers(signal_hits[0], signal_hits[1] + 1)), hits.size)
    chosen = hits[rng.permutation(hits.size)[:k]]
    row, col = np.divmod(chosen, width)
    time = flat[chosen].astype(np.int64)
    if position_jitter > 0:
        row = np.clip(
            row + np.rint(rng.normal(0, position_jitter, k)).astype(np.int64), 0, height - 1
        )
        col = np.clip(
            col + np.rint(rng.normal(0, position_jitter, k)).astype(np.int64), 0, width - 1
        )
    if time_jitter > 0:
        time = np.clip(time + np.rint(rng.normal(0, time_jitter, k)).astype(np.int64), 1, MAX_TIME)
    kept = rasterize(row, col, time, (height, width))

    n = int(rng.integers(noise_hits[0], noise_hits[1] + 1))
    pos = rng.integers(0, height * width, n)
    noise = rasterize(pos // width, pos % width, rng.integers(1, MAX_TIME + 1, n), (height, width))
    noisy, signal_mask, noise_mask = combine_hits(kept, noise)
    return Degraded(noisy, kept, signal_mask, noise_mask, num_signal=k, num_noise=n)


def combine_hits(kept: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlay a signal frame and a noise frame (same shape, 0 = no hit); the later time wins.

    Returns ``(noisy, signal_mask, noise_mask)``: ``noisy = max(kept, noise)``;
    ``signal_mask = kept > 0 & kept >= noise`` (a tie is one value, counted as signal);
    ``noise_mask = noise > kept``. The masks are disjoint and their union is ``noisy > 0``.
    """
    return np.maximum(kept, noise), (kept > 0) & (kept >= noise), noise > kept


def _check_gap(gap: float, max_time: int) -> None:
    if not 0.0 < gap < 1.0:
        raise ValueError(f"gap must be in (0, 1), got {gap}")
    if max_time < 2:
        raise ValueError(f"max_time must be >= 2, got {max_time}")


def normalize_times(times: Any, gap: float = 0.1, max_time: int = MAX_TIME) -> Any:
    """Time bins (0 = no hit, 1..max_time) -> float32 in {0} U [gap, 1].

    ``t_norm = gap + (1 - gap) (t - 1) / (max_time - 1)`` for ``t >= 1``, ``0`` for ``t = 0``.
    Takes a numpy array (returns float32 numpy) or a torch tensor (returns float32 tensor).
    """
    _check_gap(gap, max_time)
    scale = (1.0 - gap) / (max_time - 1)
    if _is_tensor(times):
        t = times.double()  # the same float64 arithmetic as numpy, then float32
        return ((gap + (t - 1.0) * scale) * (t > 0)).float()
    t = np.asarray(times, dtype=np.float64)
    return np.where(t > 0, gap + (t - 1.0) * scale, 0.0).astype(np.float32)


def denormalize_times(values: Any, gap: float = 0.1, max_time: int = MAX_TIME) -> Any:
    """Exact inverse of :func:`normalize_times` on its image; int64 time bins.

    Values below ``gap / 2`` are "no hit" (0); the others map back through
    ``t = 1 + (v - gap) (max_time - 1) / (1 - gap)``, rounded and clipped to 1..max_time, so a
    network output can be decoded too. Numpy in, numpy out; tensor in, tensor out.
    """
    _check_gap(gap, max_time)
    scale = (max_time - 1) / (1.0 - gap)
    if _is_tensor(values):
        import torch

        v = values.double()
        t = torch.clamp(torch.round(1.0 + (v - gap) * scale), 1, max_time)
        return torch.where(v >= gap / 2, t, torch.zeros_like(t)).long()
    v = np.asarray(values, dtype=np.float64)
    t = np.clip(np.rint(1.0 + (v - gap) * scale), 1, max_time)
    return np.where(v >= gap / 2, t, 0).astype(np.int64)


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")
