"""smp_imbalance.metrics: hand-computed values, torchmetrics parity, masking, accumulation."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchmetrics import Metric
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    spectral_angle_mapper,
    structural_similarity_index_measure,
)
from torchmetrics.utilities.data import dim_zero_sum

from smp_imbalance.metrics import (
    DetectorHitMetrics,
    MaskedPSNR,
    MaskedRMSE,
    MaskedSAM,
    MaskedSSIM,
    MultilabelF1,
    MultilabelMAP,
    band_report,
    cross_fitted_f1,
    detector_hit_metrics,
    masked_psnr,
    masked_rmse,
    masked_sam,
    masked_ssim,
    masked_ssim_map,
    multilabel_f1,
    tune_thresholds,
)
from smp_imbalance.metrics import functional as MF

HYPO = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F64 = torch.float64


# ============================================================================================
# Detector hits
# ============================================================================================


def _frame() -> dict[str, torch.Tensor]:
    """1x1x4x4: 3 true hits (2 retained, 1 with the exact time), 3 noise pixels (2 removed),
    2 false hits (one on a noise pixel), 2 of the 3 true hits kept in the noisy input."""
    target = torch.zeros(1, 1, 4, 4, dtype=F64)
    target[0, 0, 0, 0], target[0, 0, 1, 1], target[0, 0, 2, 2] = 0.5, 0.8, 0.3
    preds = torch.zeros_like(target)
    preds[0, 0, 0, 0] = 0.5  # retained, exact time
    preds[0, 0, 1, 1] = 0.6  # retained, wrong time
    # (2, 2) missed
    preds[0, 0, 0, 3] = 0.9  # noise pixel kept: a false hit
    preds[0, 0, 3, 0] = 0.01  # noise pixel below the threshold: removed
    preds[0, 0, 2, 0] = 0.2  # false hit outside the noise mask
    noise = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    noise[0, 0, 0, 3] = noise[0, 0, 3, 0] = noise[0, 0, 3, 3] = True
    signal = torch.zeros_like(noise)
    signal[0, 0, 0, 0] = signal[0, 0, 1, 1] = True
    return {"preds": preds, "target": target, "noise_mask": noise, "signal_mask": signal}


FRAME_EXPECTED = {
    "signal_retention": 2 / 3,
    "kept_signal_retention": 1.0,
    "noise_removal": 2 / 3,
    "false_hits_per_frame": 2.0,
    "time_recovery": 1 / 3,
    "mse_hit": (0.2**2 + 0.3**2) / 3,
    "mse_nohit": (0.9**2 + 0.01**2 + 0.2**2) / 13,
}


def test_detector_hand_made_frame() -> None:
    out = detector_hit_metrics(**_frame())
    assert set(out) == set(MF.DETECTOR_KEYS)
    assert {k: v.item() for k, v in out.items()} == pytest.approx(FRAME_EXPECTED, rel=1e-6)


def test_detector_metric_class_matches_functional_and_accumulates() -> None:
    metric = DetectorHitMetrics()
    frame = _frame()
    metric.update(**frame)
    metric.update(**frame)  # the same frame twice: ratios unchanged, per-frame count too
    out = metric.compute()
    assert {k: v.item() for k, v in out.items()} == pytest.approx(FRAME_EXPECTED, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 1 / 3),  # default tolerance: half a time bin, 0.6 vs 0.8 is far off
        ({"time_tolerance": 0.25}, 2 / 3),  # |0.6 - 0.8| <= 0.25
        ({"to_time_bin": lambda x: torch.round(x * 10)}, 1 / 3),  # bins 6 vs 8
        ({"to_time_bin": lambda x: torch.round(x)}, 2 / 3),  # bins 1 vs 1
        ({"hit_threshold": 0.55}, 0.0),  # 0.5 is no longer a hit: no time recovered
    ],
)
def test_detector_time_recovery_rules(kwargs: dict, expected: float) -> None:
    out = detector_hit_metrics(**_frame(), **kwargs)
    assert out["time_recovery"].item() == pytest.approx(expected)


def test_detector_hit_threshold_moves_retention() -> None:
    out = detector_hit_metrics(**_frame(), hit_threshold=0.55)
    assert out["signal_retention"].item() == pytest.approx(1 / 3)  # only 0.6 is a hit
    assert out["false_hits_per_frame"].item() == pytest.approx(1.0)  # 0.2 is not a hit now


@pytest.mark.parametrize("zero_division", [0.0, -1.0])
def test_detector_empty_frames_return_zero_division(zero_division: float) -> None:
    zeros = torch.zeros(2, 1, 4, 4)
    out = detector_hit_metrics(zeros, zeros, zero_division=zero_division)
    # No true hit, no mask: every ratio over hits / masks is undefined; frames and no-hits exist.
    for key in ("signal_retention", "kept_signal_retention", "noise_removal", "time_recovery"):
        assert out[key].item() == zero_division
    assert out["mse_hit"].item() == zero_division
    assert out["false_hits_per_frame"].item() == 0.0
    assert out["mse_nohit"].item() == 0.0
    fresh = DetectorHitMetrics(zero_division=zero_division)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics: compute before update
        assert all(v.item() == zero_division for v in fresh.compute().values())


def test_detector_nan_zero_division_is_opt_in() -> None:
    zeros = torch.zeros(1, 1, 4, 4)
    out = detector_hit_metrics(zeros, zeros, zero_division=float("nan"))
    assert math.isnan(out["signal_retention"].item())
    assert out["false_hits_per_frame"].item() == 0.0


def test_detector_accumulation_equals_concatenated_batch() -> None:
    target = (torch.rand(6, 1, 8, 8) > 0.8) * torch.rand(6, 1, 8, 8)
    preds = (target + 0.1 * torch.randn_like(target)).clamp(0, 1)
    noise = torch.rand(6, 1, 8, 8) > 0.9
    split = DetectorHitMetrics(time_tolerance=0.05)
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):
        split.update(preds[sl], target[sl], noise_mask=noise[sl])
    whole = DetectorHitMetrics(time_tolerance=0.05)
    whole.update(preds, target, noise_mask=noise)
    a, b = split.compute(), whole.compute()
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize(
    ("preds", "target", "noise", "error", "match"),
    [
        ((1, 1, 4, 4), (1, 1, 4, 5), None, ValueError, r"\(1, 1, 4, 4\) and \(1, 1, 4, 5\)"),
        ((1, 2, 4, 4), (1, 2, 4, 4), None, ValueError, "one channel"),
        ((1, 1, 4, 4), (1, 1, 4, 4), torch.zeros(1, 1, 4, 4), TypeError, "torch.bool"),
        (
            (1, 1, 4, 4),
            (1, 1, 4, 4),
            torch.zeros(1, 1, 4, 3, dtype=torch.bool),
            ValueError,
            "noise",
        ),
        ((4, 4), (4, 4), None, ValueError, "4 dimensions"),
    ],
)
def test_detector_bad_inputs(preds, target, noise, error, match) -> None:
    with pytest.raises(error, match=match):
        detector_hit_metrics(torch.zeros(preds), torch.zeros(target), noise_mask=noise)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"hit_threshold": 1.0}, ValueError),
        ({"hit_threshold": "0.5"}, TypeError),
        ({"time_tolerance": -0.1}, ValueError),
        ({"to_time_bin": 3}, TypeError),
        ({"zero_division": None}, TypeError),
    ],
)
def test_detector_bad_arguments(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        DetectorHitMetrics(**kwargs)


# ============================================================================================
# Satellite: PSNR / RMSE
# ============================================================================================


def _bands() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1x2x2x2; band 0: errors 0.1, 0, 0 on 3 valid pixels (NaN at the invalid one); band 1:
    errors 0, 0.2, 0 on 3 valid pixels (1e9 at the invalid one)."""
    target = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.2, 0.2], [0.2, 0.2]]]], dtype=F64)
    preds = torch.tensor([[[[0.6, 0.5], [math.nan, 0.5]], [[1e9, 0.4], [0.2, 0.2]]]], dtype=F64)
    mask = torch.tensor([[[[1, 1], [0, 1]], [[0, 1], [1, 1]]]], dtype=torch.bool)
    return preds, target, mask


