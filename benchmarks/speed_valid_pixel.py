"""Speed of the valid-pixel weighted loss, forward + backward, against ``F.mse_loss``.

Contenders, all at ``(32, 3, 256, 256)`` float32 with 30 % invalid pixels (target 0 = nodata):

* ``F.mse_loss`` -- the unmasked baseline the ratios are taken against;
* the per-``(sample, channel)`` Python loop written from the seed's formula (boolean indexing);
* ``create_loss("valid_pixel", fused=True)`` -- the opt-in fused (``torch.compile``'d) path;
* ``create_loss("valid_pixel")`` -- the default: the same maths, eager;
* ``create_loss("sam_mse", fused=True)`` -- fused.

Run ``python benchmarks/speed_valid_pixel.py [--quick]``; results are medians of interleaved
repeats (``benchmarks/_timing.py``), with 2 torch threads. The one-time compile cost of each
fused contender is measured separately, before timing.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import (
    FIRST_CALLS,
    device_sync,
    first_calls_s,
    host_syncs,
    machine_line,
    markdown_table,
    time_interleaved,
)

from smp_imbalance import create_loss

SHAPE = (32, 3, 256, 256)
INVALID_FRACTION = 0.3


def loop_reference(
    y_pred: torch.Tensor, y_true: torch.Tensor, threshold: float = 0.0, power: float = 0.5
) -> torch.Tensor:
    """The seed's formula as a plain Python loop over (sample, channel) groups."""
    total_loss = y_pred.new_zeros(())
    total_weight = 0.0
    for i in range(y_pred.shape[0]):
        for c in range(y_pred.shape[1]):
            valid = y_true[i, c] > threshold
            n_valid = int(valid.sum())
            if n_valid == 0:
                continue
            weight = (n_valid / valid.numel()) ** power
            total_loss = total_loss + weight * F.mse_loss(y_pred[i, c][valid], y_true[i, c][valid])
            total_weight += weight
    return total_loss / total_weight if total_weight > 0 else total_loss


def _inputs(shape: tuple[int, ...], device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y_true = torch.rand(shape, generator=gen) + 0.01
    y_true[torch.rand(shape, generator=gen) < INVALID_FRACTION] = 0.0
    y_pred = y_true + 0.1 * torch.randn(shape, generator=gen)
    return y_pred.to(device).requires_grad_(True), y_true.to(device)


def run(quick: bool = False, device: str = "cpu") -> str:
    """Time the contenders (2 torch threads on the CPU, or on a CUDA ``device``) and return a
    markdown report; on CUDA also the host syncs of one forward + backward of ours."""
    torch.set_num_threads(2)
    cuda = torch.device(device).type == "cuda"
    shape = (8, 3, 128, 128) if quick else SHAPE
    repeats = 5 if quick else 15
    y_pred, y_true = _inputs(shape, device)

    def step(loss_fn):
        def fn() -> None:
            y_pred.grad = None
            loss_fn(y_pred, y_true).backward()

        return fn

    # 0 marks the invalid pixels here (as DN 0 is nodata in the satellite recipes): say so
    fused = create_loss("valid_pixel", fused=True, threshold=0.0)
    eager = create_loss("valid_pixel", threshold=0.0)
    sam_mse = create_loss("sam_mse", fused=True, threshold=0.0)

    # Values agree before anything is timed.
    ref = loop_reference(y_pred, y_true)
    for loss in (fused, eager):
        torch.testing.assert_close(loss(y_pred, y_true), ref, rtol=1e-4, atol=1e-6)

    compile_s = {}
    for label, loss in (("valid_pixel fused", fused), ("sam_mse fused", sam_mse)):
        compile_s[label] = first_calls_s(step(loss))

    contenders = [
        ("F.mse_loss", step(F.mse_loss)),
        ("valid_pixel fused (fused=True)", step(fused)),
        ("valid_pixel eager", step(eager)),
        ("sam_mse fused", step(sam_mse)),
        ("per-(sample, channel) loop", step(loop_reference)),
    ]
    timings = time_interleaved(
        contenders,
        repeats=repeats,
        warmup=2,
        min_time_s=0.02 if cuda else 0.0,
        sync=device_sync(device),
    )
    table = markdown_table(
        f"valid_pixel forward + backward{' (CUDA)' if cuda else ''}, {tuple(shape)} float32, {INVALID_FRACTION:.0%} invalid",
        timings,
        baseline="F.mse_loss",
    )
    by_label = {t.label: t.median_s for t in timings}
    speedup = by_label["per-(sample, channel) loop"] / by_label["valid_pixel fused (fused=True)"]
    lines = [
        table,
        "",
        f"Fused default vs the Python loop: {speedup:.1f}x faster.",
        f"One-time compile cost (first {FIRST_CALLS} forward + backward calls, not in the table): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in compile_s.items())
        + " (less when inductor's on-disk cache already holds the kernels).",
        "",
        f"Machine: {machine_line(device)}. {math.prod(shape):,} elements per tensor; "
        f"{repeats} interleaved repeats, medians.",
    ]
    if cuda:
        lines += [
            "",
            'Host-device syncs in one forward + backward (`torch.cuda.set_sync_debug_mode("error")`)'
            ": "
            + "; ".join(
                f"{label}: {host_syncs(fn)}"
                for label, fn in contenders
                if label.startswith(("valid_pixel", "sam_mse"))
            )
            + ".",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small tensors, few repeats")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    print(run(quick=args.quick, device=args.device))


if __name__ == "__main__":
    main()
