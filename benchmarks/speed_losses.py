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
import re
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _timing import machine_line  # noqa: E402

PARTS = ("speed_acb_mse", "speed_valid_pixel", "speed_crl")
BEGIN, END = "<!-- speed_losses:begin -->", "<!-- speed_losses:end -->"


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


def write_section(
    markdown: str,
    path: Path = HERE.parent / "BENCHMARKS.md",
    markers: tuple[str, str] = (BEGIN, END),
) -> None:
    """Replace the text between ``markers`` in BENCHMARKS.md with ``markdown``."""
    begin, end = markers
    text = path.read_text()
    block = f"{begin}\n{markdown}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no {begin} ... {end} block")
    path.write_text(pattern.sub(lambda _: block, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats; a smoke test")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    markdown = run(quick=args.quick)
    print(markdown)
    if args.write:
        write_section(markdown)


if __name__ == "__main__":
    main()
