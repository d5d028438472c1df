"""Speed of ACB-MSE (forward + backward) against F.mse_loss and the published acb-mse 1.0.6.

Contenders, each doing forward + backward on the same tensors:

* ``F.mse_loss`` -- the baseline every ratio is taken against;
* ``acb-mse 1.0.6`` -- ``acb_mse.ACBLoss`` (boolean indexing: copies and host syncs);
* ``ours eager`` -- ``create_loss("acb_mse")``, the default: plain eager maths, autograd;
* ``ours fused`` -- ``create_loss("acb_mse", fused=True)``, opt-in: compiled forward kernel and
  a hand-written backward kernel (one pass each);
* ``ours inductor-AD`` (full run only) -- the eager maths under ``torch.compile`` with autograd
  left to AOTAutograd/inductor: the alternative to the hand-written backward, kept here to show
  why it is not the default.

Run ``python benchmarks/speed_acb_mse.py [--quick]``; ``run(quick)`` returns the markdown.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
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
from smp_imbalance.losses._compile import COMPILE_ENV, FusedFallbackWarning, compile_enabled
from smp_imbalance.losses.functional.acb import acb_mse

SHAPES = ((32, 1, 128, 88), (8, 4, 256, 256))
HIT_FRACTION = 0.05  # sparse detector-like frames


def _step(loss_fn: Callable[[], torch.Tensor], pred: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        pred.grad = None
        loss_fn().backward()

    return step


COMPILED = ("ours fused (fused=True)", "ours inductor-AD")


def _contenders(
    pred: torch.Tensor,
    target: torch.Tensor,
    peer: torch.nn.Module,
    ours: torch.nn.Module,
    ours_eager: torch.nn.Module,
    inductor_ad: Callable[..., torch.Tensor] | None,
) -> list[tuple[str, Callable[[], None]]]:
    contenders = [
        ("F.mse_loss", _step(lambda: F.mse_loss(pred, target), pred)),
        ("acb-mse 1.0.6", _step(lambda: peer(pred, target), pred)),
        ("ours eager (default)", _step(lambda: ours_eager(pred, target), pred)),
        ("ours fused (fused=True)", _step(lambda: ours(pred, target), pred)),
    ]
    if inductor_ad is not None:
        weights, edges = torch.tensor([1.0, 1.0]), torch.tensor([0.0])
        step = _step(lambda: inductor_ad(pred, target, weights, edges), pred)
        contenders.append(("ours inductor-AD", step))
    return contenders


def run(quick: bool = False, device: str = "cpu") -> str:
    """Time the contenders at both shapes (2 torch threads on the CPU, or on a CUDA ``device``);
    return a markdown report. On CUDA each of our contenders is also run once under
    ``torch.cuda.set_sync_debug_mode("error")`` and the host syncs it caused are reported."""
    from acb_mse import ACBLoss

    torch.set_num_threads(2)
    torch.manual_seed(0)
    cuda = torch.device(device).type == "cuda"
    repeats = 7 if quick else 25
    peer = ACBLoss()
    ours = create_loss("acb_mse", fused=True)
    ours_eager = create_loss("acb_mse")
    inductor_ad = None if quick or cuda else torch.compile(acb_mse, fullgraph=True)
    sections = [
        f"### ACB-MSE forward + backward{' (CUDA)' if cuda else ''}",
        "",
        machine_line(device),
        "",
        f"Targets with {HIT_FRACTION:.0%} hits; medians of {repeats} interleaved rounds.",
        "",
    ]
    sync_lines = []
    if not compile_enabled():
        sections += [f"**{COMPILE_ENV}=0 is set: 'ours fused' ran eagerly.**", ""]
    compile_lines = []
    for shape in SHAPES:
        target = (torch.rand(shape) * (torch.rand(shape) < HIT_FRACTION)).to(device)
        pred = torch.rand(shape, device=device, requires_grad=True)
        contenders = _contenders(pred, target, peer, ours, ours_eager, inductor_ad)
        with warnings.catch_warnings():
            warnings.simplefilter("error", FusedFallbackWarning)
            for label, fn in contenders:
                if label in COMPILED:
                    compile_lines.append(f"| {label} | {shape} | {first_calls_s(fn):.1f} |")
        torch.testing.assert_close(ours(pred, target), peer(pred, target), rtol=1e-5, atol=0)
        timings = time_interleaved(
            contenders, repeats=repeats, warmup=2, min_time_s=0.02, sync=device_sync(device)
        )
        sections += [markdown_table(f"shape {shape}", timings, "F.mse_loss"), ""]
        if cuda:
            sync_lines += [
                f"| {label} | {shape} | {host_syncs(fn)} |"
                for label, fn in contenders
                if label.startswith("ours")
            ]
    sections += [
        f"One-time cost of the first {FIRST_CALLS} calls of the opt-in compiled contenders "
        "(torch.compile at the first call; the second shape compiles again, torch.compile then "
        "being shape-dynamic). The eager default has no such cost:",
        "",
        f"| contender | shape | first {FIRST_CALLS} calls s |",
        "|---|---|---:|",
        *compile_lines,
    ]
    if sync_lines:
        sections += [
            "",
            "Host-device syncs in one forward + backward, under `torch.cuda.set_sync_debug_mode"
            '("error")`:',
            "",
            "| contender | shape | host syncs |",
            "|---|---|---|",
            *sync_lines,
        ]
    return "\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no inductor-AD")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    print(run(quick=args.quick, device=args.device))


if __name__ == "__main__":
    main()
