"""Shared test settings.

Compiling the fused loss kernels costs seconds per shape, so the suite runs the eager path by
default (``SMP_IMBALANCE_COMPILE=0``); tests of the fused path request the ``fused`` fixture.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("SMP_IMBALANCE_COMPILE", "0")

from smp_imbalance.sample_data import ROOT as SAMPLE_DATA

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"  # fixtures the package does not ship
HPA_SAMPLE = SAMPLE_DATA / "hpa"  # 4 real HPA Ids (128 x 128), shipped with the package


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (not a package) as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run_benchmark(
    name: str, *args: str, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/<name>.py [args]`` in a subprocess (2 OpenMP threads, ``env`` added to
    the environment); assert it exited 0, showing the end of its stderr otherwise."""
    script = REPO_ROOT / "benchmarks" / f"{name}.py"
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_quick_benchmark(
    name: str, out: Path, *args: str, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run a quality benchmark's ``--quick --out OUT [args]`` mode, as CI does."""
    return run_benchmark(name, "--quick", "--out", str(out), *args, timeout=timeout)


@pytest.fixture
def fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enable the torch.compile'd kernels for this test."""
    monkeypatch.setenv("SMP_IMBALANCE_COMPILE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
