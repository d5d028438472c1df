"""The oracle denoiser of simulated detector frames: each hit's odds under the true tracks.

No denoiser can beat an observer who knows every track of the frame. Given the true track
parameters, a hit at pixel ``(r, c)`` and time bin ``t`` is signal with the odds

    odds(r, c, t) = lambda_s(r, c, t) / lambda_n,
    lambda_s = k * sum_j s_j p_j(r, c, t),    lambda_n = n / (H W T),

where ``k`` and ``n`` are the frame's kept signal and noise hits, ``s_j`` the share of track
``j`` in the clean frame's photons, ``p_j`` the probability of a detected photon of track ``j``
landing in that pixel and bin (after the frame's position and time jitter), and noise is uniform
over the ``H W T`` cells. Thresholding the odds gives the best retention/removal trade-off any
denoiser can reach on these frames (the Neyman-Pearson lemma): its curve is the ceiling. A noise
hit that lands on a track's arc at the right time is indistinguishable from signal, which is
what keeps the ceiling below 1.

``p_j`` is a Monte-Carlo estimate: ``samples`` candidate photons of each track are drawn from the
simulator itself (:func:`~.detector_sim.sample_track_photons`), jittered like the kept hits, and
counted per cell, with a ``[1, 2, 1] / 4`` smoothing along rows, columns and time bins against
the sampling noise (a cell that no sample reached would give a signal hit odds 0). Only
simulated frames (``DetectorFrames(source=None, train=False)``) have tracks.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.datasets.detector_sim import (
    FRAME_SHAPE,
    MAX_TIME,
    Photons,
    degrade,
    rasterize,
    sample_track_photons,
    simulate_event,
)

__all__ = ["OracleHits", "best_operating_point", "oracle_hits"]

_KERNEL = ((-1, 0.25), (0, 0.5), (1, 0.25))  # [1, 2, 1] / 4 along rows, columns and time bins


@dataclass
class OracleHits:
    """The input hits of one frame with their oracle odds (1-D arrays of equal length):
    ``odds`` float64, ``signal`` and ``noise`` bool (``noise == ~signal``).

    ``signal`` marks the pixels of a kept signal hit, as :mod:`smp_imbalance.metrics` counts
    true hits (``target > 0``): also a signal pixel overwritten by a later noise hit, whose input
    time is the noise's (the oracle scores the time it sees, so such a hit is usually lost).
    ``noise`` marks the other hits."""

    odds: np.ndarray
    signal: np.ndarray
    noise: np.ndarray


def oracle_hits(dataset: DetectorFrames, index: int, samples: int = 200_000) -> OracleHits:
    """The oracle odds of every input hit of ``dataset[index]`` (see the module docstring).

    Args:
        dataset: a simulated validation set (``source=None``, ``train=False``), whose frames
            and degradations are fixed per index.
        index: the frame.
        samples: candidate photons drawn per track for the density (about a third are
            detected); the estimate's noise falls as ``1 / sqrt(samples)``.
    """
    if not dataset.simulated or dataset.train:
        raise ValueError(
            "oracle_hits needs a simulated validation set (DetectorFrames(source=None, "
            f"train=False)): {dataset.where(index)} has no fixed tracks and degradation"
        )
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    index = dataset._check_index(index)
    rng = np.random.default_rng([dataset.seed, index, 0])  # the clean frame's generator
    photons, tracks = simulate_event(
        rng, dataset.tracks, dataset.photons_per_track, dataset.geometry
    )
    height, width = FRAME_SHAPE
    degraded = degrade(
        rasterize(photons.row, photons.col, photons.time),
        dataset._degradation_rng(index),
        dataset.signal_hits,
        dataset.noise_hits,
        dataset.position_jitter,
        dataset.time_jitter,
    )
    row, col = np.nonzero(degraded.noisy)
    time = degraded.noisy[row, col]
    share = np.bincount(photons.track, minlength=len(tracks)) / max(photons.track.size, 1)

    sampled = sample_track_photons(
        np.random.default_rng([dataset.seed, index, 3]), tracks, samples, dataset.geometry
    )
    s_row, s_col, s_time = _jitter(
        sampled, dataset, np.random.default_rng([dataset.seed, index, 4])
    )
    cells = MAX_TIME + 2  # a time axis with room for the smoothing's +-1
    query = (row * width + col) * cells + time
    lam_signal = np.zeros(row.size)
    for j in range(len(tracks)):
        own = sampled.track == j
        if not own.any():
            continue
        keys, counts = np.unique(
            (s_row[own] * width + s_col[own]) * cells + s_time[own], return_counts=True
        )
        density = np.zeros(row.size)
        for (dr, wr), (dc, wc), (dt, wt) in itertools.product(_KERNEL, repeat=3):
            inside = (row + dr >= 0) & (row + dr < height) & (col + dc >= 0) & (col + dc < width)
            key = query + (dr * width + dc) * cells + dt
            at = np.minimum(np.searchsorted(keys, key), keys.size - 1)
            density += wr * wc * wt * np.where(inside & (keys[at] == key), counts[at], 0)
        lam_signal += share[j] * density / own.sum()
    lam_signal *= degraded.num_signal
    lam_noise = max(degraded.num_noise, 1) / (height * width * MAX_TIME)
    true_hit = degraded.kept[row, col] > 0  # as the metrics count: the pixel holds signal
    return OracleHits(lam_signal / lam_noise, true_hit, ~true_hit)


def _jitter(
    sampled: Photons, dataset: DetectorFrames, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sampled photons jittered like :func:`~.detector_sim.degrade` jitters kept hits."""
    row, col, time = sampled.row, sampled.col, sampled.time
    if dataset.position_jitter > 0:
        shift = np.rint(rng.normal(0, dataset.position_jitter, (2, row.size))).astype(np.int64)
        row = np.clip(row + shift[0], 0, FRAME_SHAPE[0] - 1)
        col = np.clip(col + shift[1], 0, FRAME_SHAPE[1] - 1)
    if dataset.time_jitter > 0:
        shift = np.rint(rng.normal(0, dataset.time_jitter, time.size)).astype(np.int64)
        time = np.clip(time + shift, 1, MAX_TIME)
    return row, col, time


def best_operating_point(
    odds: np.ndarray, signal: np.ndarray, noise: np.ndarray
) -> dict[str, float]:
    """The threshold on ``odds`` with the best score (harmonic mean of signal retention and
    noise removal), pooled over all hits given: ``{"threshold", "signal_retention",
    "noise_removal", "score"}``. Every distinct odds value is tried (a hit is kept where
    ``odds >= threshold``)."""
    order = np.argsort(-odds, kind="stable")
    odds, signal, noise = odds[order], signal[order], noise[order]
    kept_signal = np.cumsum(signal)  # keeping the first i + 1 hits
    kept_noise = np.cumsum(noise)
    last = np.r_[odds[1:] != odds[:-1], True]  # cut only between distinct values
    retention = kept_signal / max(signal.sum(), 1)
    removal = 1.0 - kept_noise / max(noise.sum(), 1)
    score = np.where(last, 2 * retention * removal / np.maximum(retention + removal, 1e-12), -1)
    best = int(np.argmax(score))
    return {
        "threshold": float(odds[best]),
        "signal_retention": float(retention[best]),
        "noise_removal": float(removal[best]),
        "score": float(score[best]),
    }