def test_psnr_rmse_hand_made() -> None:
    preds, target, mask = _bands()
    per_band_mse = torch.tensor([0.01 / 3, 0.04 / 3], dtype=F64)
    torch.testing.assert_close(
        masked_psnr(preds, target, mask, per_band=True), 10 * torch.log10(1 / per_band_mse)
    )
    torch.testing.assert_close(masked_rmse(preds, target, mask, per_band=True), per_band_mse.sqrt())
    pooled = 0.05 / 6
    assert masked_psnr(preds, target, mask).item() == pytest.approx(10 * math.log10(1 / pooled))
    assert masked_psnr(preds, target, mask, data_range=2.0).item() == pytest.approx(
        10 * math.log10(4 / pooled)
    )
    assert masked_rmse(preds, target, mask).item() == pytest.approx(math.sqrt(pooled))


def test_psnr_rmse_classes_hand_made_and_pooling() -> None:
    preds, target, mask = _bands()
    psnr = MaskedPSNR(num_bands=2, per_band=True)
    rmse = MaskedRMSE(num_bands=2, per_band=True)
    pooled = MaskedPSNR()  # no num_bands: one pooled state
    for m in (psnr, rmse, pooled):
        m.update(preds, target, mask)
    assert psnr.compute().tolist() == pytest.approx([10 * math.log10(300), 10 * math.log10(75)])
    assert rmse.compute().tolist() == pytest.approx([math.sqrt(0.01 / 3), math.sqrt(0.04 / 3)])
    assert pooled.compute().item() == pytest.approx(10 * math.log10(120))


def test_psnr_rmse_parity_with_torchmetrics_all_valid() -> None:
    preds, target = torch.rand(3, 4, 9, 7), torch.rand(3, 4, 9, 7)
    valid = torch.ones(3, 1, 9, 7, dtype=torch.bool)
    torch.testing.assert_close(
        masked_psnr(preds, target, valid, data_range=1.0),
        peak_signal_noise_ratio(preds, target, data_range=1.0),
    )
    torch.testing.assert_close(
        masked_rmse(preds, target, valid), (preds - target).square().mean().sqrt()
    )
    # per band = torchmetrics on each band alone
    per_band = masked_psnr(preds, target, valid, per_band=True)
    for c in range(4):
        expected = peak_signal_noise_ratio(preds[:, c], target[:, c], data_range=1.0)
        torch.testing.assert_close(per_band[c], expected)


def test_psnr_perfect_prediction_is_inf_not_nan() -> None:
    x = torch.rand(1, 2, 3, 3)
    valid = torch.ones(1, 2, 3, 3, dtype=torch.bool)
    assert masked_psnr(x, x, valid).item() == math.inf
    assert masked_rmse(x, x, valid).item() == 0.0


# ============================================================================================
# Satellite: SSIM
# ============================================================================================


