"""benchmarks/quality_detector_losses.py: its helpers (exact values) and a --quick smoke run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, load_benchmark, run_quick_benchmark

qd = load_benchmark("quality_detector_losses")


def _frame(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)


IMAGE = _frame([0.0, 0.5, 0.8, 0.3])


def test_keep_decision_gate_uses_the_gate_value_not_the_hit_time() -> None:
    gate = _frame([0.9, 0.6, 0.4, 0.5])  # kept where > 0.5; pixel 0 has no hit
    keep = qd.keep_decision("gate", IMAGE * gate, IMAGE)
    assert keep.tolist() == _frame([0, 1, 0, 0]).bool().tolist()


def test_keep_decision_gate_eval_output_keeps_exactly_the_open_gates() -> None:
    gate = _frame([1.0, 1.0, 0.0, 1.0])  # DenseTask in eval mode: a hard 0/1 gate
    keep = qd.keep_decision("gate", IMAGE * gate, IMAGE)
    assert keep.tolist() == _frame([0, 1, 0, 1]).bool().tolist()


def test_keep_decision_mask_cuts_logits_at_zero() -> None:
    logits = _frame([3.0, 0.1, -0.1, 0.0])
    keep = qd.keep_decision("mask", logits, IMAGE)
    assert keep.tolist() == _frame([0, 1, 0, 0]).bool().tolist()


def test_keep_decision_frame_uses_the_hit_threshold() -> None:
    output = _frame([0.9, 0.06, 0.05, 0.04])  # an output hit on an empty pixel is not kept
    keep = qd.keep_decision("frame", output, IMAGE)
    assert keep.tolist() == _frame([0, 1, 0, 0]).bool().tolist()


def test_keep_decision_rejects_an_unknown_head() -> None:
    with pytest.raises(ValueError, match="unknown head"):
        qd.keep_decision("segmentation", IMAGE, IMAGE)


def test_denoise_keeps_exact_input_times() -> None:
    output = _frame([0.9, 0.06, 0.05, 0.7])
    assert qd.denoise("frame", output, IMAGE).tolist() == _frame([0.0, 0.5, 0.0, 0.3]).tolist()


def test_balanced_zero_weighting_is_nohit_pixels_over_noise_hits() -> None:
    target = torch.zeros(2, 1, 2, 5)
    target[0, 0, 0, 0] = target[1, 0, 1, 4] = 0.7  # 2 hits, 18 no-hit pixels
    noise = torch.zeros(2, 1, 2, 5, dtype=torch.bool)
    noise[0, 0, 1, :3] = True  # 3 noise hits
    assert qd.balanced_zero_weighting(target, noise) == 6.0
    with pytest.raises(ValueError, match="no noise hits"):
        qd.balanced_zero_weighting(target, torch.zeros_like(noise))


def test_is_collapsed_below_half_the_signal_hits() -> None:
    assert qd.is_collapsed(14.9, 30.0)
    assert not qd.is_collapsed(15.0, 30.0)
    assert qd.is_collapsed(0.0, 30.0)


def test_mean_std_is_the_sample_std() -> None:
    assert qd.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert qd.mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        qd.mean_std([])


def _run(label: str, retention: float, removal: float, collapsed: bool = False) -> dict:
    metrics = {m: 0.0 for m in qd.METRICS}
    metrics.update(signal_retention=retention, noise_removal=removal, hits_per_frame=10.0)
    return {"label": label, "head": "gate", "metrics": metrics, "collapsed": collapsed}


def test_aggregate_groups_by_label_in_order() -> None:
    runs = [
        _run("b", 0.5, 0.25),
        _run("a", 0.9, 0.1, collapsed=True),
        _run("b", 0.7, 0.75),
        _run("a", 0.9, 0.3),
    ]
    summary = qd.aggregate(runs)
    assert list(summary) == ["b", "a"]
    assert summary["b"]["signal_retention"] == pytest.approx((0.6, math.sqrt(0.02)))
    assert summary["b"]["noise_removal"] == pytest.approx((0.5, math.sqrt(0.125)))
    assert summary["a"]["signal_retention"] == (0.9, 0.0)
    assert (summary["a"]["runs"], summary["a"]["collapsed"]) == (2, 1)
    assert (summary["b"]["runs"], summary["b"]["collapsed"]) == (2, 0)
    assert summary["b"]["hits_per_seed"] == [10.0, 10.0]


def test_markdown_table_row() -> None:
    runs = [_run("mse", 0.5, 0.25), _run("mse", 0.7, 0.75)]
    runs[1]["metrics"]["hits_per_frame"] = 12.5
    summary = qd.aggregate(runs)
    row = qd.markdown_table(summary).splitlines()[2]
    assert row == (
        "| mse | gate | 60.0 ± 14.1 | 50.0 ± 35.4 | 0.0 ± 0.0 | 0.0 ± 0.0 "
        "| 0.000 ± 0.000 | 0 / 2 | 10.0, 12.5 |"
    )


def test_findings_name_the_winner_and_the_margin() -> None:
    runs = [_run("x", 0.98, 0.95), _run("y", 0.5, 0.5, collapsed=True)]
    for run in runs:
        m = run["metrics"]
        r, n = m["signal_retention"], m["noise_removal"]
        m["score"] = 2 * r * n / (r + n)
    lines = qd.findings(qd.aggregate(runs))
    assert lines[1] == (
        "highest signal retention: **x** (98.0 ± 0.0), ahead of y (50.0 ± 0.0) by 48.0 pp."
    )
    assert lines[-2] == "runs collapsed to an (almost) all-zero output: y (1/1)."
    assert lines[-1] == "DeepClean3D's anchor (97 % retention with 91 % removal) reached by: x."


def test_sparse_hits_round_trip() -> None:
    frame = torch.zeros(3, 4)
    frame[0, 1], frame[2, 3] = 0.25, 1.0
    hits = qd.sparse_hits(frame)
    assert hits == [[0, 1, 0.25], [2, 3, 1.0]]
    np.testing.assert_array_equal(qd.dense_frame(hits, (3, 4)), frame.numpy())


@pytest.mark.slow
def test_quick_run_writes_json_table_and_figure(tmp_path) -> None:
    def own_outputs() -> tuple[str, int | None]:
        """This benchmark's BENCHMARKS.md section and its figure's mtime (others may write the
        rest of BENCHMARKS.md meanwhile)."""
        text = (REPO_ROOT / "BENCHMARKS.md").read_text()
        section = text[text.find(qd.BEGIN) : text.find(qd.END)] if qd.BEGIN in text else ""
        figure = qd.FIGURE.stat().st_mtime_ns if qd.FIGURE.exists() else None
        return section, figure

    before = own_outputs()
    run_quick_benchmark("quality_detector_losses", tmp_path)
    result = json.loads((tmp_path / "results.json").read_text())
    labels = [c.label for c in qd.CONTENDERS]
    assert [r["label"] for r in result["runs"]] == labels  # one seed in --quick
    for run in result["runs"]:
        assert {*qd.METRICS, "signal_per_frame"} <= set(run["metrics"])
        assert all(math.isfinite(v) for v in run["metrics"].values())
        assert len(run["curves"]["loss"]) == qd.QUICK.steps
        assert isinstance(run["collapsed"], bool)
    assert set(result["example"]["outputs"]) == set(labels)
    table = (tmp_path / "table.md").read_text()
    for label in labels:
        assert f"| {label} |" in table
    assert (tmp_path / "quality_detector_losses.png").stat().st_size > 10_000
    assert own_outputs() == before  # no --write: BENCHMARKS.md and docs/images untouched
