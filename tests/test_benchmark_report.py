"""The quality benchmarks write their own BENCHMARKS.md section through ``benchmarks/_report.py``."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.mark.parametrize(
    "name",
    ["quality_detector", "quality_detector_losses", "quality_satellite", "quality_multilabel"],
)
def test_write_section_appends_then_replaces(tmp_path, name: str) -> None:
    bench = load_benchmark(name)
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nother text\n")
    bench.write_section("first", path)
    text = path.read_text()
    assert text == (
        f"# Benchmarks\n\nother text\n\n{bench.SECTION_TITLE}\n\n{bench.BEGIN}\nfirst\n{bench.END}\n"
    )
    path.write_text(text + "\n## Another section\n")
    bench.write_section("second", path)
    assert path.read_text() == text.replace("first", "second") + "\n## Another section\n"
