"""Valid-pixel weighted loss, spectral angle (SAM) and SAM + MSE.

The reference implementations below are written from the formula (seed 002, as specified in the
issue) as plain Python loops with boolean indexing, in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from smp_imbalance import create_loss
from smp_imbalance.losses._compile import FusedFallbackWarning
from smp_imbalance.losses.functional import masked
from smp_imbalance.losses.functional.masked import (
    sam_mse_loss,
    spectral_angle,
    spectral_angle_loss,
    valid_pixel_loss,
)
from smp_imbalance.losses.valid_pixel import (
    SAMMSELoss,
    SpectralAngleLoss,
    ValidPixelWeightedLoss,
)

HYPOTHESIS = settings(max_examples=25, deadline=None)

# --------------------------------------------------------------------------------------------
# References from the formula
# --------------------------------------------------------------------------------------------

REF_BASES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": lambda p, t: (p - t) ** 2,
    "l1": lambda p, t: (p - t).abs(),
    "huber": lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.3),
    "charbonnier": lambda p, t: torch.sqrt((p - t) ** 2 + 0.1**2),
}
BASE_KWARGS = {"mse": {}, "l1": {}, "huber": {"delta": 0.3}, "charbonnier": {"eps": 0.1}}


def log_cosh(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A callable base loss (elementwise, same shape)."""
    return torch.log(torch.cosh(p - t))


def reduce_groups(per_sample: list[list[tuple[float, torch.Tensor]]], reduction: str):
    """``per_sample[n]`` = [(w_g, L_g), ...] of the non-empty groups of sample n."""
    if reduction == "none":
        out = []
        for groups in per_sample:
            wsum = sum(w for w, _ in groups)
            out.append(sum(w * loss for w, loss in groups) / wsum if groups else torch.zeros(()))
        return torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in out])
    groups = [g for sample in per_sample for g in sample]
    if not groups:
        return torch.zeros((), dtype=torch.float64)
    total = sum(w * loss for w, loss in groups)
    return total if reduction == "sum" else total / sum(w for w, _ in groups)


def reference_valid_pixel(
    y_pred, y_true, mask=None, *, base=REF_BASES["mse"], power=0.5, granularity="channel",
    reduction="mean", threshold=None,
):  # fmt: skip
    p, t = y_pred.double(), y_true.double()
    if mask is None:  # no value rule unless a threshold is given
        mask = torch.isfinite(t) if threshold is None else (t > threshold) & torch.isfinite(t)
    mask = mask.expand(t.shape)
    per_sample = []
    for n in range(t.shape[0]):
        if granularity == "channel":
            items = [(p[n, c], t[n, c], mask[n, c]) for c in range(t.shape[1])]
        else:
            items = [(p[n], t[n], mask[n])]
        groups = []
        for pg, tg, mg in items:
            k = int(mg.sum())
            if k == 0:
                continue
            groups.append(((k / mg.numel()) ** power, base(pg[mg], tg[mg]).mean()))
        per_sample.append(groups)
    return reduce_groups(per_sample, reduction)


def reference_sam(y_pred, y_true, mask=None, *, power=0.5, reduction="mean"):
    p, t = y_pred.double(), y_true.double()
    if mask is None:
        mask = torch.isfinite(t)
    pixel_valid = mask.expand(t.shape).all(1)  # (N, *)
    per_sample = []
    for n in range(t.shape[0]):
        m = pixel_valid[n]
        k = int(m.sum())
        if k == 0:
            per_sample.append([])
            continue
        pv, tv = p[n][:, m], t[n][:, m]  # (C, k)
        cos = (pv * tv).sum(0) / (pv.norm(dim=0) * tv.norm(dim=0))
        angle = torch.arccos(cos.clamp(-1, 1)).mean()
        per_sample.append([((k / m.numel()) ** power, angle)])
    return reduce_groups(per_sample, reduction)


