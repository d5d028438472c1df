"""Writing a benchmark's results into its own section of BENCHMARKS.md.

Each script owns the text between ``<!-- name:begin -->`` and ``<!-- name:end -->``; the file is
read right before writing, so several benchmarks can update their sections independently.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["BENCHMARKS_MD", "markers", "write_section"]

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def markers(name: str) -> tuple[str, str]:
    """The begin and end comment lines of section ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write_section(
    name: str, markdown: str, path: Path = BENCHMARKS_MD, title: str | None = None
) -> None:
    """Replace the text between section ``name``'s markers in ``path`` with ``markdown``.

    Absent markers: with ``title`` (a ``## ...`` heading) a new section is appended at the end of
    the file; without, ``ValueError``.
    """
    begin, end = markers(name)
    text = path.read_text()
    if begin not in text:
        if title is None:
            raise ValueError(f"{path} has no {begin} ... {end} block")
        text = text.rstrip("\n") + f"\n\n{title}\n\n{begin}\n{end}\n"
    block = f"{begin}\n{markdown}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: block, text, count=1))
