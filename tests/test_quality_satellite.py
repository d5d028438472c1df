"""benchmarks/quality_satellite.py: its helpers (exact values) and a --quick smoke run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import REPO_ROOT, load_benchmark, run_quick_benchmark

from smp_imbalance import create_loss

qs = load_benchmark("quality_satellite")


def _t(values: list[float], shape: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


# -- masked MSE ------------------------------------------------------------------------------------


def test_masked_mse_pools_the_valid_pixels_of_the_batch() -> None:
    # sample 0: errors 1, 2 (valid), 10 (invalid); sample 1: error 3 (valid), 20 (invalid)
    pred = _t([1.0, 2.0, 10.0, 3.0, 20.0, 0.0], (2, 1, 1, 3))
    target = torch.zeros(2, 1, 1, 3)
    mask = _t([1, 1, 0, 1, 0, 0], (2, 1, 1, 3)).bool()
    loss = qs.MaskedMSELoss()(pred, target, mask)
    assert loss.item() == pytest.approx((1 + 4 + 9) / 3)  # not the mean of per-sample means


def test_masked_mse_broadcasts_a_shared_mask_over_bands() -> None:
    pred = _t([1.0, 5.0, 2.0, 7.0], (1, 2, 1, 2))  # band 0: 1, 5; band 1: 2, 7
    mask = _t([1, 0], (1, 1, 1, 2)).bool()
    loss = qs.MaskedMSELoss()(pred, torch.zeros_like(pred), mask)
    assert loss.item() == pytest.approx((1 + 4) / 2)


def test_masked_mse_with_nothing_valid_is_zero_and_differentiable() -> None:
    pred = torch.ones(1, 1, 2, 2, requires_grad=True)
    loss = qs.MaskedMSELoss()(pred, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=bool))
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad is not None and pred.grad.abs().sum().item() == 0.0


def test_masked_mse_is_valid_pixel_with_weight_power_one() -> None:
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(4, 2, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 2, 8, 8, generator=g, dtype=torch.float64)
    frac = torch.tensor([0.05, 0.3, 0.8, 1.0], dtype=torch.float64).view(4, 1, 1, 1)
    mask = torch.rand(4, 1, 8, 8, generator=g, dtype=torch.float64) < frac
    ours = qs.MaskedMSELoss()(pred, target, mask)
    theirs = create_loss("valid_pixel", weight_power=1.0, fused=False)(pred, target, mask)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    (g_ours,) = torch.autograd.grad(ours, pred)
    (g_theirs,) = torch.autograd.grad(theirs, pred)
    torch.testing.assert_close(g_ours, g_theirs)
    sqrt = create_loss("valid_pixel", weight_power=0.5, fused=False)(pred, target, mask)
    assert sqrt.item() != pytest.approx(ours.item(), rel=1e-6)  # the weighting does change it


def test_build_loss_sets_beta_from_the_target_variance() -> None:
    spec = next(s for s in qs.LOSSES if s.name == "sam_mse")
    loss = qs.build_loss(spec, target_variance=0.04)
    assert loss.beta == pytest.approx(25.0)
    assert loss.alpha == 1.0 and loss.weight_power == 0.5
    powers = [qs.build_loss(s, 0.04).weight_power for s in qs.LOSSES if s.name == "valid_pixel"]
    assert powers == [0.0, 0.5, 1.0]
    assert isinstance(qs.build_loss(qs.LOSSES[0], 0.04), torch.nn.MSELoss)


# -- per-patch error and valid-fraction bins -------------------------------------------------------


def test_patch_rmse_per_patch_over_valid_pixels_and_bands() -> None:
    pred = _t([3.0, 0.0, 4.0, 9.0, 1.0, 1.0, 1.0, 1.0], (2, 2, 1, 2))
    target = torch.zeros(2, 2, 1, 2)
    mask = _t([1, 0, 1, 1], (2, 1, 1, 2)).bool()
    rmse = qs.patch_rmse(pred, target, mask)
    # patch 0: valid pixel 0 only, errors 3 (band 0) and 4 (band 1) -> sqrt(25 / 2)
    assert rmse.tolist() == pytest.approx([math.sqrt(12.5), 1.0])
    empty = qs.patch_rmse(pred[:1], target[:1], torch.zeros(1, 1, 1, 2, dtype=bool))
    assert math.isnan(empty.item())


def test_bin_index_half_open_bins_last_closed() -> None:
    f = torch.tensor([0.05, 0.2499, 0.25, 0.5, 0.75, 0.9, 1.0, 0.0, 1.2, -0.1])
    idx = qs.bin_index(f, [0.0, 0.25, 0.75, 1.0])
    assert idx.tolist() == [0, 0, 1, 1, 2, 2, 2, 0, -1, -1]


def test_bin_index_rejects_bad_edges() -> None:
    with pytest.raises(ValueError, match="increasing"):
        qs.bin_index(torch.zeros(2), [0.5, 0.5])
    with pytest.raises(ValueError, match="increasing"):
        qs.bin_index(torch.zeros(2), [0.5])


def test_binned_mean_and_empty_bins() -> None:
    values = torch.tensor([1.0, 3.0, 10.0, 5.0])
    bins = torch.tensor([0, 0, 2, -1])
    assert qs.binned_mean(values, bins, 3) == [2.0, None, 10.0]


def test_bin_counts_uses_the_table_bins() -> None:
    counts = qs.bin_counts(torch.tensor([0.05, 0.1, 0.3, 0.74, 0.75, 1.0, 1.0]))
    assert counts == {"< 25 %": 2, "25-75 %": 2, ">= 75 %": 3}


def test_thin_indices_keeps_all_low_and_every_nth_high() -> None:
    f = torch.tensor([0.9, 0.1, 0.8, 0.95, 0.5, 1.0, 0.76, 0.2])
    # low (< 0.75): 1, 4, 7; high: 0, 2, 3, 5, 6 -> every 2nd: 0, 3, 6
    assert qs.thin_indices(f, 0.75, 2).tolist() == [0, 1, 3, 4, 6, 7]
    assert qs.thin_indices(f, 0.75, 1).tolist() == list(range(8))


def test_example_index_is_the_closest_fraction() -> None:
    assert qs.example_index(torch.tensor([0.9, 0.27, 0.2, 0.05])) == 1


# -- aggregation ----------------------------------------------------------------------------------


def _run(loss: str, seed: int, **metrics: float | None) -> dict:
    return {"loss": loss, "seed": seed, "metrics": metrics}


RUNS = [
    _run("a", 0, x=1.0, y=10.0),
    _run("a", 1, x=3.0, y=None),
    _run("b", 0, x=2.0, y=20.0),
    _run("b", 1, x=6.0, y=30.0),
]


def test_mean_std_is_the_sample_std() -> None:
    assert qs.mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))
    assert qs.mean_std([5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        qs.mean_std([])


def test_aggregate_groups_by_loss_in_order_and_skips_missing() -> None:
    summary = qs.aggregate(RUNS)
    assert list(summary) == ["a", "b"]
    assert summary["a"]["x"] == (2.0, math.sqrt(2.0))
    assert summary["a"]["y"] == (10.0, 0.0)  # the None of seed 1 is skipped
    assert summary["b"]["y"] == (25.0, math.sqrt(50.0))


def test_paired_change_is_per_seed_relative_to_the_reference() -> None:
    change = qs.paired_change(RUNS, "a", "x")
    # b vs a: seed 0: +100 %, seed 1: +100 %
    assert change["b"] == (100.0, 0.0)
    assert change["a"] == (0.0, 0.0)
    # y: seed 1 has no reference value, so only seed 0 pairs
    assert qs.paired_change(RUNS, "a", "y")["b"] == (100.0, 0.0)


def test_lr_factor_warmup_then_cosine_to_the_floor() -> None:
    assert qs.lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert qs.lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert qs.lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert qs.lr_factor(55, 100, 10) == pytest.approx(0.05 + 0.95 * 0.5)
    assert qs.lr_factor(100, 100, 10) == pytest.approx(0.05)


def test_fit_linear_recovers_an_affine_map_from_valid_pixels_only() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    weight = torch.tensor([[2.0, -1.0], [0.5, 3.0]], dtype=torch.float64)  # (C_out, C_in)
    bias = torch.tensor([0.25, -0.5], dtype=torch.float64)
    target = torch.einsum("oi,nihw->nohw", weight, image) + bias.view(1, 2, 1, 1)
    valid = torch.rand(3, 1, 5, 5, generator=g) < 0.6
    target = torch.where(valid, target, 100.0)  # garbage where invalid: must be ignored
    conv = qs.fit_linear(image.float(), target.float(), valid)
    torch.testing.assert_close(conv.weight.view(2, 2).double(), weight, atol=1e-5, rtol=0)
    torch.testing.assert_close(conv.bias.double(), bias, atol=1e-5, rtol=0)
    assert not conv.training


def test_random_dihedral_moves_every_tensor_alike() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    mask = x[:, :1] > 20
    seen = set()
    for _ in range(20):
        a, m = qs.random_dihedral([x, mask], g)
        assert a.shape == x.shape and m.dtype == torch.bool
        assert torch.equal(m, a[:, :1] > 20)  # the mask still marks the same pixels
        assert sorted(a.flatten().tolist()) == sorted(x.flatten().tolist())
        seen.add(tuple(a[0, 0].flatten().tolist()))
    assert len(seen) > 1


# -- report ---------------------------------------------------------------------------------------


def _summary_runs() -> list[dict]:
    runs = []
    for spec_label, scale in (("mse (all pixels)", 2.0), (qs.REFERENCE, 1.0)):
        for seed in (0, 1):
            m = {f"{b} {k}": 1.0 * scale for b in qs.TARGET_BANDS for k in ("psnr", "rmse", "ssim")}
            m["sam"] = 0.1 * scale
            m.update({f"rmse {lab}": 0.1 * scale * (i + 1) for i, (lab, _, _) in
                      enumerate(qs.TABLE_BINS)})  # fmt: skip
            runs.append(_run(spec_label, seed, **m))
    return runs


def test_tables_have_a_row_per_loss_and_paired_changes() -> None:
    runs = _summary_runs()
    summary = qs.aggregate(runs)
    bands = qs.band_table(summary)
    assert bands.count("\n") == 3  # header, rule, two rows
    assert "| mse (all pixels) | 2.00 ± 0.00 | 2.0000 ± 0.0000 | 2.000 ± 0.000 |" in bands
    fair = qs.fairness_table(runs, summary, {lab: 7 for lab, _, _ in qs.TABLE_BINS})
    row = next(line for line in fair.splitlines() if line.startswith("| mse (all pixels)"))
    # low/high = 0.2 / 0.6; low and high are twice the reference's: +100 %
    assert row.endswith("| 0.33 ± 0.00 | 100.0 ± 0.0 | 100.0 ± 0.0 |")
    assert "(7 patches)" in fair
    lines = qs.findings(runs, summary)
    assert any("best `valid_pixel p=0.5 (sqrt)`" in line and "SAM" in line for line in lines)


def test_findings_skip_the_twin_objective_as_runner_up() -> None:
    runs = [
        _run("masked mse (pooled)", 0, sam=0.10),
        _run("valid_pixel p=1", 0, sam=0.11),
        _run("sam_mse", 0, sam=0.30),
    ]
    (line,) = qs.findings(runs, qs.aggregate(runs))
    assert "best `masked mse (pooled)` 0.1000 rad, then `sam_mse` 0.3000" in line
    assert "the gap 0.2000 is more than" in line


# -- smoke run -----------------------------------------------------------------------------------


def _own_section(text: str) -> str | None:
    """This benchmark's block of BENCHMARKS.md (markers included), or None."""
    if qs.BEGIN not in text:
        return None
    return text[text.index(qs.BEGIN) : text.index(qs.END) + len(qs.END)]


