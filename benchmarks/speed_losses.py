"""Speed of the three losses against their references, on this machine, in one run.

    python benchmarks/speed_losses.py            # full run, prints markdown
    python benchmarks/speed_losses.py --quick    # a smoke run (a few repeats), as CI does
    python benchmarks/speed_losses.py --write    # also replace the loss section of BENCHMARKS.md

Each part (``speed_acb_mse``, ``speed_valid_pixel``, ``speed_crl``) times forward + backward with
interleaved repeats and reports medians and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import machine_line  # noqa: E402

PARTS = ("speed_acb_mse", "speed_valid_pixel", "speed_crl")


def run(quick: bool = False) -> str:
    torch.set_num_threads(2)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = [
        f"Measured {started} on {machine_line()}.",
        f"Command: `python benchmarks/speed_losses.py{' --quick' if quick else ''}`.",
    ]
    for part in PARTS:
        module = importlib.import_module(part)
        sections.append(module.run(quick=quick))
    return "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats; a smoke test")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    markdown = run(quick=args.quick)
    print(markdown)
    if args.write:
        _report.write_section("speed_losses", markdown)


if __name__ == "__main__":
    main()