def make_inputs(
    shape=(3, 2, 4, 5), invalid=0.3, seed=0, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets in (0.05, 1.05) with ``invalid`` of them set to 0 (nodata); sample 0, channel 1
    entirely invalid; a noisy prediction."""
    gen = torch.Generator().manual_seed(seed)
    y_true = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.05
    y_true[torch.rand(shape, generator=gen) < invalid] = 0.0
    if shape[1] > 1:
        y_true[0, 1] = 0.0
    y_pred = y_true + 0.5 * torch.randn(shape, generator=gen, dtype=torch.float64)
    return y_pred.to(dtype), y_true.to(dtype)


def assert_attached_zero(loss: torch.Tensor, y_pred: torch.Tensor) -> None:
    assert isinstance(loss, torch.Tensor)
    assert loss.requires_grad
    torch.testing.assert_close(loss.detach(), torch.zeros_like(loss))
    (grad,) = torch.autograd.grad(loss.sum(), y_pred)
    assert torch.equal(grad, torch.zeros_like(grad))


# --------------------------------------------------------------------------------------------
# valid_pixel: exact values and parity with the reference
# --------------------------------------------------------------------------------------------


def test_exact_value_by_hand() -> None:
    # One sample, two channels of 4 pixels. Channel 0: 4 valid, errors 1,1,1,1 -> L=1, w=1.
    # Channel 1: 1 valid (three nodata zeros), error 2 -> L=4, w=sqrt(1/4)=0.5.
    y_true = torch.tensor([[[[1.0, 1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0, 0.0]]]])
    y_pred = y_true + torch.tensor([[[[1.0, -1.0, 1.0, -1.0]], [[2.0, 9.0, 9.0, 9.0]]]])
    expected = (1.0 * 1.0 + 0.5 * 4.0) / 1.5
    kw = {"threshold": 0.0}
    torch.testing.assert_close(valid_pixel_loss(y_pred, y_true, **kw), torch.tensor(expected))
    torch.testing.assert_close(
        valid_pixel_loss(y_pred, y_true, reduction="sum", **kw), torch.tensor(3.0)
    )
    # granularity="sample": 5 valid of 8, mean squared error (4 * 1 + 4) / 5; a single group.
    torch.testing.assert_close(
        valid_pixel_loss(y_pred, y_true, granularity="sample", **kw), torch.tensor(8.0 / 5.0)
    )
    torch.testing.assert_close(
        valid_pixel_loss(y_pred, y_true, granularity="sample", reduction="sum", **kw),
        torch.tensor(math.sqrt(5 / 8) * 8 / 5),
    )


@pytest.mark.parametrize(
    ("base", "torch_loss"),
    [
        ("mse", lambda p, t: F.mse_loss(p, t, reduction="none")),
        ("l1", lambda p, t: F.l1_loss(p, t, reduction="none")),
        ("huber", lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.3)),
        ("charbonnier", lambda p, t: torch.sqrt((p - t) ** 2 + 0.1**2)),
    ],
)
def test_elementwise_bases_match_torch(base, torch_loss) -> None:
    p, t = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    out = masked.elementwise_loss(p, t, base, delta=0.3, eps=0.1)
    torch.testing.assert_close(out, torch_loss(p, t))
    with pytest.raises(ValueError, match="base"):
        masked.elementwise_loss(p, t, "smooth_l1")


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("granularity", ["channel", "sample"])
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 1.7])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("base", [*REF_BASES, "callable"])
def test_parity_with_reference_loop(granularity, power, reduction, base, fused) -> None:
    y_pred, y_true = make_inputs()
    if base == "callable":
        ours_base, ref_base, kwargs = log_cosh, log_cosh, {}
    else:
        ours_base, ref_base, kwargs = base, REF_BASES[base], BASE_KWARGS[base]
    loss = ValidPixelWeightedLoss(
        ours_base,
        weight_power=power,
        granularity=granularity,
        reduction=reduction,
        fused=fused,
        **kwargs,
    )
    expected = reference_valid_pixel(
        y_pred, y_true, base=ref_base, power=power, granularity=granularity, reduction=reduction
    )
    out = loss(y_pred, y_true)
    assert out.shape == ((3,) if reduction == "none" else ())
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("granularity", ["channel", "sample"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mask_shape", [(3, 1, 4, 5), (3, 2, 4, 5), (1, 2, 1, 5)])
def test_parity_with_explicit_mask(granularity, reduction, mask_shape) -> None:
    y_pred, y_true = make_inputs(invalid=0.0)
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(mask_shape, generator=gen) > 0.4
    mask[(0,) * len(mask_shape)] = True
    out = valid_pixel_loss(y_pred, y_true, mask, granularity=granularity, reduction=reduction)
    expected = reference_valid_pixel(
        y_pred, y_true, mask, granularity=granularity, reduction=reduction
    )
    torch.testing.assert_close(out, expected)


def test_valid_mask_overrides_the_threshold_rule() -> None:
    # Zeros in the target are valid when the mask says so; positive targets invalid likewise.
    y_true = torch.tensor([[[[0.0, 2.0]]]])
    y_pred = torch.tensor([[[[1.0, 5.0]]]])
    mask = torch.tensor([[[[True, False]]]])
    torch.testing.assert_close(valid_pixel_loss(y_pred, y_true, mask), torch.tensor(1.0))
    torch.testing.assert_close(
        valid_pixel_loss(y_pred, y_true, mask, threshold=0.0), torch.tensor(1.0)
    )
    torch.testing.assert_close(valid_pixel_loss(y_pred, y_true, threshold=0.0), torch.tensor(9.0))


def test_none_reduction_is_per_sample_weighted_mean() -> None:
    y_pred, y_true = make_inputs()
    none = valid_pixel_loss(y_pred, y_true, reduction="none")
    for n in range(3):
        torch.testing.assert_close(none[n], valid_pixel_loss(y_pred[n : n + 1], y_true[n : n + 1]))


# --------------------------------------------------------------------------------------------
# Validity rule
# --------------------------------------------------------------------------------------------


def test_threshold_is_strict_and_nodata_zero_is_invalid() -> None:
    y_true = torch.tensor([[[[0.0, 0.5, 1.0, 2.0]]]])
    y_pred = torch.zeros_like(y_true)
    # threshold 0: 0 invalid, others valid (squared errors 0.25, 1, 4)
    torch.testing.assert_close(
        valid_pixel_loss(y_pred, y_true, threshold=0.0), torch.tensor(5.25 / 3)
    )
    # threshold 1: only 2.0 is strictly greater
    torch.testing.assert_close(valid_pixel_loss(y_pred, y_true, threshold=1.0), torch.tensor(4.0))
    torch.testing.assert_close(
        ValidPixelWeightedLoss(threshold=-1.0)(y_pred, y_true), torch.tensor(5.25 / 4)
    )


@pytest.mark.parametrize(
    "make", [ValidPixelWeightedLoss, SpectralAngleLoss, SAMMSELoss], ids=lambda c: c.__name__
)
def test_no_value_rule_by_default(make) -> None:
    """Without threshold= a standardised target keeps every finite pixel, negatives and zeros
    included (the old default silently dropped y_true <= 0)."""
    gen = torch.Generator().manual_seed(0)
    y_pred, y_true = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    y_true[0, :, 0, 0] = 0.0
    everything = torch.ones(1, 1, 1, 1, dtype=torch.bool).expand(2, 1, 4, 4)
    torch.testing.assert_close(make()(y_pred, y_true), make()(y_pred, y_true, everything))
    assert make().threshold is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_target_is_invalid(bad: float) -> None:
    y_true = torch.tensor([[[[1.0, bad]]]])
    y_pred = torch.tensor([[[[3.0, 3.0]]]], requires_grad=True)
    loss = valid_pixel_loss(y_pred, y_true)
    torch.testing.assert_close(loss, torch.tensor(4.0))
    loss.backward()
    assert y_pred.grad is not None
    assert torch.isfinite(y_pred.grad).all()
    assert y_pred.grad[0, 0, 0, 1] == 0


# --------------------------------------------------------------------------------------------
# Edge cases: all invalid, NaN propagation, NaN at invalid pixels
# --------------------------------------------------------------------------------------------

# DN-style data: zero is nodata (threshold=0), as in the satellite recipes.
LOSS_FACTORIES = {
    "valid_pixel": lambda **kw: ValidPixelWeightedLoss(threshold=0.0, **kw),
    "valid_pixel_l1": lambda **kw: ValidPixelWeightedLoss("l1", threshold=0.0, **kw),
    "valid_pixel_charbonnier": lambda **kw: ValidPixelWeightedLoss(
        "charbonnier", threshold=0.0, **kw
    ),
    "valid_pixel_callable": lambda **kw: ValidPixelWeightedLoss(log_cosh, threshold=0.0, **kw),
    "valid_pixel_sample": lambda **kw: ValidPixelWeightedLoss(
        granularity="sample", threshold=0.0, **kw
    ),
    "sam": lambda **kw: SpectralAngleLoss(threshold=0.0, **kw),
    "sam_mse": lambda **kw: SAMMSELoss(0.7, 1.3, threshold=0.0, **kw),
}


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", LOSS_FACTORIES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("how", ["zeros", "nan", "mask"])
def test_all_invalid_gives_attached_zero(name, reduction, how, fused) -> None:
    y_pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    if how == "mask":
        y_true = torch.rand(2, 3, 4, 4) + 0.1
        mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    else:
        y_true = torch.full((2, 3, 4, 4), 0.0 if how == "zeros" else float("nan"))
        mask = None
    loss = LOSS_FACTORIES[name](reduction=reduction, fused=fused)(y_pred, y_true, mask)
    assert loss.shape == ((2,) if reduction == "none" else ())
    assert loss.dtype == torch.float32
    assert_attached_zero(loss, y_pred)


@pytest.mark.parametrize("name", LOSS_FACTORIES)
def test_all_invalid_sample_is_skipped(name) -> None:
    y_pred, y_true = make_inputs((3, 3, 4, 4), dtype=torch.float32)
    y_true[1] = 0.0
    loss = LOSS_FACTORIES[name]()
    kept = [0, 2]
    torch.testing.assert_close(loss(y_pred, y_true), loss(y_pred[kept], y_true[kept]))
    none = LOSS_FACTORIES[name](reduction="none")(y_pred, y_true)
    assert none[1] == 0


@pytest.mark.parametrize("name", LOSS_FACTORIES)
def test_nan_prediction_at_valid_pixel_propagates(name) -> None:
    y_pred, y_true = make_inputs((2, 3, 4, 4), invalid=0.0, dtype=torch.float32)
    y_pred[1, 2, 3, 0] = float("nan")
    assert torch.isnan(LOSS_FACTORIES[name]()(y_pred, y_true))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", LOSS_FACTORIES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bad_prediction_at_invalid_pixel_does_not_poison(name, bad, fused) -> None:
    y_pred, y_true = make_inputs((2, 3, 4, 4), dtype=torch.float32)
    y_true[1, 2, 3, 0] = 0.0  # invalid
    y_true[1, 0, 1, 1] = float("nan")  # invalid by the default rule, NaN target too
    loss = LOSS_FACTORIES[name](fused=fused)
    clean = y_pred.clone().requires_grad_(True)
    poisoned = y_pred.clone()
    poisoned[1, 2, 3, 0] = bad
    poisoned[1, 0, 1, 1] = bad
    poisoned.requires_grad_(True)
    expected = loss(clean, y_true)
    got = loss(poisoned, y_true)
    torch.testing.assert_close(got, expected)
    (g_clean,) = torch.autograd.grad(expected, clean)
    (g_poisoned,) = torch.autograd.grad(got, poisoned)
    assert torch.isfinite(g_poisoned).all()
    torch.testing.assert_close(g_poisoned, g_clean)
    assert g_poisoned[1, 2, 3, 0] == 0
    assert g_poisoned[1, 0, 1, 1] == 0


# --------------------------------------------------------------------------------------------
# Argument and input checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: ValidPixelWeightedLoss(weight_power=-0.5), ValueError, "weight_power"),
        (lambda: ValidPixelWeightedLoss(weight_power=float("nan")), ValueError, "weight_power"),
        (lambda: ValidPixelWeightedLoss("mae"), ValueError, "base"),
        (lambda: ValidPixelWeightedLoss(granularity="pixel"), ValueError, "granularity"),
        (lambda: ValidPixelWeightedLoss(reduction="avg"), ValueError, "reduction"),
        (lambda: ValidPixelWeightedLoss(threshold="0"), TypeError, "threshold"),
        (lambda: ValidPixelWeightedLoss(threshold=float("nan")), ValueError, "threshold"),
        (lambda: ValidPixelWeightedLoss("huber", delta=0.0), ValueError, "delta"),
        (lambda: ValidPixelWeightedLoss("charbonnier", eps=-1.0), ValueError, "eps"),
        (lambda: SpectralAngleLoss(weight_power=-1), ValueError, "weight_power"),
        (lambda: SpectralAngleLoss(eps=0.0), ValueError, "eps"),
        (lambda: SpectralAngleLoss(reduction="mean_"), ValueError, "reduction"),
        (lambda: SAMMSELoss(alpha=-1.0), ValueError, "alpha"),
        (lambda: SAMMSELoss(beta=-0.1), ValueError, "beta"),
        (lambda: SAMMSELoss(alpha=0.0, beta=0.0), ValueError, "alpha and beta"),
        (lambda: SAMMSELoss(granularity="batch"), ValueError, "granularity"),
        (lambda: SAMMSELoss(weight_power=-2.0), ValueError, "weight_power"),
    ],
)
def test_bad_constructor_arguments_are_rejected(factory, error, match) -> None:
    with pytest.raises(error, match=match):
        factory()


@pytest.mark.parametrize("name", ["valid_pixel", "sam", "sam_mse"])
def test_bad_inputs_are_rejected(name) -> None:
    loss = create_loss(name)
    p, t = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\) and \(2, 3, 4, 5\)"):
        loss(p, torch.rand(2, 3, 4, 5))
    with pytest.raises(ValueError, match="same shape"):  # no silent broadcasting
        loss(p, torch.rand(1, 3, 4, 4))
    with pytest.raises(TypeError, match=r"y_pred.*floating"):
        loss(p.long(), t)
    with pytest.raises(TypeError, match=r"y_true.*floating"):
        loss(p, t.long())
    with pytest.raises(TypeError, match=r"valid_mask.*bool"):
        loss(p, t, torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match="valid_mask"):
        loss(p, t, torch.ones(2, 2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid_mask"):
        loss(p, t, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        loss(p[:, 0, 0, 0], t[:, 0, 0, 0])
    with pytest.raises(TypeError, match="y_pred"):
        loss(p.numpy(), t)


@pytest.mark.parametrize("name", ["sam", "sam_mse"])
def test_spectral_angle_needs_two_channels(name) -> None:
    with pytest.raises(ValueError, match="at least 2 channels"):
        create_loss(name)(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))


def test_callable_base_must_be_elementwise() -> None:
    loss = ValidPixelWeightedLoss(lambda p, t: ((p - t) ** 2).mean())
    with pytest.raises(ValueError, match=r"same shape|input's shape"):
        loss(torch.rand(2, 2, 3, 3), torch.rand(2, 2, 3, 3))


# --------------------------------------------------------------------------------------------
# Dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["valid_pixel", "sam", "sam_mse"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(name, dtype) -> None:
    y_pred, y_true = make_inputs((2, 3, 4, 4))
    p_half = y_pred.to(dtype).requires_grad_(True)
    t_half = y_true.to(dtype)
    loss = create_loss(name)
    out = loss(p_half, t_half)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, loss(p_half.detach().float(), t_half.float()))
    (grad,) = torch.autograd.grad(out, p_half)
    assert grad.dtype == dtype
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ["valid_pixel", "sam", "sam_mse"])
def test_float64_stays_float64(name) -> None:
    y_pred, y_true = make_inputs((2, 3, 4, 4))
    assert create_loss(name)(y_pred, y_true).dtype == torch.float64
    assert create_loss(name)(y_pred.float(), y_true).dtype == torch.float64


# --------------------------------------------------------------------------------------------
# Gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("base", ["mse", "l1", "huber", "charbonnier", "callable"])
@pytest.mark.parametrize("granularity", ["channel", "sample"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_valid_pixel(base, granularity, reduction, fused) -> None:
    y_pred, y_true = make_inputs((2, 2, 3, 3))
    y_pred.requires_grad_(True)
    kwargs = BASE_KWARGS.get(base, {})
    loss = ValidPixelWeightedLoss(
        log_cosh if base == "callable" else base,
        granularity=granularity,
        reduction=reduction,
        fused=fused,
        **kwargs,
    )
    assert torch.autograd.gradcheck(lambda p: loss(p, y_true), (y_pred,))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("offset", [1e-3, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gradcheck_sam_and_sam_mse(offset, reduction, fused) -> None:
    # offset 1e-3: near-identical vectors (angles ~1e-3), where arccos-based SAM is unstable.
    _, y_true = make_inputs((2, 3, 3, 3))
    gen = torch.Generator().manual_seed(3)
    y_pred = 1.7 * y_true + offset * torch.randn(y_true.shape, generator=gen, dtype=torch.float64)
    y_pred.requires_grad_(True)
    sam = SpectralAngleLoss(reduction=reduction, fused=fused)
    assert torch.autograd.gradcheck(lambda p: sam(p, y_true), (y_pred,))
    sam_mse = SAMMSELoss(0.5, 2.0, reduction=reduction, fused=fused)
    assert torch.autograd.gradcheck(lambda p: sam_mse(p, y_true), (y_pred,))


@pytest.mark.parametrize("name", ["valid_pixel", "sam", "sam_mse"])
def test_fused_and_plain_paths_agree_on_both_gradients(name) -> None:
    # A target that requires grad takes the plain autograd path even with fused=True.
    y_pred, y_true = make_inputs((2, 3, 4, 4))
    results = []
    for fused in (True, False):
        p, t = y_pred.clone().requires_grad_(True), y_true.clone().requires_grad_(True)
        out = create_loss(name, fused=fused)(p, t)
        results.append((out, *torch.autograd.grad(out, (p, t))))
        p_only = y_pred.clone().requires_grad_(True)
        out_p = create_loss(name, fused=fused)(p_only, y_true)
        torch.testing.assert_close(torch.autograd.grad(out_p, p_only)[0], results[-1][1])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
    assert results[0][2].abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Spectral angle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "t", "angle"),
    [
        ([1.0, 0.0], [0.0, 1.0], math.pi / 2),
        ([1.0, 0.0], [1.0, 1.0], math.pi / 4),
        ([2.0, 2.0], [1.0, 1.0], 0.0),
        ([-1.0, -2.0], [1.0, 2.0], math.pi),
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.0),
        ([1.0, 0.0, 0.0], [math.cos(1e-4), math.sin(1e-4), 0.0], 1e-4),
        ([0.0, 0.0], [1.0, 2.0], math.pi / 2),
        ([0.0, 0.0], [0.0, 0.0], 0.0),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_angle_exact_values(p, t, angle, dtype) -> None:
    p_t = torch.tensor(p, dtype=dtype).reshape(1, -1, 1)
    t_t = torch.tensor(t, dtype=dtype).reshape(1, -1, 1)
    out = spectral_angle(p_t, t_t)
    assert out.shape == (1, 1)
    rtol = 1e-6 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out, torch.tensor([[angle]], dtype=dtype), rtol=rtol, atol=1e-7)


@pytest.mark.parametrize("case", ["identical", "zero_pred", "both_zero", "scaled"])
def test_spectral_angle_gradient_finite_at_singular_points(case) -> None:
    t = torch.tensor([[[0.3], [0.5], [0.2]]], dtype=torch.float64)
    p = {
        "identical": t.clone(),
        "zero_pred": torch.zeros_like(t),
        "both_zero": torch.zeros_like(t),
        "scaled": 3.0 * t,
    }[case].requires_grad_(True)
    if case == "both_zero":
        t = torch.zeros_like(t)
    angle = spectral_angle(p, t)
    assert torch.isfinite(angle).all()
    (grad,) = torch.autograd.grad(angle.sum(), p)
    assert torch.isfinite(grad).all()
    if case in ("identical", "both_zero"):
        assert angle.item() == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))
    if case == "scaled":
        assert angle.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("case", ["identical", "zero_pred"])
def test_sam_loss_gradient_finite_at_singular_points(case) -> None:
    _, y_true = make_inputs((2, 3, 4, 4), dtype=torch.float32)
    y_pred = y_true.clone() if case == "identical" else torch.zeros_like(y_true)
    y_pred.requires_grad_(True)
    for loss in (SpectralAngleLoss(threshold=0.0), SAMMSELoss(threshold=0.0)):
        out = loss(y_pred, y_true)
        (grad,) = torch.autograd.grad(out, y_pred)
        assert torch.isfinite(out)
        assert torch.isfinite(grad).all()
    sam = SpectralAngleLoss(threshold=0.0)
    if case == "identical":
        assert sam(y_pred, y_true) == 0
    else:
        torch.testing.assert_close(sam(y_pred, y_true), torch.tensor(math.pi / 2))


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_mask", [False, True])
def test_sam_parity_with_reference(power, reduction, with_mask) -> None:
    y_pred, y_true = make_inputs((3, 3, 4, 5), invalid=0.1)
    mask = None
    if with_mask:
        mask = torch.rand(3, 1, 4, 5, generator=torch.Generator().manual_seed(2)) > 0.5
        y_true = y_true.abs() + 0.1
    out = spectral_angle_loss(y_pred, y_true, mask, weight_power=power, reduction=reduction)
    torch.testing.assert_close(
        out, reference_sam(y_pred, y_true, mask, power=power, reduction=reduction)
    )


def test_sam_pixel_counts_only_when_valid_in_every_channel() -> None:
    # Pixel 0: valid in all channels, angle pi/4. Pixel 1: nodata in channel 1, excluded.
    y_true = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    y_pred = torch.tensor([[[1.0, 1.0], [0.0, 5.0]]])
    torch.testing.assert_close(
        spectral_angle_loss(y_pred, y_true, reduction="none", threshold=0.0),
        torch.tensor([math.pi / 4]),
    )
    # weight sqrt(1/2); one sample, so mean = pi/4, sum = sqrt(1/2) * pi/4
    torch.testing.assert_close(
        spectral_angle_loss(y_pred, y_true, reduction="sum", threshold=0.0),
        torch.tensor(math.sqrt(0.5) * math.pi / 4),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("granularity", ["channel", "sample"])
def test_sam_mse_is_the_weighted_sum_of_its_terms(reduction, granularity) -> None:
    y_pred, y_true = make_inputs((3, 3, 4, 4))
    mask = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(5)) > 0.3
    for m in (None, mask):
        out = SAMMSELoss(0.3, 2.5, granularity=granularity, reduction=reduction)(y_pred, y_true, m)
        sam = SpectralAngleLoss(reduction=reduction)(y_pred, y_true, m)
        mse = ValidPixelWeightedLoss(granularity=granularity, reduction=reduction)(
            y_pred, y_true, m
        )
        torch.testing.assert_close(out, 0.3 * sam + 2.5 * mse)
    assert sam_mse_loss(y_pred, y_true, alpha=1.0, beta=0.0).item() == pytest.approx(
        spectral_angle_loss(y_pred, y_true).item()
    )


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [("valid_pixel", ValidPixelWeightedLoss), ("sam", SpectralAngleLoss), ("sam_mse", SAMMSELoss)],
)
def test_registered_names(name, cls) -> None:
    loss = create_loss(name)
    assert type(loss) is cls
    assert "weight_power=0.5" in repr(loss)


def test_create_loss_passes_options() -> None:
    loss = create_loss("valid_pixel", base="huber", delta=0.5, granularity="sample")
    assert (loss.base, loss.delta, loss.granularity) == ("huber", 0.5, "sample")
    assert create_loss("sam_mse", alpha=0.1, beta=2.0).alpha == 0.1


# --------------------------------------------------------------------------------------------
# Properties (hypothesis)
# --------------------------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))


def random_case(shape, invalid, seed):
    gen = torch.Generator().manual_seed(seed)
    y_true = torch.rand(shape, generator=gen, dtype=torch.float64) + 0.05
    y_true[torch.rand(shape, generator=gen) < invalid] = 0.0
    y_pred = torch.randn(shape, generator=gen, dtype=torch.float64)
    return y_pred, y_true


@HYPOTHESIS
@given(shape=shapes, invalid=st.floats(0, 1), seed=st.integers(0, 2**16),
       granularity=st.sampled_from(["channel", "sample"]), power=st.floats(0, 3))  # fmt: skip
def test_property_batch_permutation(shape, invalid, seed, granularity, power) -> None:
    y_pred, y_true = random_case(shape, invalid, seed)
    perm = torch.randperm(shape[0], generator=torch.Generator().manual_seed(seed))
    kw = {"granularity": granularity, "weight_power": power}
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(
            valid_pixel_loss(y_pred[perm], y_true[perm], reduction=reduction, **kw),
            valid_pixel_loss(y_pred, y_true, reduction=reduction, **kw),
        )
    torch.testing.assert_close(
        valid_pixel_loss(y_pred[perm], y_true[perm], reduction="none", **kw),
        valid_pixel_loss(y_pred, y_true, reduction="none", **kw)[perm],
    )
    if shape[1] >= 2:
        torch.testing.assert_close(
            spectral_angle_loss(y_pred[perm], y_true[perm], weight_power=power),
            spectral_angle_loss(y_pred, y_true, weight_power=power),
        )


@HYPOTHESIS
@given(shape=shapes, invalid=st.floats(0, 0.95), seed=st.integers(0, 2**16),
       granularity=st.sampled_from(["channel", "sample"]))  # fmt: skip
def test_property_power_zero_is_mean_of_group_means(shape, invalid, seed, granularity) -> None:
    y_pred, y_true = random_case(shape, invalid, seed)
    valid = y_true > 0
    err = torch.where(valid, (y_pred - y_true) ** 2, 0.0)
    dims = tuple(range(2, 4)) if granularity == "channel" else (1, 2, 3)
    counts, sums = valid.sum(dims), err.sum(dims)
    non_empty = counts > 0
    expected = (sums[non_empty] / counts[non_empty]).mean() if non_empty.any() else 0.0
    out = valid_pixel_loss(y_pred, y_true, weight_power=0.0, granularity=granularity, threshold=0.0)
    torch.testing.assert_close(out, torch.as_tensor(expected, dtype=torch.float64))


@HYPOTHESIS
@given(shape=shapes, invalid=st.floats(0, 0.95), seed=st.integers(0, 2**16),
       granularity=st.sampled_from(["channel", "sample"]))  # fmt: skip
def test_property_power_one_is_pixel_pooled_mean(shape, invalid, seed, granularity) -> None:
    # Every group has the same pixel count T, so w_g L_g = S_g / T and the weights cancel.
    y_pred, y_true = random_case(shape, invalid, seed)
    valid = y_true > 0
    expected = ((y_pred - y_true)[valid] ** 2).mean() if valid.any() else torch.tensor(0.0)
    out = valid_pixel_loss(y_pred, y_true, weight_power=1.0, granularity=granularity, threshold=0.0)
    torch.testing.assert_close(out, expected.to(torch.float64))


@HYPOTHESIS
@given(shape=shapes, invalid=st.floats(0, 1), seed=st.integers(0, 2**16),
       fill=st.sampled_from([0.0, -1e30, 1e30, float("nan"), float("inf")]),
       name=st.sampled_from(["valid_pixel", "sam", "sam_mse"]))  # fmt: skip
def test_property_invariant_to_values_at_invalid_pixels(shape, invalid, seed, fill, name) -> None:
    if name != "valid_pixel" and shape[1] < 2:
        shape = (shape[0], 2, *shape[2:])
    y_pred, y_true = random_case(shape, invalid, seed)
    valid = y_true > 0
    if name == "sam":  # a pixel is invalid as soon as one channel is
        valid = valid.all(1, keepdim=True).expand(shape)
    loss = create_loss(name, threshold=0.0)
    changed = torch.where(valid, y_pred, fill).requires_grad_(True)
    y_pred.requires_grad_(True)
    expected, got = loss(y_pred, y_true), loss(changed, y_true)
    torch.testing.assert_close(got, expected)
    (g_expected,) = torch.autograd.grad(expected, y_pred)
    (g_got,) = torch.autograd.grad(got, changed)
    torch.testing.assert_close(g_got, g_expected)


@HYPOTHESIS
@given(n=st.integers(1, 3), c=st.integers(2, 5), hw=st.integers(1, 4),
       seed=st.integers(0, 2**16), invalid=st.floats(0, 0.5))  # fmt: skip
def test_property_sam_invariant_to_positive_pixel_scaling(n, c, hw, seed, invalid) -> None:
    y_pred, y_true = random_case((n, c, hw, hw), invalid, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    scale = torch.exp(2 * torch.randn(n, 1, hw, hw, generator=gen, dtype=torch.float64))
    torch.testing.assert_close(
        spectral_angle_loss(y_pred * scale, y_true), spectral_angle_loss(y_pred, y_true)
    )


# --------------------------------------------------------------------------------------------
# Fused path (torch.compile) -- slow
# --------------------------------------------------------------------------------------------


def _values_and_grads(loss, y_pred, y_true, mask=None):
    p = y_pred.clone().requires_grad_(True)
    out = loss(p, y_true, mask)
    (grad,) = torch.autograd.grad(out.sum(), p)
    return out.detach(), grad


@pytest.mark.slow
@pytest.mark.usefixtures("fused")
def test_fused_matches_eager_without_recompiles() -> None:
    y_pred, y_true = make_inputs((2, 3, 8, 8), dtype=torch.float32)
    y_pred[0, 0, 0, 0] = float("nan")
    y_true[0, 0, 0, 0] = 0.0  # NaN prediction at an invalid pixel
    mask = (torch.rand(2, 1, 8, 8) > 0.3) & (y_true[:, :1] > 0)
    # The default loss (mse kernel, no mask) and sam_mse (both kernels' maths, with a mask).
    cases = [
        (lambda **kw: ValidPixelWeightedLoss(threshold=0.0, **kw), None),
        (lambda **kw: SAMMSELoss(0.5, 2.0, granularity="sample", **kw), mask),
    ]
    for kernels in masked._KERNELS.values():
        kernels.forward.reset()
        kernels.backward.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedFallbackWarning)
        for factory, m in cases:
            fused_out, fused_grad = _values_and_grads(factory(fused=True), y_pred, y_true, m)
            eager_out, eager_grad = _values_and_grads(factory(fused=False), y_pred, y_true, m)
            torch.testing.assert_close(fused_out, eager_out, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(fused_grad, eager_grad, rtol=1e-5, atol=1e-7)
            assert torch.isfinite(fused_grad).all()
        # New values of the float hyper-parameters reuse the compiled kernels (a recompile
        # raises here, which the kernel would turn into a FusedFallbackWarning -> error).
        with torch.compiler.set_stance("fail_on_recompile"):
            for factory, m in [
                (lambda **kw: ValidPixelWeightedLoss(threshold=0.2, weight_power=1.3, **kw), None),
                (lambda **kw: ValidPixelWeightedLoss(threshold=0.05, **kw), None),
                (lambda **kw: SAMMSELoss(3.0, 0.1, eps=1e-4, threshold=0.1, **kw), mask),
                (lambda **kw: SAMMSELoss(1.0, 1.0, **kw), mask),
            ]:
                out, grad = _values_and_grads(factory(fused=True), y_pred, y_true, m)
                ref, ref_grad = _values_and_grads(factory(fused=False), y_pred, y_true, m)
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    for name in ("mse", "sam_mse"):
        for kernel in (masked._KERNELS[name].forward, masked._KERNELS[name].backward):
            assert kernel.failed is None


@pytest.mark.slow
@pytest.mark.usefixtures("fused")
def test_compile_fullgraph_of_a_caller() -> None:
    """No graph break (so no host sync: .item(), nonzero, boolean indexing) in the losses.

    ``aot_eager`` traces the whole forward and backward as inductor does, without its code
    generation; inductor itself runs on the same maths in the test above.
    """

    def make_step(fused: bool):
        valid_pixel = create_loss("valid_pixel", fused=fused)
        sam_mse = create_loss("sam_mse", reduction="none", fused=fused)

        def step(y_pred, y_true, mask):
            return valid_pixel(y_pred, y_true) + sam_mse(y_pred, y_true, mask).mean()

        return step

    compiled = torch.compile(make_step(fused=True), fullgraph=True, backend="aot_eager")
    y_pred, y_true = make_inputs((2, 3, 6, 6), dtype=torch.float32)
    mask = torch.rand(2, 1, 6, 6) > 0.2
    out, grad = _values_and_grads(compiled, y_pred, y_true, mask)
    ref, ref_grad = _values_and_grads(make_step(fused=False), y_pred, y_true, mask)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
