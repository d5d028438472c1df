"""Timing harness shared by the speed benchmarks: interleaved repeats, medians, ratios in one run.

Each contender is a zero-argument callable doing the full work to time (e.g. forward + backward).
Contenders are run in turn within each repeat (interleaved), so that a slow phase of the machine
hits all of them alike; the table reports medians and each contender's ratio to a baseline.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

FIRST_CALLS = 3  # calls timed as a fused loss's one-time cost (compile, then one recompile)

__all__ = [
    "FIRST_CALLS",
    "Timing",
    "device_sync",
    "first_calls_s",
    "host_syncs",
    "load_line",
    "machine_line",
    "markdown_table",
    "time_interleaved",
]


@dataclass
class Timing:
    label: str
    median_s: float
    iqr_s: float


def time_interleaved(
    contenders: Sequence[tuple[str, Callable[[], object]]],
    repeats: int = 30,
    warmup: int = 3,
    min_time_s: float = 0.0,
    sync: Callable[[], None] | None = None,
) -> list[Timing]:
    """Median wall time of each contender over ``repeats`` interleaved rounds.

    ``min_time_s`` > 0 runs each contender several times per round when one call is very short,
    and divides, so that timer resolution does not dominate. ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before each timer starts and before it stops, so that
    asynchronous device work is counted where it was queued.
    """
    wait = sync or (lambda: None)
    inner = {label: 1 for label, _ in contenders}
    for label, fn in contenders:
        for _ in range(warmup):
            fn()
        if min_time_s > 0:
            wait()
            start = time.perf_counter()
            fn()
            wait()
            one = max(time.perf_counter() - start, 1e-7)
            inner[label] = max(1, int(min_time_s / one))
    samples: dict[str, list[float]] = {label: [] for label, _ in contenders}
    for _ in range(repeats):
        for label, fn in contenders:
            n = inner[label]
            wait()
            start = time.perf_counter()
            for _ in range(n):
                fn()
            wait()
            samples[label].append((time.perf_counter() - start) / n)
    out = []
    for label, _ in contenders:
        q = statistics.quantiles(samples[label], n=4) if len(samples[label]) > 1 else [0, 0, 0]
        out.append(Timing(label, statistics.median(samples[label]), q[2] - q[0]))
    return out


def markdown_table(title: str, timings: Sequence[Timing], baseline: str) -> str:
    """A markdown table of medians and ratios to ``baseline`` (one of the labels)."""
    base = next(t.median_s for t in timings if t.label == baseline)
    lines = [
        f"**{title}**",
        "",
        "| contender | median ms | IQR ms | x " + baseline + " |",
        "|---|---:|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t.label} | {t.median_s * 1e3:.3f} | {t.iqr_s * 1e3:.3f} | {t.median_s / base:.2f} |"
        )
    return "\n".join(lines)


def machine_line(device: str = "cpu") -> str:
    """One line naming the machine and the torch build, for the results' header."""
    cpu = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}"
    )
    if torch.device(device).type != "cuda":
        return cpu
    return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), host {cpu}"


def load_line(start: tuple[float, float, float]) -> str:
    """The 1-minute load average at the start (``os.getloadavg()`` taken then) and now, against
    the CPU count: other jobs on a shared machine inflate every timing, so say how busy it was."""
    end = os.getloadavg()
    return (
        f"Load average (1 min) on this {os.cpu_count()}-CPU machine: {start[0]:.1f} at the start, "
        f"{end[0]:.1f} at the end of the run."
    )


def first_calls_s(fn: Callable[[], object], calls: int = FIRST_CALLS) -> float:
    """Seconds taken by the first ``calls`` calls of ``fn``: the opt-in fused path's one-time
    compile cost (``torch.compile`` at the first call; the eager default has none)."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - start


def device_sync(device: str | torch.device) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA device (for :func:`time_interleaved`), else None."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return None


def host_syncs(fn: Callable[[], object]) -> str:
    """Run ``fn`` once under ``torch.cuda.set_sync_debug_mode("error")``: ``"none"`` when no
    operation synchronised the host with the device, else the first error, abridged."""
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    except RuntimeError as err:
        return "**" + str(err).splitlines()[0][:80] + "**"
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    return "none"
