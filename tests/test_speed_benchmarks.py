"""The speed benchmarks' ``--quick`` modes run end to end (smoke tests: no timing is asserted).

They are run as CI runs everything else, so that a change to a loss, an adapter or the timing
harness cannot leave ``benchmarks/speed_*.py`` broken until the next full measurement.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "speed_losses",
            ["### ACB-MSE forward + backward", "valid_pixel forward + backward", "### crl speed"],
        ),
        (
            "speed_datasets",
            [
                "### DetectorFrames throughput",
                "### masked_bands read speed",
                "floor: float32 scaled + validity",
                "protein_atlas",
            ],
        ),
    ],
)
def test_quick_mode_runs(name: str, expected: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / f"{name}.py"), "--quick"],
        cwd=REPO_ROOT,
        # the compiled loss kernels, as users get them (the suite runs eagerly by default)
        env={**os.environ, "OMP_NUM_THREADS": "2", "SMP_IMBALANCE_COMPILE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for heading in expected:
        assert heading in proc.stdout
