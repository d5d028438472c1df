"""benchmarks/quality_detector.py: its helpers (exact values) and a --quick smoke run of every part."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_benchmark, run_quick_benchmark

qd = load_benchmark("quality_detector")


def _masks(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool).reshape(1, 1, 1, -1)


def test_hit_score_counts_kept_signal_and_dropped_noise() -> None:
    signal = _masks([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    noise = _masks([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    keep = _masks([1, 1, 1, 0, 1, 0, 0, 0, 0, 1])  # 3 of 4 signal, 1 of 5 noise; pixel 9 empty
    s = qd.hit_score(keep, signal, noise)
    assert s["signal_retention"] == 0.75
    assert s["noise_removal"] == 0.8
    assert s["false_hits_per_frame"] == 1.0
    assert s["score"] == pytest.approx(2 * 0.75 * 0.8 / 1.55)


def test_hit_score_of_nothing_kept_is_zero_not_nan() -> None:
    signal, noise = _masks([1, 0]), _masks([0, 1])
    assert qd.hit_score(_masks([0, 0]), signal, noise)["score"] == 0.0


def test_mean_std_is_the_sample_deviation() -> None:
    assert qd.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert qd.mean_std([0.5]) == (0.5, 0.0)


def test_the_recipe_is_what_the_networks_train() -> None:
    recipe = qd.load_recipe()
    assert recipe["model"]["arch"] == "HitGraphDenoiser"
    data = recipe["data"]
    frames = data["train_kwargs"]["num_frames"]
    assert qd.recipe_steps(recipe) == recipe["max_epochs"] * frames // data["batch_size"]
    labels = list(qd.contenders(recipe))
    assert any("main job" in label for label in labels)
    assert any("UNet" in label for label in labels)


def test_tuned_rule_is_at_least_as_good_as_its_default_on_the_tuning_frames() -> None:
    data = qd.stack(qd.frames("default", qd.TUNE_SEED, 6))
    tuned = qd.tune_rule(qd.NeighbourCountRule, {"radius": (28.0,), "time_scale": (1.2,)}, data)
    default = qd.score_rule(qd.NeighbourCountRule(), data)  # min_neighbours=3 is on the grid
    assert tuned["score"] >= default["score"] - 1e-12
    assert tuned["params"]["radius"] == 28.0


@pytest.mark.slow
def test_quick_run_of_every_part_writes_results_and_a_report(tmp_path) -> None:
    run_quick_benchmark("quality_detector", tmp_path, timeout=900)
    for part in ("rules", "networks", "curve"):
        record = json.loads((tmp_path / f"{part}.json").read_text())
        assert record["command"].startswith("python benchmarks/quality_detector.py")
    rules = json.loads((tmp_path / "rules.json").read_text())["results"]
    assert set(rules) == set(qd.SETTINGS)
    networks = json.loads((tmp_path / "networks.json").read_text())["results"]
    assert {r["label"] for r in networks["runs"]} == set(qd.contenders(qd.load_recipe()))
    report = (tmp_path / "report.md").read_text()
    assert "oracle" in report and "neighbour rule" in report
