"""The speed benchmarks' ``--quick`` modes run end to end (smoke tests: no timing is asserted).

They are run as CI runs everything else, so that a change to a loss, an adapter or the timing
harness cannot leave ``benchmarks/speed_*.py`` broken until the next full measurement.
"""

from __future__ import annotations

import pytest
from conftest import run_benchmark


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "speed_losses",
            ["### ACB-MSE forward + backward", "valid_pixel forward + backward", "### crl speed"],
        ),
        (
            "speed_step_share",
            ["### Loss cost as a share of a training step", "crl eager (default)"],
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
    # the compiled loss kernels, as users get them (the suite runs eagerly by default)
    proc = run_benchmark(name, "--quick", env={"SMP_IMBALANCE_COMPILE": "1"})
    for heading in expected:
        assert heading in proc.stdout
