"""Throughput of :class:`smp_imbalance.datasets.DetectorFrames`, in frames per second.

Contenders (one frame per call unless said, interleaved medians, each call on a new index):

* ``simulate`` -- one clean frame: :func:`simulate_frame` with its per-index generator;
* ``degrade`` -- :func:`degrade` of a fixed clean frame (keep ~30 hits, add ~200 noise hits);
* ``sample, simulated`` -- ``DetectorFrames(train=True)[i]``: simulate + degrade + normalise +
  tensors (no transform);
* ``sample, simulated + hflip`` -- the same with the default training recipe;
* ``read, mmapped .npy`` -- ``clean_frame(i)`` of a memory-mapped (N, 128, 88) uint16 stack
  (random indices; the file is in the page cache after the warm-up, as in a training epoch);
* ``sample, mmapped .npy`` -- read + degrade + normalise + tensors;
* ``sample, in-memory`` -- the same from an array in memory;
* ``DataLoader epoch, N workers`` (per frame) -- one pass over 256 simulated frames in batches
  of 32, worker start-up included.

    python benchmarks/speed_detector.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import Timing, machine_line, time_interleaved

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.datasets.detector_sim import degrade, simulate_frame
from smp_imbalance.datasets.transforms.detector import train_transforms


def _table(timings: list[Timing], per_call: dict[str, int], baseline: str) -> str:
    per_frame = {t.label: t.median_s / per_call.get(t.label, 1) for t in timings}
    lines = [
        "| contender | median us / frame | frames / s | x " + baseline + " |",
        "|---|---:|---:|---:|",
    ]
    for t in timings:
        s = per_frame[t.label]
        lines.append(
            f"| {t.label} | {s * 1e6:.0f} | {1 / s:,.0f} | {s / per_frame[baseline]:.2f} |"
        )
    return "\n".join(lines)


def _load() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run(quick: bool = False) -> str:
    """Time the contenders; return a markdown section."""
    torch.set_num_threads(1)
    load_before = _load()
    frames = 256 if quick else 2000
    repeats = 5 if quick else 15
    rng = np.random.default_rng(0)
    stack = np.stack([simulate_frame(np.random.default_rng([0, i, 0])) for i in range(frames)])
    stack = stack.astype(np.uint16)
    clean = stack[0].astype(np.int64)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:  # mmap on Windows
        path = Path(tmp) / "frames.npy"
        np.save(path, stack)
        simulated = DetectorFrames(num_frames=10**6, train=True)
        flipped = DetectorFrames(num_frames=10**6, train=True, transform=train_transforms())
        mmapped = DetectorFrames(path, train=True)
        in_memory = DetectorFrames(stack, train=True)
        counter = itertools.count()

        def random_index() -> int:
            return int(rng.integers(frames))

        loader_frames, batch = (64, 16) if quick else (256, 32)
        small = DetectorFrames(num_frames=loader_frames, train=True)

        def epoch(workers: int) -> None:
            for _ in DataLoader(small, batch_size=batch, num_workers=workers):
                pass

        contenders = [
            ("simulate", lambda: simulate_frame(np.random.default_rng([0, next(counter), 0]))),
            ("degrade", lambda: degrade(clean, rng)),
            ("sample, simulated", lambda: simulated[next(counter)]),
            ("sample, simulated + hflip", lambda: flipped[next(counter)]),
            ("read, mmapped .npy", lambda: mmapped.clean_frame(random_index())),
            ("sample, mmapped .npy", lambda: mmapped[random_index()]),
            ("sample, in-memory", lambda: in_memory[random_index()]),
        ]
        timings = time_interleaved(contenders, repeats=repeats, warmup=3, min_time_s=0.05)
        loaders = [(f"DataLoader epoch, {w} workers", lambda w=w: epoch(w)) for w in (0, 2)]
        timings += time_interleaved(loaders, repeats=2 if quick else 5, warmup=1)
        per_call = {label: loader_frames for label, _ in loaders}
    return "\n".join(
        [
            "### DetectorFrames throughput",
            "",
            f"{machine_line()}; numpy {np.__version__}; stack of {frames} frames "
            f"({stack.nbytes / 2**20:.0f} MiB uint16); default degradation (k in 25..35, "
            f"n in 180..220); 1 torch thread; load average {load_before:.1f} before and "
            f"{_load():.1f} after on {os.cpu_count()} cores (a shared machine: "
            "medians of interleaved repeats, compare the ratios).",
            "",
            _table(timings, per_call, "simulate"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    print(run(quick=parser.parse_args().quick))


if __name__ == "__main__":
    main()
