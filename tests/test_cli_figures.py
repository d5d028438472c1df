"""`smp-imbalance preview` and `smp-imbalance plot`: figures made by commands of the package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HPA_SAMPLE

from smp_imbalance.cli import main as cli_main
from smp_imbalance.plots import loss_vs_hits


def test_loss_vs_hits_reproduces_the_seed_claim() -> None:
    curves = loss_vs_hits(max_hits=400, step=2, recovered=0.5, hit_value=0.8)
    assert torch.allclose(curves["acb_mse"], torch.full_like(curves["acb_mse"], 0.5 * 0.8**2))
    for name in ("mse", "mae"):
        assert (curves[name].diff() > 0).all(), name


@pytest.mark.slow
def test_plot_loss_vs_hits_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fig.png"
    assert cli_main(["plot", "loss-vs-hits", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("detector_frames", {"num_frames": 4, "train": False}),
        ("protein_atlas", {"root": str(HPA_SAMPLE / "images"),
                           "csv_file": str(HPA_SAMPLE / "train.csv")}),
    ],
)  # fmt: skip
def test_preview_command(name: str, kwargs: dict, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.png"
    assert (
        cli_main(["preview", name, "--kwargs", json.dumps(kwargs), "--out", str(out), "-n", "2"])
        == 0
    )
    assert out.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preview", "detector_frames", "--kwargs", "{oops"], "not valid JSON"),
        (["preview", "detector_frames", "--kwargs", "[1]"], "must be a JSON object"),
        (["preview", "no_such_set"], "unknown dataset name"),
    ],
)
def test_preview_rejects_bad_kwargs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert cli_main([*args, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) <= 3
