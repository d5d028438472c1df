"""Throughput of the three dataset adapters against the bare decode of the same files, one run.

python benchmarks/speed_datasets.py            # full run, prints markdown
python benchmarks/speed_datasets.py --quick    # a smoke run
python benchmarks/speed_datasets.py --write    # also replace the dataset section of BENCHMARKS.md
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

PARTS = ("speed_detector", "speed_satellite", "speed_protein")


def run(quick: bool = False) -> str:
    torch.set_num_threads(2)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections = [
        f"Measured {started} on {machine_line()}.",
        f"Command: `python benchmarks/speed_datasets.py{' --quick' if quick else ''}`.",
    ]
    sections += [importlib.import_module(part).run(quick=quick) for part in PARTS]
    return "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    markdown = run(quick=args.quick)
    print(markdown)
    if args.write:
        _report.write_section("speed_datasets", markdown)


if __name__ == "__main__":
    main()