def _reference_masked_ssim(
    x: np.ndarray, y: np.ndarray, m: np.ndarray, sigma: float, frac: float, dr: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel loops (one image, one band): reflect-indexed window, valid-weighted moments."""
    size = int(3.5 * sigma + 0.5) * 2 + 1
    pad = size // 2
    d = np.arange(-pad, pad + 1)
    g1 = np.exp(-((d / sigma) ** 2) / 2)
    g1 /= g1.sum()
    h, w = x.shape

    def refl(k: int, n: int) -> int:
        return -k if k < 0 else (2 * (n - 1) - k if k > n - 1 else k)

    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    out, counts = np.zeros((h, w)), np.zeros((h, w), dtype=bool)
    for i in range(h):
        for j in range(w):
            wsum = sx = sy = sxx = syy = sxy = 0.0
            for a, di in enumerate(d):
                for b, dj in enumerate(d):
                    r, c = refl(i + di, h), refl(j + dj, w)
                    if not m[r, c]:
                        continue
                    wt = g1[a] * g1[b]
                    wsum += wt
                    sx, sy = sx + wt * x[r, c], sy + wt * y[r, c]
                    sxx, syy, sxy = (
                        sxx + wt * x[r, c] ** 2,
                        syy + wt * y[r, c] ** 2,
                        sxy + wt * x[r, c] * y[r, c],
                    )
            counts[i, j] = m[i, j] and wsum >= frac - 1e-6
            if not counts[i, j]:
                continue
            mx, my = sx / wsum, sy / wsum
            vx, vy = max(sxx / wsum - mx**2, 0), max(syy / wsum - my**2, 0)
            cov = sxy / wsum - mx * my
            out[i, j] = ((2 * mx * my + c1) * (2 * cov + c2)) / (
                (mx**2 + my**2 + c1) * (vx + vy + c2)
            )
    return out, counts


@pytest.mark.parametrize(("frac", "excludes"), [(0.3, False), (0.75, True), (0.95, True)])
def test_ssim_map_matches_direct_loops(frac: float, excludes: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = (
        torch.rand(1, 1, 9, 11, dtype=F64, generator=g),
        torch.rand(1, 1, 9, 11, dtype=F64, generator=g),
    )
    m = torch.rand(1, 1, 9, 11, generator=g) > 0.1
    m[0, 0, :, :4] = False  # a nodata wedge as well as scattered holes
    ssim, counts = masked_ssim_map(x, y, m, sigma=1.0, min_valid_fraction=frac)
    ref, ref_counts = _reference_masked_ssim(
        x[0, 0].numpy(), y[0, 0].numpy(), m[0, 0].numpy(), 1.0, frac
    )
    assert np.array_equal(counts[0, 0].numpy(), ref_counts)
    assert 0 < ref_counts.sum() <= m.sum()
    assert (ref_counts.sum() < m.sum()) == excludes  # the rule excluded valid pixels or not
    np.testing.assert_allclose(ssim[0, 0].numpy(), ref, atol=1e-12)
    expected = ref[ref_counts].mean()
    assert masked_ssim(x, y, m, sigma=1.0, min_valid_fraction=frac).item() == pytest.approx(
        expected
    )


# Tolerances: in float64 both implementations agree to rounding (1e-12; ours convolves with two
# separable 1-D Gaussians and divides by the windowed weight, torchmetrics uses one 2-D kernel).
# In float32 the E[x^2] - mu^2 cancellation amplifies that rounding, hence 1e-5. Borders need no
# slack: both reflect-pad the image.
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("sigma", [1.5, 0.8])
def test_ssim_all_valid_matches_torchmetrics(dtype: torch.dtype, atol: float, sigma: float) -> None:
    preds = torch.rand(2, 3, 24, 19, dtype=dtype)
    target = (preds + 0.2 * torch.randn_like(preds)).clamp(0, 1)
    valid = torch.ones(2, 1, 24, 19, dtype=torch.bool)
    expected, full = structural_similarity_index_measure(
        preds, target, sigma=sigma, data_range=1.0, return_full_image=True, reduction="none"
    )
    ssim_map, counts = masked_ssim_map(preds, target, valid, sigma=sigma)
    assert bool(counts.all())
    torch.testing.assert_close(ssim_map, full, atol=atol, rtol=0)
    torch.testing.assert_close(
        masked_ssim(preds, target, valid, sigma=sigma), expected.mean(), atol=atol, rtol=0
    )
    metric = MaskedSSIM(num_bands=3, sigma=sigma)
    metric.update(preds[:1], target[:1], valid[:1])
    metric.update(preds[1:], target[1:], valid[1:])
    torch.testing.assert_close(
        metric.compute().double(), expected.mean().double(), atol=1e-5, rtol=0
    )


def test_ssim_identical_on_valid_pixels_is_one() -> None:
    target = torch.rand(1, 2, 16, 16, dtype=F64)
    valid = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    valid[..., :, 10:] = False
    preds = torch.where(valid, target, torch.nan)
    per_band = masked_ssim(preds, target, valid, per_band=True)
    torch.testing.assert_close(per_band, torch.ones(2, dtype=F64))


def test_ssim_small_image_error() -> None:
    x = torch.rand(1, 1, 5, 30)
    with pytest.raises(ValueError, match="needs H and W > 5"):
        masked_ssim(x, x, torch.ones(1, 1, 5, 30, dtype=torch.bool))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"sigma": 0.0}, "sigma"), ({"min_valid_fraction": 0.0}, "min_valid")]
)
def test_ssim_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MaskedSSIM(**kwargs)


# ============================================================================================
# Satellite: SAM
# ============================================================================================


def test_sam_hand_made_with_zero_vectors() -> None:
    # five pixels of 2 bands: orthogonal, parallel, one zero, both zero, invalid in band 0
    preds = torch.tensor([[1.0, 2.0, 0.0, 0.0, math.nan], [0.0, 0.0, 0.0, 0.0, 1.0]], dtype=F64)
    target = torch.tensor([[0.0, 3.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]], dtype=F64)
    valid = torch.ones(1, 2, 1, 5, dtype=torch.bool)
    valid[0, 0, 0, 4] = False
    args = (preds.view(1, 2, 1, 5), target.view(1, 2, 1, 5), valid)
    assert masked_sam(*args).item() == pytest.approx(math.pi / 4, abs=1e-12)
    metric = MaskedSAM(num_bands=2)
    metric.update(*args)
    assert metric.compute().item() == pytest.approx(math.pi / 4, abs=1e-6)


def test_sam_matches_torchmetrics_where_defined() -> None:
    preds, target = torch.rand(3, 4, 6, 5) + 0.01, torch.rand(3, 4, 6, 5) + 0.01
    valid = torch.ones(3, 1, 6, 5, dtype=torch.bool)
    torch.testing.assert_close(
        masked_sam(preds, target, valid), spectral_angle_mapper(preds, target)
    )
    # and torchmetrics is NaN where ours is defined
    preds[0, :, 0, 0] = 0
    assert torch.isnan(spectral_angle_mapper(preds, target))
    assert torch.isfinite(masked_sam(preds, target, valid))


def test_sam_needs_two_bands() -> None:
    x = torch.rand(1, 1, 3, 3)
    with pytest.raises(ValueError, match=">= 2 bands"):
        masked_sam(x, x, torch.ones(1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_bands"):
        MaskedSAM(num_bands=1)


# ============================================================================================
# Satellite: shared properties
# ============================================================================================

SATELLITE_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "psnr": lambda p, t, m: masked_psnr(p, t, m, per_band=True),
    "rmse": lambda p, t, m: masked_rmse(p, t, m, per_band=True),
    "ssim": lambda p, t, m: masked_ssim(p, t, m, per_band=True, sigma=0.8),
    "sam": masked_sam,
}

SATELLITE_METRICS: dict[str, Callable[..., Metric]] = {
    "psnr": lambda **kw: MaskedPSNR(num_bands=3, per_band=True, **kw),
    "psnr_pooled": lambda **kw: MaskedPSNR(**kw),
    "rmse": lambda **kw: MaskedRMSE(num_bands=3, per_band=True, **kw),
    "ssim": lambda **kw: MaskedSSIM(num_bands=3, per_band=True, sigma=0.8, **kw),
    "ssim_pooled": lambda **kw: MaskedSSIM(num_bands=3, sigma=0.8, **kw),
    "sam": lambda **kw: MaskedSAM(**kw),
}


@HYPO
@given(
    seed=st.integers(0, 2**31 - 1),
    fill=st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e6]),
    band_mask=st.booleans(),
)
def test_satellite_invariant_to_invalid_pixel_values(
    seed: int, fill: float, band_mask: bool
) -> None:
    g = torch.Generator().manual_seed(seed)
    preds, target = torch.rand(2, 3, 8, 9, generator=g), torch.rand(2, 3, 8, 9, generator=g)
    valid = torch.rand(2, 3 if band_mask else 1, 8, 9, generator=g) > 0.4
    noise_p = torch.randn(2, 3, 8, 9, generator=g) * 100
    preds2 = torch.where(valid, preds, torch.where(noise_p > 0, fill, noise_p))
    target2 = torch.where(valid, target, fill)
    for name, fn in SATELLITE_FUNCTIONS.items():
        a, b = fn(preds, target, valid), fn(preds2, target2, valid)
        assert torch.equal(a, b), name
        assert not torch.isnan(b).any(), name


@pytest.mark.parametrize("name", sorted(SATELLITE_FUNCTIONS))
def test_satellite_all_invalid_is_zero_division_not_nan(name: str) -> None:
    preds = torch.full((2, 3, 8, 8), math.nan)
    invalid = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    out = SATELLITE_FUNCTIONS[name](preds, preds, invalid)
    assert torch.equal(out, torch.zeros_like(out))


@pytest.mark.parametrize("name", sorted(SATELLITE_METRICS))
def test_satellite_metric_all_invalid_and_fresh(name: str) -> None:
    metric = SATELLITE_METRICS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics: compute before update
        fresh = metric.compute()
    assert not torch.isnan(fresh).any() and bool((fresh == 0).all())
    metric.reset()
    metric.update(
        torch.full((1, 3, 8, 8), math.nan),
        torch.rand(1, 3, 8, 8),
        torch.zeros(1, 3, 8, 8, dtype=torch.bool),
    )
    out = metric.compute()
    assert not torch.isnan(out).any() and bool((out == 0).all())
    nan_metric = SATELLITE_METRICS[name](zero_division=math.nan)  # opt-in NaN
    nan_metric.update(
        torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.bool)
    )
    assert torch.isnan(nan_metric.compute()).all()


@pytest.mark.parametrize("name", sorted(SATELLITE_METRICS))
def test_satellite_accumulation_equals_concatenated_batch(name: str) -> None:
    preds, target = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    valid = torch.rand(5, 1, 8, 8) > 0.3
    valid[2] = False  # one batch entirely nodata
    split, whole = SATELLITE_METRICS[name](), SATELLITE_METRICS[name]()
    for sl in (slice(0, 2), slice(2, 3), slice(3, 5)):
        split.update(preds[sl], target[sl], valid[sl])
    whole.update(preds, target, valid)
    torch.testing.assert_close(split.compute(), whole.compute())


def test_satellite_class_equals_functional() -> None:
    preds, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    valid = torch.rand(2, 3, 8, 8) > 0.3
    for name in ("psnr", "rmse", "ssim", "sam"):
        metric = SATELLITE_METRICS[name]()
        metric.update(preds, target, valid)
        torch.testing.assert_close(
            metric.compute(), SATELLITE_FUNCTIONS[name](preds, target, valid)
        )


@pytest.mark.parametrize(
    ("preds", "target", "mask", "error", "match"),
    [
        (
            (1, 3, 8, 8),
            (1, 3, 8, 9),
            (1, 1, 8, 8),
            ValueError,
            r"\(1, 3, 8, 8\) and \(1, 3, 8, 9\)",
        ),
        ((1, 3, 8, 8), (1, 3, 8, 8), (1, 2, 8, 8), ValueError, "valid_mask must have shape"),
        ((1, 3, 8, 8), (1, 3, 8, 8), (1, 8, 8), ValueError, "valid_mask must have shape"),
        ((3, 8, 8), (3, 8, 8), (1, 8, 8), ValueError, "4 dimensions"),
    ],
)
@pytest.mark.parametrize("name", ["psnr", "rmse", "ssim", "sam"])
def test_satellite_bad_shapes(name, preds, target, mask, error, match) -> None:
    with pytest.raises(error, match=match):
        SATELLITE_FUNCTIONS[name](
            torch.rand(preds), torch.rand(target), torch.ones(mask, dtype=torch.bool)
        )


@pytest.mark.parametrize("name", ["psnr", "rmse", "ssim", "sam"])
def test_satellite_bad_types_and_band_count(name: str) -> None:
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(TypeError, match=r"torch\.bool"):
        SATELLITE_FUNCTIONS[name](x, x, torch.ones(1, 1, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        SATELLITE_FUNCTIONS[name](x, (x * 10).long(), torch.ones(1, 1, 8, 8, dtype=torch.bool))
    metric = SATELLITE_METRICS[name]() if name != "sam" else MaskedSAM(num_bands=3)
    y = torch.rand(1, 4, 8, 8)
    with pytest.raises(ValueError, match="expected 3 bands"):
        metric.update(y, y, torch.ones(1, 1, 8, 8, dtype=torch.bool))


def test_band_metric_constructor_errors() -> None:
    with pytest.raises(ValueError, match="per_band=True needs num_bands"):
        MaskedPSNR(per_band=True)
    with pytest.raises(ValueError, match="num_bands"):
        MaskedRMSE(num_bands=0)
    with pytest.raises(ValueError, match="data_range"):
        MaskedPSNR(data_range=0.0)


def test_band_report_layout() -> None:
    values = {
        "psnr": torch.tensor([38.0, 37.5, 37.25]),
        "rmse": torch.tensor([0.0125, 0.013, 0.0135]),
        "sam": torch.tensor(0.0425),
    }
    report = band_report(values, ["B02", "B03", "B04"])
    assert report == {
        "B02": {"psnr": 38.0, "rmse": pytest.approx(0.0125), "sam": pytest.approx(0.0425)},
        "B03": {"psnr": 37.5, "rmse": pytest.approx(0.013), "sam": pytest.approx(0.0425)},
        "B04": {"psnr": 37.25, "rmse": pytest.approx(0.0135), "sam": pytest.approx(0.0425)},
    }
    assert all(type(v) is float for band in report.values() for v in band.values())
    with pytest.raises(ValueError, match="one value per band"):
        band_report(values, ["B02", "B03"])
    with pytest.raises(ValueError, match="unique"):
        band_report({}, ["B02", "B02"])


# ============================================================================================
# Multi-label F1, thresholds, mAP
# ============================================================================================

PROBS = torch.tensor([[0.9, 0.2, 0.1], [0.6, 0.7, 0.2], [0.3, 0.8, 0.4], [0.1, 0.4, 0.3]])
TARGET = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
# at 0.5: label 0 TP 1 FP 1 FN 1 -> 1/2; label 1 perfect -> 1; label 2 absent (no target, no pred)


@pytest.mark.parametrize(
    ("threshold", "average", "ignore_absent", "expected"),
    [
        (0.5, "none", False, [0.5, 1.0, 0.0]),
        (0.5, "macro", False, 0.5),
        (0.5, "macro", True, 0.75),
        # per label: label 0 predicts all -> 2 TP 2 FP -> 2/3; label 2 predicts 0.4 -> FP -> 0
        (torch.tensor([0.05, 0.5, 0.35]), "none", False, [2 / 3, 1.0, 0.0]),
        (torch.tensor([0.05, 0.5, 0.35]), "macro", True, 5 / 9),  # label 2 is not absent now
    ],
)
def test_f1_hand_made(threshold, average, ignore_absent, expected) -> None:
    out = multilabel_f1(PROBS, TARGET, threshold, average=average, ignore_absent=ignore_absent)
    assert out.tolist() == pytest.approx(expected)
    metric = MultilabelF1(3, threshold, average=average, ignore_absent=ignore_absent)
    metric.update(PROBS[:1], TARGET[:1])
    metric.update(PROBS[1:], TARGET[1:])
    assert metric.compute().tolist() == pytest.approx(expected)


def test_f1_logits_float_and_bool_targets() -> None:
    expected = multilabel_f1(PROBS, TARGET, average="none")
    logits = torch.logit(PROBS.double()).float()
    torch.testing.assert_close(
        multilabel_f1(logits, TARGET, average="none", from_logits=True), expected
    )
    torch.testing.assert_close(multilabel_f1(PROBS, TARGET.float(), average="none"), expected)
    torch.testing.assert_close(multilabel_f1(PROBS, TARGET.bool(), average="none"), expected)


def test_f1_all_absent() -> None:
    probs, target = torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.long)
    assert multilabel_f1(probs, target, ignore_absent=True).item() == 0.0
    assert multilabel_f1(probs, target, ignore_absent=True, zero_division=1.0).item() == 1.0
    assert torch.equal(multilabel_f1(probs, target, average="none"), torch.zeros(3))


@pytest.mark.parametrize("average", ["macro", "none"])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_f1_parity_with_torchmetrics(average: str, threshold: float) -> None:
    probs = torch.rand(40, 6)
    target = (torch.rand(40, 6) > 0.7).long()
    target[:, 5] = 0  # a label absent from the split
    probs[:, 5] = 0.0
    ours = MultilabelF1(6, threshold, average=average)
    theirs = MultilabelF1Score(6, threshold=threshold, average=average)
    for sl in (slice(0, 15), slice(15, 40)):
        ours.update(probs[sl], target[sl])
        theirs.update(probs[sl], target[sl])
    torch.testing.assert_close(ours.compute(), theirs.compute())


def test_tune_thresholds_hand_made() -> None:
    grid = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    # label 0: 0.1 and 0.2 both give F1 0.8 -> the smaller; label 1: 0.4..0.6 perfect -> 0.4;
    # label 2 has no positive: nothing predicted from 0.4 on scores 1 -> 0.4
    thr = tune_thresholds(PROBS, TARGET, grid)
    torch.testing.assert_close(thr, torch.tensor([0.1, 0.4, 0.4]))
    assert multilabel_f1(PROBS, TARGET, thr, average="none").tolist() == pytest.approx(
        [0.8, 1.0, 0.0]
    )


def test_tune_thresholds_equals_grid_loop_and_chunking() -> None:
    probs = torch.rand(50, 5)
    target = (torch.rand(50, 5) > 0.6).long()
    target[0] = 1  # every label has a positive
    grid = torch.linspace(0.05, 0.95, 19)
    f1 = torch.stack([multilabel_f1(probs, target, float(g), average="none") for g in grid])
    expected = grid[f1.argmax(0)]
    torch.testing.assert_close(tune_thresholds(probs, target, grid), expected)
    torch.testing.assert_close(tune_thresholds(probs, target, grid, max_elements=300), expected)
    tuned = multilabel_f1(probs, target, expected, average="none")
    assert bool((tuned >= f1.max(0).values - 1e-6).all())
    logits = torch.logit(probs.double()).float()
    torch.testing.assert_close(tune_thresholds(logits, target, grid, from_logits=True), expected)


def test_tune_thresholds_default_grid() -> None:
    thr = tune_thresholds(PROBS, TARGET)
    assert thr.shape == (3,)
    assert bool(((thr >= 0.01) & (thr <= 0.99)).all())


def _reference_groups(probs, target, folds, seed):
    """The row groups of cross_fitted_f1, from its docstring: rows sorted by (label vector,
    probabilities) -- as seeded random projections --, permuted, cut in ``folds``."""
    n, c = probs.shape
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(2, c, generator=gen, dtype=torch.float64)
    by_probs = (probs.double() @ projection[0]).tolist()
    by_labels = ((target > 0.5).double() @ projection[1]).tolist()
    canonical = sorted(range(n), key=lambda r: (by_labels[r], by_probs[r]))
    order = [canonical[i] for i in torch.randperm(n, generator=gen).tolist()]
    size, extra = divmod(n, folds)
    groups, start = [], 0
    for i in range(folds):
        stop = start + size + (i < extra)
        groups.append(order[start:stop])
        start = stop
    return groups


def _cross_fitted_reference(probs, target, folds, seed, grid):
    """From the definition: rows of each group predicted with thresholds tuned on the others
    (a loop over rows and labels), F1 from the pooled counts."""
    groups = _reference_groups(probs, target, folds, seed)
    tp, fp, fn = [0] * probs.shape[1], [0] * probs.shape[1], [0] * probs.shape[1]
    for i, held in enumerate(groups):
        rest = [r for j, g in enumerate(groups) if j != i for r in g]
        thr = tune_thresholds(probs[rest], target[rest], grid)
        for r in held:
            for c in range(probs.shape[1]):
                pred, pos = bool(probs[r, c] > thr[c]), bool(target[r, c])
                tp[c] += pred and pos
                fp[c] += pred and not pos
                fn[c] += pos and not pred
    return [
        2 * a / (2 * a + b + d) if 2 * a + b + d else 0.0
        for a, b, d in zip(tp, fp, fn, strict=True)
    ]


@pytest.mark.parametrize(("n", "folds", "seed"), [(40, 2, 0), (41, 3, 7), (9, 5, 1)])
def test_cross_fitted_f1_equals_definition(n: int, folds: int, seed: int) -> None:
    g = torch.Generator().manual_seed(n)
    probs = torch.rand(n, 4, generator=g)
    target = (torch.rand(n, 4, generator=g) < torch.tensor([0.5, 0.2, 0.05, 0.0])).long()
    grid = torch.linspace(0.05, 0.95, 19)
    expected = _cross_fitted_reference(probs, target, folds, seed, grid)
    per_label = cross_fitted_f1(probs, target, folds, seed, average="none", grid=grid)
    assert per_label.tolist() == pytest.approx(expected)
    macro = cross_fitted_f1(probs, target, folds, seed, grid=grid)
    assert float(macro) == pytest.approx(sum(expected) / 4)


def test_cross_fitted_f1_hand_made() -> None:
    # Rows 0, 1 positive (0.9, 0.3), rows 2, 3 negative (0.6, 0.2), split into folds {0, 1} and
    # {2, 3} (asserted below). Tuned on {2, 3} (no positive): 0.8, nothing predicted there;
    # scores rows 0, 1 as TP, FN. Tuned on {0, 1}: 0.1; scores rows 2, 3 as FP, FP. Pooled:
    # TP 1, FP 2, FN 1 -> F1 = 2 / 5. In sample, 0.1 gives 2 * 2 / (4 + 2) = 2/3.
    probs = torch.tensor([[0.9], [0.3], [0.6], [0.2]])
    target = torch.tensor([[1], [1], [0], [0]])
    grid = torch.tensor([0.1, 0.5, 0.8])
    seed = next(s for s in range(100) if _folds_of(probs, target, 2, s) == [{0, 1}, {2, 3}])
    assert cross_fitted_f1(probs, target, seed=seed, grid=grid).item() == pytest.approx(0.4)
    in_sample = multilabel_f1(probs, target, tune_thresholds(probs, target, grid))
    assert in_sample.item() == pytest.approx(2 / 3)


def _folds_of(probs, target, folds, seed):
    return sorted((set(g) for g in _reference_groups(probs, target, folds, seed)), key=min)


def test_cross_fitted_f1_ignores_row_order_and_keeps_label_groups() -> None:
    g = torch.Generator().manual_seed(5)
    probs = torch.rand(37, 6, generator=g)
    target = (torch.rand(37, 6, generator=g) < 0.2).long()
    shuffled = torch.randperm(37, generator=g)
    torch.testing.assert_close(
        cross_fitted_f1(probs[shuffled], target[shuffled], average="none"),
        cross_fitted_f1(probs, target, average="none"),
    )

    # another epoch (new probabilities): each group holds the same label vectors as before
    def label_sets(p):
        return [sorted(map(tuple, target[g].tolist())) for g in _reference_groups(p, target, 2, 0)]

    assert label_sets(torch.rand(37, 6, generator=g)) == label_sets(probs)


def test_cross_fitted_f1_is_below_in_sample_on_noise() -> None:
    """Pure noise: the in-sample tuned F1 finds structure that is not there; cross-fitting does
    not (averaged over labels it is lower)."""
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(400, 20, generator=g)
    target = (torch.rand(400, 20, generator=g) < 0.03).long()
    in_sample = multilabel_f1(probs, target, tune_thresholds(probs, target))
    assert float(cross_fitted_f1(probs, target)) < float(in_sample) - 0.02


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"folds": 1}, "folds must be an int >= 2"), ({"folds": 2.0}, "folds must be an int")],
)
def test_cross_fitted_f1_rejects_bad_folds(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cross_fitted_f1(PROBS, TARGET, **kwargs)


def test_cross_fitted_f1_needs_a_row_per_fold() -> None:
    with pytest.raises(ValueError, match="at least folds=5 rows, got 4"):
        cross_fitted_f1(PROBS, TARGET, folds=5)


def test_map_parity_and_absent_labels() -> None:
    probs = torch.rand(30, 4)
    target = (torch.rand(30, 4) > 0.5).long()
    target[0, :3] = 1
    theirs_none = MultilabelAveragePrecision(4, average="none")
    theirs_none.update(probs, target)
    ours = MultilabelMAP(4, average="none")
    ours.update(probs[:10], target[:10])
    ours.update(probs[10:], target[10:])
    torch.testing.assert_close(ours.compute(), theirs_none.compute())

    target[:, 3] = 0  # label 3 absent from the split
    with pytest.warns(UserWarning, match="No positive samples"):  # torchmetrics warns, scores 0
        theirs = MultilabelAveragePrecision(4, average="macro")
        theirs.update(probs, target)
        theirs_macro = theirs.compute()
    per_label = MultilabelAveragePrecision(4, average="none")
    per_label.update(probs, target)
    with pytest.warns(UserWarning, match="No positive samples"):
        ap = per_label.compute()
    assert ap[3].item() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ours handles the case: no warning escapes
        keep = MultilabelMAP(4, ignore_absent=False)
        keep.update(probs, target)
        torch.testing.assert_close(keep.compute(), theirs_macro)
        drop = MultilabelMAP(4, ignore_absent=True)
        drop.update(probs, target)
        torch.testing.assert_close(drop.compute(), ap[:3].mean())
        none = MultilabelMAP(4, average="none", zero_division=-1.0)
        none.update(probs, target)
        assert none.compute()[3].item() == -1.0


def test_map_hand_made_and_logits() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.3, 0.6], [0.2, 0.2]])
    target = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    # label 0: ranking 0.9+, 0.8-, 0.3+ -> AP = (1 + 2/3) / 2; label 1: 0.7+, 0.6+ -> AP = 1
    expected = [(1 + 2 / 3) / 2, 1.0]
    ours = MultilabelMAP(2, average="none", from_logits=True)
    ours.update(torch.logit(probs), target)
    assert ours.compute().tolist() == pytest.approx(expected)
    binned = MultilabelMAP(2, thresholds=101)
    binned.update(probs, target)
    assert binned.compute().item() == pytest.approx(sum(expected) / 2, abs=1e-6)


def test_map_fresh_returns_zero_division() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics: compute before update
        assert MultilabelMAP(3).compute().item() == 0.0
        assert torch.equal(MultilabelMAP(3, average="none").compute(), torch.zeros(3))


@pytest.mark.parametrize(
    ("preds", "target", "error", "match"),
    [
        (
            torch.rand(4, 3),
            torch.zeros(4, 2, dtype=torch.long),
            ValueError,
            r"\(4, 3\) and \(4, 2\)",
        ),
        (torch.rand(4, 3, 1), torch.zeros(4, 3, 1, dtype=torch.long), ValueError, "2 dimensions"),
        (torch.ones(4, 3, dtype=torch.long), torch.zeros(4, 3), TypeError, "floating-point"),
    ],
)
def test_multilabel_bad_inputs(preds, target, error, match) -> None:
    with pytest.raises(error, match=match):
        multilabel_f1(preds, target)
    with pytest.raises(error, match=match):
        tune_thresholds(preds, target)
    with pytest.raises(error, match=match):
        MultilabelMAP(preds.shape[1]).update(preds, target)


def test_multilabel_bad_arguments() -> None:
    with pytest.raises(ValueError, match="expected 4 labels"):
        MultilabelF1(4).update(torch.rand(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must have shape \(3,\)"):
        MultilabelF1(3, threshold=torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MultilabelF1(3, threshold=1.5)
    with pytest.raises(ValueError, match="average"):
        MultilabelF1(3, average="micro")
    with pytest.raises(ValueError, match="num_labels"):
        MultilabelF1(0)
    with pytest.raises(ValueError, match="grid"):
        tune_thresholds(PROBS, TARGET, grid=[])


# ============================================================================================
# Engine contracts: tensor states summed across processes; update never syncs with the host
# ============================================================================================

ALL_METRICS: dict[str, Callable[[], Metric]] = {
    **SATELLITE_METRICS,
    "detector": DetectorHitMetrics,
    "f1": lambda: MultilabelF1(3, threshold=torch.tensor([0.2, 0.5, 0.7])),
    "map_binned": lambda: MultilabelMAP(3, thresholds=11),
}


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
def test_states_are_tensors_reduced_by_sum(name: str) -> None:
    metric = ALL_METRICS[name]()
    assert metric._defaults
    for state, default in metric._defaults.items():
        assert isinstance(default, torch.Tensor), state
        assert metric._reductions[state] is dim_zero_sum, state


def test_map_exact_keeps_torchmetrics_cat_states() -> None:
    metric = MultilabelMAP(3)
    assert metric._reductions["positives"] is dim_zero_sum
    assert isinstance(metric._defaults["preds"], list)  # torchmetrics' exact-AP states


def _meta_batch(name: str) -> tuple[torch.Tensor, ...]:
    if name == "detector":
        return (torch.rand(2, 1, 8, 8, device="meta"),) * 2
    if name == "f1":
        return torch.rand(4, 3, device="meta"), torch.ones(4, 3, dtype=torch.long, device="meta")
    return (torch.rand(2, 3, 8, 8, device="meta"),) * 2 + (
        torch.ones(2, 1, 8, 8, dtype=torch.bool, device="meta"),
    )


@pytest.mark.parametrize("name", sorted(set(ALL_METRICS) - {"map_binned"}))
def test_update_runs_on_meta_tensors(name: str) -> None:
    """Meta tensors carry no data: ``.item()``, ``.cpu()`` values, ``nonzero`` and boolean indexing
    all fail on them, so an update that runs on meta makes no host sync."""
    metric = ALL_METRICS[name]().to("meta")
    if name == "detector":
        mask = torch.ones(2, 1, 8, 8, dtype=torch.bool, device="meta")
        metric.update(*_meta_batch(name), noise_mask=mask, signal_mask=mask)
    else:
        metric.update(*_meta_batch(name))
    for state in metric._defaults:
        assert getattr(metric, state).device.type == "meta"
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.ones(3, device="meta").nonzero()  # the probe itself is meaningful


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_satellite_low_precision_inputs_are_summed_in_float32(dtype: torch.dtype) -> None:
    preds, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    valid = torch.rand(2, 1, 8, 8) > 0.3
    p16, t16 = preds.to(dtype), target.to(dtype)
    for name, fn in SATELLITE_FUNCTIONS.items():
        out = fn(p16, t16, valid)
        assert out.dtype == torch.float32, name
        torch.testing.assert_close(out, fn(p16.float(), t16.float(), valid), msg=name)


@pytest.mark.parametrize("name", ["detector", "psnr", "ssim", "f1"])
def test_forward_returns_batch_value_and_accumulates(name: str) -> None:
    kwargs: dict[str, torch.Tensor] = {}
    if name == "detector":
        target = (torch.rand(4, 1, 8, 8) > 0.8) * torch.rand(4, 1, 8, 8)
        args = (torch.rand(4, 1, 8, 8), target)
        kwargs = {"noise_mask": torch.rand(4, 1, 8, 8) > 0.8}
    elif name == "f1":
        args = (torch.rand(4, 3), (torch.rand(4, 3) > 0.5).long())
    else:
        args = (torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8), torch.rand(4, 1, 8, 8) > 0.3)

    def part(sl: slice) -> tuple[tuple, dict]:
        return tuple(a[sl] for a in args), {k: v[sl] for k, v in kwargs.items()}

    (a1, k1), (a2, k2) = part(slice(0, 2)), part(slice(2, 4))
    metric, alone, whole = ALL_METRICS[name](), ALL_METRICS[name](), ALL_METRICS[name]()
    batch_value = metric(*a1, **k1)
    alone.update(*a1, **k1)
    metric(*a2, **k2)
    whole.update(*args, **kwargs)
    torch.testing.assert_close(batch_value, alone.compute())
    torch.testing.assert_close(metric.compute(), whole.compute())