@pytest.mark.slow
@pytest.mark.parametrize("data", ["auto", "tests"])
def test_quick_run_writes_json_table_and_figure(tmp_path, data: str) -> None:
    benchmarks = REPO_ROOT / "BENCHMARKS.md"
    before = _own_section(benchmarks.read_text())
    figure_before = qs.FIGURE.read_bytes() if qs.FIGURE.exists() else None
    run_quick_benchmark("quality_satellite", tmp_path, "--data", data)
    result = json.loads((tmp_path / "quality_satellite.json").read_text())
    labels = [spec.label for spec in qs.LOSSES]
    assert list(result["summary"]) == [*labels, qs.LINEAR]  # the reference row comes last
    assert result["reference"]["loss"] == qs.LINEAR
    assert sorted({r["loss"] for r in result["runs"]}) == sorted(labels)
    assert len(result["runs"]) == len(labels)  # one seed
    for run in result["runs"]:
        for band in qs.TARGET_BANDS:
            for key in ("psnr", "rmse", "ssim"):
                assert math.isfinite(run["metrics"][f"{band} {key}"])
        assert math.isfinite(run["metrics"]["sam"])
        assert math.isfinite(run["metrics"][f"rmse {qs.TABLE_BINS[-1][0]}"])
    table = (tmp_path / "quality_satellite.md").read_text()
    for label in [*labels, qs.LINEAR]:
        assert f"| {label} |" in table
    assert (tmp_path / "quality_satellite.png").stat().st_size > 10_000
    # --quick without --write touches neither our BENCHMARKS.md section nor docs/images (other
    # sections may change meanwhile: other benchmarks write theirs)
    assert _own_section(benchmarks.read_text()) == before
    assert (qs.FIGURE.read_bytes() if qs.FIGURE.exists() else None) == figure_before
