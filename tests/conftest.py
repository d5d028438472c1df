"""Shared test settings.

Compiling the fused loss kernels costs seconds per shape, so the suite runs the eager path by
default (``SMP_IMBALANCE_COMPILE=0``); tests of the fused path request the ``fused`` fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("SMP_IMBALANCE_COMPILE", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def fused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enable the torch.compile'd kernels for this test."""
    monkeypatch.setenv("SMP_IMBALANCE_COMPILE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
