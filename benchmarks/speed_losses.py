"""Speed of the three losses against their references, on this machine, in one run.

    python benchmarks/speed_losses.py            # full run, prints markdown
    python benchmarks/speed_losses.py --quick    # a smoke run (a few repeats), as CI does
    python benchmarks/speed_losses.py --write    # also replace the loss section of BENCHMARKS.md
    python benchmarks/speed_losses.py --device cuda --write   # the CUDA section (needs a GPU)

Each part (``speed_acb_mse``, ``speed_valid_pixel``, ``speed_crl``) times forward + backward with
interleaved repeats and reports medians and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import load_line, machine_line  # noqa: E402

PARTS = ("speed_acb_mse", "speed_valid_pixel", "speed_crl")


def section_name(device: str) -> str:
    """The BENCHMARKS.md section of a device: ``speed_losses`` (CPU) or ``speed_losses_cuda``."""
    return "speed_losses" if torch.device(device).type == "cpu" else "speed_losses_cuda"


def run(quick: bool = False, device: str = "cpu") -> str:
    torch.set_num_threads(2)
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    flags = (" --quick" if quick else "") + (f" --device {device}" if device != "cpu" else "")
    sections = [
        f"Measured {started} on {machine_line(device)}.",
        f"Command: `python benchmarks/speed_losses.py{flags}`.",
    ]
    for part in PARTS:
        module = importlib.import_module(part)
        sections.append(module.run(quick=quick, device=device))
    sections.insert(2, load_line(load))
    return "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats; a smoke test")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--output", type=Path, help="also save the markdown to this file")
    args = parser.parse_args()
    markdown = run(quick=args.quick, device=args.device)
    print(markdown)
    if args.output is not None:
        args.output.write_text(markdown + "\n")
    if args.write:
        _report.write_section(section_name(args.device), markdown)


if __name__ == "__main__":
    main()
