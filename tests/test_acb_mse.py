"""ACBMSELoss: parity with acb-mse 1.0.6, its deliberate differences, the extensions, the checks.

The suite runs with SMP_IMBALANCE_COMPILE=0 (tests/conftest.py): ``fused=True`` then runs the
hand-written autograd.Function with its two kernels executed eagerly, ``fused=False`` runs plain
tensor maths differentiated by autograd. Both are checked against references written below
from the maths (boolean indexing is fine here: these are the slow, obvious versions).
"""

from __future__ import annotations

import itertools
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from acb_mse import ACBLoss
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smp_imbalance import create_loss
from smp_imbalance.losses import ACBMSELoss
from smp_imbalance.losses._compile import FusedFallbackWarning
from smp_imbalance.losses.functional import acb as acb_functional
from smp_imbalance.losses.functional.acb import acb_mse, acb_mse_fused

HYPO = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUSED = pytest.mark.parametrize("fused", [True, False], ids=["fused", "eager"])


# -- references from the maths ------------------------------------------------------------------


def ref_classes(t: torch.Tensor, boundaries: list[float]) -> torch.Tensor:
    """Class index of each pixel: number of edges strictly below |t|."""
    a = t.abs().double()
    return sum((a > b).long() for b in boundaries)


def ref_loss(p, t, weights, boundaries, mask=None):
    """One pooled value: sum_k w_k * mean over class k of (p - t)^2; empty class -> 0."""
    cls = ref_classes(t, boundaries)
    valid = torch.ones_like(t, dtype=torch.bool) if mask is None else mask.expand_as(t)
    d2 = (p.double() - t.double()) ** 2
    total = torch.zeros((), dtype=torch.float64)
    for k, w in enumerate(weights):
        sel = (cls == k) & valid
        if sel.any():
            total = total + w * d2[sel].mean()
    return total


def ref_per_sample(p, t, weights, boundaries, mask=None):
    masks = [None] * len(p) if mask is None else list(mask.expand_as(t))
    return torch.stack(
        [ref_loss(pi, ti, weights, boundaries, mi) for pi, ti, mi in zip(p, t, masks, strict=True)]
    )


def sparse(shape, hit_fraction, dtype=torch.float32):
    """A target with about ``hit_fraction`` non-zero pixels (values in (-2, 2)) and a
    prediction; 0 and 1 give all-zero / zero-free targets."""
    t = (torch.rand(shape, dtype=torch.float64) * 4 - 2).clamp_min(-1.99)
    t = torch.where(t == 0, 1.0, t)
    if hit_fraction < 1:
        t = t * (torch.rand(shape) < hit_fraction)
    p = torch.rand(shape, dtype=torch.float64) * 2 - 1
    return p.to(dtype).requires_grad_(), t.to(dtype)


def assert_rel(actual: torch.Tensor, expected, rtol: float = 1e-5) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(actual.detach().double(), expected, rtol=rtol, atol=0)


# -- parity with the published package ------------------------------------------------------------

SHAPES = [(), (7,), (3, 5), (4, 1, 16, 11), (2, 3, 8, 8)]
WEIGHTINGS = [(1.0, 1.0), (0.5, 2.0), (3.0, 0.0), (0.0, 1.5)]
SPARSITY = [0.0, 0.02, 0.3, 1.0]


@FUSED
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("weighting", WEIGHTINGS, ids=str)
@pytest.mark.parametrize("hits", SPARSITY)
def test_parity_with_acb_mse_package(fused, shape, weighting, hits):
    p, t = sparse(shape, hits)
    expected = ACBLoss(*weighting)(p, t)
    actual = ACBMSELoss(*weighting, fused=fused)(p, t)
    assert isinstance(expected, torch.Tensor)  # the inputs are such that the package works
    assert actual.dtype == torch.float32 and actual.shape == ()
    assert_rel(actual, expected)
    assert_rel(actual, ref_loss(p, t, weighting, [0.0]))


@FUSED
def test_parity_gradient_with_acb_mse_package(fused):
    p, t = sparse((3, 2, 9, 7), 0.1)
    p2 = p.detach().clone().requires_grad_()
    ACBLoss(0.7, 1.3)(p2, t).backward()
    ACBMSELoss(0.7, 1.3, fused=fused)(p, t).backward()
    torch.testing.assert_close(p.grad, p2.grad, rtol=1e-5, atol=1e-9)


_value = st.one_of(
    st.just(0.0),
    st.floats(-100, 100, width=32, allow_subnormal=False),
)


@st.composite
def pair_of_arrays(draw, min_dims=0):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=5))
    p = draw(hnp.arrays(np.float32, shape, elements=_value))
    t = draw(hnp.arrays(np.float32, shape, elements=_value))
    return torch.from_numpy(p), torch.from_numpy(t)


@HYPO
@given(
    arrays=pair_of_arrays(),
    weights=st.tuples(st.floats(0, 10), st.floats(0, 10)),
    fused=st.booleans(),
)
def test_parity_property(arrays, weights, fused):
    p, t = arrays
    expected = ACBLoss(*weights)(p, t)
    assume(isinstance(expected, torch.Tensor))
    assert_rel(ACBMSELoss(*weights, fused=fused)(p, t), expected)


# -- where we differ from the package on purpose --------------------------------------------------


@FUSED
@pytest.mark.parametrize("where", ["y_pred@hit", "y_pred@nohit", "y_true@hit"])
def test_nan_propagates_where_the_package_hides_it(fused, where):
    """A NaN prediction always gives NaN (a diverged model shows); a NaN target gives NaN only
    where a valid_mask says the pixel is valid (without one, non-finite targets are invalid)."""
    p, t = sparse((2, 1, 6, 6), 0.3)
    t[0, 0, 0, 0], t[0, 0, 0, 1] = 0.5, 0.0
    p = p.detach().clone()
    name, pixel = where.split("@")
    index = (0, 0, 0, 0) if pixel == "hit" else (0, 0, 0, 1)
    (p if name == "y_pred" else t)[index] = float("nan")
    assert torch.isfinite(torch.as_tensor(ACBLoss()(p, t)))  # the package drops the class
    everything = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    assert torch.isnan(ACBMSELoss(fused=fused)(p, t, everything))
    assert torch.isnan(ACBMSELoss(fused=fused)(p, t)) == (name == "y_pred")


NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


@FUSED
@pytest.mark.parametrize("bad", list(NON_FINITE))
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"pooling": "sample"}, {"class_boundaries": [0.0, 0.8], "pooling": "sample"}],
    ids=["batch", "sample", "3_classes"],
)
def test_no_mask_means_every_finite_target_pixel(fused, bad, kwargs):
    """valid_mask=None is the explicit mask isfinite(y_true): same value, same gradient (finite),
    for non-finite values in both classes and a whole sample of them."""
    p, t = sparse((3, 2, 5, 4), 0.3)
    t[0, 0, 0, :2] = NON_FINITE[bad]  # among the pixels of both classes
    t[1, 1] = NON_FINITE[bad]
    loss = ACBMSELoss(0.7, 1.9, **kwargs, fused=fused)
    p2 = p.detach().clone().requires_grad_()
    implicit = loss(p, t)
    explicit = loss(p2, t, torch.isfinite(t))
    assert torch.isfinite(implicit)
    torch.testing.assert_close(implicit, explicit, rtol=1e-6, atol=0)
    implicit.backward()
    explicit.backward()
    assert torch.isfinite(p.grad).all() and (p.grad[~torch.isfinite(t)] == 0).all()
    torch.testing.assert_close(p.grad, p2.grad, rtol=1e-6, atol=0)


@FUSED
def test_no_mask_all_non_finite_target_is_zero_attached(fused):
    p = torch.rand(2, 1, 3, 3, requires_grad=True)
    loss = ACBMSELoss(fused=fused)(p, torch.full((2, 1, 3, 3), float("nan")))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (p.grad == 0).all()


@FUSED
@pytest.mark.parametrize("pooling", ["batch", "sample"])
def test_gradcheck_float64_with_non_finite_targets(fused, pooling):
    p, t = sparse((2, 2, 3, 4), 0.4, dtype=torch.float64)
    t[0, 0, 0, 0], t[1, 1, 2, 3], t[1, 0, 1, 1] = float("nan"), float("inf"), float("-inf")
    loss = ACBMSELoss(0.7, 1.9, pooling=pooling, fused=fused)
    assert torch.autograd.gradcheck(lambda a: loss(a, t), (p,))


def test_package_returns_python_int_where_we_return_a_tensor():
    p = torch.full((1, 1, 2, 2), float("nan"), requires_grad=True)
    t = torch.zeros(1, 1, 2, 2)
    assert ACBLoss()(p, t) == 0 and not isinstance(ACBLoss()(p, t), torch.Tensor)
    loss = ACBMSELoss()(p, t)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad and torch.isnan(loss)


@FUSED
@pytest.mark.parametrize("shape", [(0,), (2, 0, 3, 3), (0, 1, 4, 4)], ids=str)
def test_empty_input_raises(fused, shape):
    assert ACBLoss()(torch.zeros(shape), torch.zeros(shape)) == 0  # the package's answer
    with pytest.raises(ValueError, match="empty"):
        ACBMSELoss(fused=fused)(torch.zeros(shape), torch.zeros(shape))


@FUSED
@pytest.mark.parametrize(
    "case", ["all_zero_target", "no_zero_target", "zero_weights", "all_masked", "exact"]
)
@pytest.mark.parametrize("pooling", ["batch", "sample"])
def test_edge_cases_give_finite_tensor_attached_to_graph(fused, case, pooling):
    p, t = sparse((2, 1, 5, 4), 0.0 if case == "all_zero_target" else 1.0)
    mask = torch.zeros(2, 1, 5, 4, dtype=torch.bool) if case == "all_masked" else None
    weights = (0.0, 0.0) if case == "zero_weights" else (1.0, 1.0)
    if case == "exact":
        p = t.clone().requires_grad_()
    loss = ACBMSELoss(*weights, pooling=pooling, fused=fused)(p, t, mask)
    assert isinstance(loss, torch.Tensor) and loss.dtype == torch.float32
    assert loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(p.grad).all()
    if case in ("zero_weights", "all_masked", "exact"):
        assert loss.item() == 0.0 and (p.grad == 0).all()
    else:
        assert loss.item() > 0


# -- exact values -----------------------------------------------------------------------------


@FUSED
def test_exact_value_two_classes(fused):
    # hits: errors 1 and 3 -> mean 5; no hits: errors 0, 2, 0, 0 -> mean 1
    t = torch.tensor([[1.0, -2.0, 0.0, 0.0, 0.0, 0.0]])
    p = torch.tensor([[2.0, 1.0, 0.0, 2.0, 0.0, 0.0]])
    assert ACBMSELoss(fused=fused)(p, t).item() == 6.0
    assert ACBMSELoss(0.5, 2.0, fused=fused)(p, t).item() == 10.5
    assert F.mse_loss(p, t).item() == pytest.approx(14 / 6)


@FUSED
def test_exact_value_three_classes_and_edges(fused):
    # boundaries (0.5, 2): |t| = 0.5 is class 0 (edge included below), 2 is class 1, -3 class 2
    t = torch.tensor([0.0, 0.5, -1.0, 2.0, -3.0, 5.0])
    p = torch.tensor([1.0, 0.5, 0.0, 0.0, -3.0, 1.0])
    # class 0: errors 1, 0 -> 0.5; class 1: errors 1, 4 -> 2.5; class 2: errors 0, 16 -> 8
    loss = ACBMSELoss(class_boundaries=[0.5, 2.0], class_weights=[1.0, 2.0, 0.5], fused=fused)
    assert loss(p, t).item() == 0.5 + 5.0 + 4.0
    # without class_weights: zero_weighting for class 0, nonzero_weighting for the others
    loss = ACBMSELoss(2.0, 3.0, class_boundaries=[0.5, 2.0], fused=fused)
    assert loss(p, t).item() == 1.0 + 7.5 + 24.0


@FUSED
def test_zero_tolerance(fused):
    t = torch.tensor([0.0, 0.05, -0.1, 0.3])
    p = torch.tensor([0.0, 0.0, 0.0, 0.0])
    # tolerance 0.1: no hits {0, 0.05, -0.1} errors (0, .0025, .01); hits {0.3} error .09
    expected = (0.0025 + 0.01) / 3 + 0.09
    loss = ACBMSELoss(zero_tolerance=0.1, fused=fused)(p, t)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    same = ACBMSELoss(class_boundaries=[0.1], fused=fused)(p, t)
    assert same.item() == loss.item()
    assert ACBMSELoss(fused=fused)(p, t).item() == pytest.approx((0.0025 + 0.01 + 0.09) / 3)


@FUSED
@pytest.mark.parametrize("boundaries", [[0.0, 0.5], [0.1, 0.4, 1.2], [0.3]], ids=str)
@pytest.mark.parametrize("pooling", ["batch", "sample"])
def test_multiclass_against_reference(fused, boundaries, pooling):
    p, t = sparse((3, 2, 7, 5), 0.4)
    weights = [0.5 + k for k in range(len(boundaries) + 1)]
    loss = ACBMSELoss(
        class_boundaries=boundaries, class_weights=weights, pooling=pooling, fused=fused
    )
    if pooling == "batch":
        assert_rel(loss(p, t), ref_loss(p, t, weights, boundaries))
    else:
        assert_rel(loss(p, t), ref_per_sample(p, t, weights, boundaries).mean())


def test_class_weights_map_to_two_class_weightings():
    p, t = sparse((2, 3, 6, 6), 0.1)
    a = ACBMSELoss(0.3, 4.0)(p, t)
    b = ACBMSELoss(class_weights=[0.3, 4.0])(p, t)
    c = ACBMSELoss(0.3, 4.0, class_weights=(0.3, 4.0))(p, t)
    assert a.item() == b.item() == c.item()
    assert ACBMSELoss(0.3, 4.0).class_weights == (0.3, 4.0)


# -- pooling and reduction --------------------------------------------------------------------


@FUSED
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(4,), (3, 5), (4, 2, 6, 5)], ids=str)
def test_sample_pooling_against_reference(fused, reduction, shape):
    p, t = sparse(shape, 0.3)
    t[0] = 0.0  # one sample with no hits at all
    loss = ACBMSELoss(0.5, 2.0, pooling="sample", reduction=reduction, fused=fused)(p, t)
    per_sample = ref_per_sample(p, t, (0.5, 2.0), [0.0])
    expected = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}
    assert loss.shape == ((shape[0],) if reduction == "none" else ())
    assert_rel(loss, expected[reduction])


def test_sample_pooling_balances_each_sample_batch_pooling_does_not():
    # sample 0: one hit, badly predicted; sample 1: many hits, well predicted
    t = torch.zeros(2, 1, 4, 4)
    t[0, 0, 0, 0] = 1.0
    t[1, 0, :2] = 1.0
    p = t.clone()
    p[0, 0, 0, 0] = 0.0
    per_sample = ACBMSELoss(pooling="sample", reduction="none")(p, t)
    assert per_sample.tolist() == [1.0, 0.0]
    assert ACBMSELoss(pooling="sample")(p, t).item() == 0.5
    assert ACBMSELoss()(p, t).item() == pytest.approx(1 / 9)


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_batch_pooling_rejects_other_reductions(reduction):
    with pytest.raises(ValueError, match="pooling='sample'"):
        ACBMSELoss(reduction=reduction)


def test_sample_pooling_needs_a_batch_dimension():
    with pytest.raises(ValueError, match="batch dimension"):
        ACBMSELoss(pooling="sample")(torch.tensor(1.0), torch.tensor(0.0))


# -- mask ---------------------------------------------------------------------------------------


@FUSED
@pytest.mark.parametrize("pooling", ["batch", "sample"])
@pytest.mark.parametrize("mask_shape", [(3, 2, 6, 5), (3, 1, 6, 5), (1, 2, 1, 1)], ids=str)
def test_mask_excludes_pixels(fused, pooling, mask_shape):
    p, t = sparse((3, 2, 6, 5), 0.3)
    mask = torch.rand(mask_shape) < 0.6
    mask.view(-1)[0] = True
    loss = ACBMSELoss(0.5, 2.0, pooling=pooling, fused=fused)(p, t, mask)
    if pooling == "batch":
        expected = ref_loss(p, t, (0.5, 2.0), [0.0], mask)
    else:
        expected = ref_per_sample(p, t, (0.5, 2.0), [0.0], mask).mean()
    assert_rel(loss, expected)


@FUSED
def test_masked_nan_reaches_neither_loss_nor_gradient(fused):
    p, t = sparse((2, 1, 5, 5), 0.3)
    mask = torch.rand(2, 1, 5, 5) < 0.5
    mask[0, 0, 0, 0], mask[1, 0, 0, 0] = True, False
    p_nan = p.detach().clone()
    t_nan = t.clone()
    p_nan[~mask], t_nan[~mask] = float("nan"), float("nan")
    p_nan.requires_grad_()
    loss = ACBMSELoss(fused=fused)(p_nan, t_nan, mask)
    assert_rel(loss, ref_loss(p, t, (1.0, 1.0), [0.0], mask))
    loss.backward()
    assert torch.isfinite(p_nan.grad).all() and (p_nan.grad[~mask] == 0).all()


@pytest.mark.parametrize(
    ("mask", "error", "match"),
    [
        (torch.ones(2, 1, 4, 4), TypeError, "torch.bool"),
        (np.ones((2, 1, 4, 4), bool), TypeError, "bool torch.Tensor"),
        (torch.ones(2, 3, 4, 4, dtype=torch.bool), ValueError, "broadcast"),
        (torch.ones(1, 4, 4, dtype=torch.bool), ValueError, "dimensions"),
    ],
    ids=["float", "numpy", "shape", "ndim"],
)
def test_bad_mask_rejected(mask, error, match):
    p, t = sparse((2, 1, 4, 4), 0.3)
    with pytest.raises(error, match=match):
        ACBMSELoss()(p, t, mask)


# -- the seed's claim -------------------------------------------------------------------------


@FUSED
def test_seed_claim_acb_constant_while_mse_and_mae_grow(fused):
    """Hits swept two pixels at a time; the prediction recovers a fixed 50 % of them."""
    acb, mse, mae = [], [], []
    for hits in range(2, 42, 2):
        t = torch.zeros(1, 1, 128, 88)
        t.view(-1)[:hits] = 1.0
        p = torch.zeros_like(t)
        p.view(-1)[: hits // 2] = 1.0
        acb.append(ACBMSELoss(fused=fused)(p, t).item())
        mse.append(F.mse_loss(p, t).item())
        mae.append(F.l1_loss(p, t).item())
    assert acb == pytest.approx([0.5] * len(acb), rel=1e-6)
    assert all(b > a for a, b in itertools.pairwise(mse))
    assert all(b > a for a, b in itertools.pairwise(mae))
    assert mse[-1] > 10 * mse[0]


# -- input checks -------------------------------------------------------------------------------


def test_mismatched_shapes_name_both():
    with pytest.raises(ValueError, match=r"\(2, 1, 4, 4\) and \(2, 1, 4, 1\)"):
        ACBMSELoss()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 1))


@pytest.mark.parametrize(
    ("y_pred", "y_true", "error", "match"),
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), TypeError, "y_pred.*floating"),
        (np.zeros((2, 3), np.float32), torch.zeros(2, 3), TypeError, "y_pred must be a torch"),
        (torch.zeros(2, 3), [[0.0] * 3] * 2, TypeError, "y_true must be a torch"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), TypeError, "y_true.*real"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.cfloat), TypeError, "y_true.*real"),
    ],
    ids=["int_pred", "numpy_pred", "list_true", "bool_true", "complex_true"],
)
def test_bad_inputs_rejected(y_pred, y_true, error, match):
    with pytest.raises(error, match=match):
        ACBMSELoss()(y_pred, y_true)


@FUSED
def test_integer_target_accepted(fused):
    t = torch.tensor([[0, 0, 3, 0], [1, 0, 0, 0]])
    p = torch.tensor([[0.0, 1.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = ACBMSELoss(fused=fused)(p, t)
    assert_rel(loss, ref_loss(p, t.float(), (1.0, 1.0), [0.0]))
    loss.backward()
    assert p.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"zero_weighting": -1.0}, ValueError, "zero_weighting"),
        ({"nonzero_weighting": float("nan")}, ValueError, "nonzero_weighting"),
        ({"nonzero_weighting": float("inf")}, ValueError, "finite"),
        ({"zero_weighting": "1"}, TypeError, "zero_weighting"),
        ({"zero_tolerance": -0.1}, ValueError, "zero_tolerance"),
        ({"class_boundaries": [0.5, 0.1]}, ValueError, "ascending"),
        ({"class_boundaries": [0.1, 0.1]}, ValueError, "ascending"),
        ({"class_boundaries": [-1.0, 0.1]}, ValueError, r"class_boundaries\[0\]"),
        ({"class_boundaries": []}, ValueError, "at least one"),
        ({"class_boundaries": 0.5}, TypeError, "class_boundaries"),
        ({"class_weights": [1.0, 2.0, 3.0]}, ValueError, "3 values but there are 2"),
        ({"class_weights": [1.0, -2.0]}, ValueError, r"class_weights\[1\]"),
        ({"class_boundaries": [0.1, 1], "class_weights": [1, 2]}, ValueError, "3 classes"),
        ({"zero_weighting": 2.0, "class_weights": [1.0, 1.0]}, ValueError, "contradict"),
        ({"class_boundaries": [0, 1], "nonzero_weighting": 2.0, "class_weights": [1, 2, 2]},
         ValueError, "contradict"),
        ({"zero_tolerance": 0.2, "class_boundaries": [0.1, 1.0]}, ValueError, "contradicts"),
        ({"pooling": "image"}, ValueError, "pooling"),
        ({"reduction": "max"}, ValueError, "reduction"),
    ],
)  # fmt: skip
def test_bad_constructor_arguments_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        ACBMSELoss(**kwargs)


def test_numpy_scalars_accepted():
    loss = ACBMSELoss(np.float32(0.5), np.int64(2), class_boundaries=np.array([0.0, 1.0]))
    assert loss.class_weights == (0.5, 2.0, 2.0) and loss.class_boundaries == (0.0, 1.0)


def test_consistent_redundant_arguments_accepted():
    loss = ACBMSELoss(zero_tolerance=0.1, class_boundaries=[0.1, 1.0])
    assert loss.class_boundaries == (0.1, 1.0) and loss.num_classes == 3


# -- dtypes -----------------------------------------------------------------------------------


@FUSED
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("pooling", ["batch", "sample"])
def test_half_precision_computed_in_float32(fused, dtype, pooling):
    p, t = sparse((2, 2, 16, 16), 0.05, dtype=dtype)
    p32 = p.detach().float().requires_grad_()
    loss = ACBMSELoss(pooling=pooling, fused=fused)(p, t)
    loss32 = ACBMSELoss(pooling=pooling, fused=fused)(p32, t.float())
    assert loss.dtype == torch.float32
    # identical maths on the upcast values: equal up to summation order
    torch.testing.assert_close(loss, loss32, rtol=1e-6, atol=0)
    loss.backward()
    loss32.backward()
    assert p.grad.dtype == dtype
    torch.testing.assert_close(p.grad, p32.grad.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_more_accurate_than_the_package(dtype):
    p, t = sparse((4, 1, 32, 32), 0.05, dtype=dtype)
    exact = ACBLoss()(p.detach().double(), t.double())
    ours, theirs = ACBMSELoss()(p, t), ACBLoss()(p, t)
    assert ours.dtype == torch.float32 and theirs.dtype == dtype
    assert_rel(ours, exact, rtol=1e-6)
    assert abs(theirs.double() - exact) > abs(ours.double() - exact)


@FUSED
def test_half_target_is_binned_against_exact_edges(fused):
    # 0.1 is not representable in float16 (it rounds up to 0.1000061); the edge must not round.
    t = torch.tensor([[0.1, 0.0, 1.0]], dtype=torch.float16)
    p = torch.zeros(1, 3, dtype=torch.float16)
    loss = ACBMSELoss(zero_tolerance=0.1, fused=fused)(p, t)
    assert loss.item() == pytest.approx(t[0, 0].item() ** 2 / 2 + 1.0, rel=1e-6)


@FUSED
def test_float64_stays_float64(fused):
    p, t = sparse((2, 1, 5, 5), 0.2, dtype=torch.float64)
    loss = ACBMSELoss(fused=fused)(p, t)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, ref_loss(p, t, (1.0, 1.0), [0.0]), rtol=1e-12, atol=0)


# -- gradients --------------------------------------------------------------------------------

GRAD_CASES = {
    "batch": ({}, 0.3, None),
    "sample_mean": ({"pooling": "sample"}, 0.3, None),
    "sample_sum": ({"pooling": "sample", "reduction": "sum"}, 0.3, None),
    "sample_none": ({"pooling": "sample", "reduction": "none"}, 0.3, None),
    "absent_hits": ({}, 0.0, None),
    "absent_no_hits": ({"pooling": "sample"}, 1.0, None),
    "masked": ({"pooling": "sample"}, 0.3, (2, 1, 3, 4)),
    "multiclass": ({"class_boundaries": [0.0, 0.8], "class_weights": [1, 2, 0.5]}, 0.6, None),
}


@FUSED
@pytest.mark.parametrize("case", list(GRAD_CASES))
def test_gradcheck_float64(fused, case):
    kwargs, hits, mask_shape = GRAD_CASES[case]
    p, t = sparse((2, 2, 3, 4), hits, dtype=torch.float64)
    mask = None if mask_shape is None else torch.rand(mask_shape) < 0.6
    weights = {} if "class_weights" in kwargs else {"zero_weighting": 0.7, "nonzero_weighting": 1.9}
    loss = ACBMSELoss(**weights, **kwargs, fused=fused)
    assert torch.autograd.gradcheck(lambda a: loss(a, t, mask), (p,))


@FUSED
def test_gradient_reaches_the_target(fused):
    """d loss / d y_true = -d loss / d y_pred (the classes are piecewise constant in y_true;
    a finite-difference check would cross the class edge at t = 0)."""
    p, t = sparse((2, 2, 3, 4), 0.3, dtype=torch.float64)
    t.requires_grad_()
    ACBMSELoss(pooling="sample", fused=fused)(p, t).backward()
    assert t.grad is not None and (t.grad != 0).any()
    torch.testing.assert_close(t.grad, -p.grad, rtol=0, atol=0)


def test_gradgradcheck_eager_path():
    p, t = sparse((2, 1, 3, 3), 0.4, dtype=torch.float64)
    loss = ACBMSELoss(0.5, 2.0, pooling="sample", reduction="none", fused=False)
    assert torch.autograd.gradgradcheck(lambda a: loss(a, t), (p,))


@pytest.mark.parametrize("pooling", ["batch", "sample"])
def test_functional_paths_agree(pooling):
    p, t = sparse((3, 2, 5, 5), 0.2, dtype=torch.float64)
    w = torch.tensor([0.4, 1.7], dtype=torch.float64)
    b = torch.tensor([0.0], dtype=torch.float64)
    p2 = p.detach().clone().requires_grad_()
    a = acb_mse(p, t, w, b, pooling=pooling)
    f = acb_mse_fused(p2, t, w, b, pooling=pooling, compile=False)
    torch.testing.assert_close(a, f, rtol=1e-14, atol=0)
    a.backward()
    f.backward()
    torch.testing.assert_close(p.grad, p2.grad, rtol=1e-14, atol=0)


# -- no data-dependent host sync ----------------------------------------------------------------


@FUSED
@pytest.mark.parametrize("pooling", ["batch", "sample"])
def test_runs_on_meta_tensors(fused, pooling):
    """Meta tensors have no values: ``.item()``, ``nonzero``, boolean indexing or ``if tensor``
    in forward or backward would raise here, so passing proves there is no host sync."""
    p = torch.empty(4, 2, 8, 8, device="meta", requires_grad=True)
    t = torch.empty(4, 2, 8, 8, device="meta")
    mask = torch.empty(4, 1, 8, 8, device="meta", dtype=torch.bool)
    loss = ACBMSELoss(class_boundaries=[0.0, 1.0], pooling=pooling, fused=fused)(p, t, mask)
    loss.backward()
    assert p.grad.shape == p.shape and p.grad.device.type == "meta"


# -- properties ---------------------------------------------------------------------------------


@st.composite
def batches(draw, dims=4):
    shape = draw(hnp.array_shapes(min_dims=dims, max_dims=dims, min_side=1, max_side=4))
    p = draw(hnp.arrays(np.float64, shape, elements=st.floats(-4, 4)))
    t = draw(hnp.arrays(np.float64, shape, elements=st.one_of(st.just(0.0), st.floats(-4, 4))))
    return torch.from_numpy(p), torch.from_numpy(t)


def _module(pooling, reduction="mean", fused=True, **kwargs):
    return ACBMSELoss(0.6, 1.7, pooling=pooling, reduction=reduction, fused=fused, **kwargs)


@HYPO
@given(data=batches(), seed=st.integers(0, 2**16), fused=st.booleans())
@pytest.mark.parametrize(
    ("pooling", "reduction"), [("batch", "mean"), ("sample", "mean"), ("sample", "none")]
)
def test_property_batch_permutation(pooling, reduction, data, seed, fused):
    p, t = data
    perm = torch.randperm(p.shape[0], generator=torch.Generator().manual_seed(seed))
    loss = _module(pooling, reduction, fused)
    a, b = loss(p, t), loss(p[perm], t[perm])
    torch.testing.assert_close(b, a[perm] if reduction == "none" else a)


@HYPO
@given(data=batches(), s=st.floats(0, 100), fused=st.booleans(), pooling=st.sampled_from(
    ["batch", "sample"]))  # fmt: skip
def test_property_weight_scaling(data, s, fused, pooling):
    p, t = data
    base = ACBMSELoss(class_boundaries=[0.0, 1.0], class_weights=[0.3, 1.0, 2.0], pooling=pooling)
    scaled = ACBMSELoss(
        class_boundaries=[0.0, 1.0],
        class_weights=[0.3 * s, 1.0 * s, 2.0 * s],
        pooling=pooling,
        fused=fused,
    )
    torch.testing.assert_close(scaled(p, t), s * base(p, t))


@HYPO
@given(data=batches(), extra=st.integers(1, 30), fused=st.booleans())
def test_property_hit_term_ignores_added_no_hit_pixels(data, extra, fused):
    """Padding with error-free "no hit" pixels leaves the hit term unchanged, and the whole
    pooled loss too when the prediction was already exact on the no-hit pixels."""
    p, t = data
    p_exact_bg = torch.where(t == 0, 0.0, p)
    pad = torch.zeros(extra, *p.shape[1:], dtype=p.dtype)
    for weights, pred in [((0.0, 1.0), p), ((1.0, 1.0), p_exact_bg)]:
        loss = ACBMSELoss(*weights, fused=fused)
        padded = loss(torch.cat([pred, pad]), torch.cat([t, pad]))
        torch.testing.assert_close(padded, loss(pred, t))


@HYPO
@given(data=batches(), fused=st.booleans(), pooling=st.sampled_from(["batch", "sample"]))
def test_property_masked_padding_is_invisible(data, fused, pooling):
    """Extra pixels marked invalid change nothing, whatever they hold (NaN included)."""
    p, t = data
    junk = torch.full_like(p, float("nan"))
    mask = torch.cat(
        [torch.ones_like(p, dtype=torch.bool), torch.zeros_like(p, dtype=torch.bool)], -1
    )
    loss = _module(pooling, fused=fused)
    torch.testing.assert_close(
        loss(torch.cat([p, junk], -1), torch.cat([t, junk], -1), mask), loss(p, t)
    )


@HYPO
@given(data=batches())
def test_property_non_negative_single_sample_pooling_agrees(data):
    p, t = data
    batch = _module("batch")(p[:1], t[:1])
    assert batch >= 0
    torch.testing.assert_close(_module("sample")(p[:1], t[:1]), batch)


# -- integration ----------------------------------------------------------------------------------


def test_registry_and_module_state():
    loss = create_loss("acb_mse", nonzero_weighting=2.0, pooling="sample")
    assert isinstance(loss, ACBMSELoss) and loss.class_weights == (1.0, 2.0)
    assert loss.state_dict() == {}  # nothing to save or to clash on load
    assert "pooling='sample'" in repr(loss)
    with pytest.raises(AttributeError):
        loss.class_weights = (1.0, 3.0)  # the cached weight tensors could go stale
    p, t = sparse((2, 1, 4, 4), 0.3, dtype=torch.float64)
    assert loss.to(torch.float64)(p, t).dtype == torch.float64


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "eager"])
def test_torch_compile_fullgraph_of_a_caller(fused):
    loss = ACBMSELoss(
        class_boundaries=[0.0, 1.0], class_weights=[0.5, 2.0, 1.0], pooling="sample", fused=fused
    )
    mask = torch.rand(3, 1, 8, 8) < 0.8

    def step(p, t):
        return loss(p * 1.5, t, mask) + 0.1 * p.abs().mean()

    p, t = sparse((3, 2, 8, 8), 0.2)
    p2 = p.detach().clone().requires_grad_()
    # aot_eager: dynamo (fullgraph: no graph break) and AOT autograd, without inductor's
    # compile time; inductor itself is exercised by test_fused_compiled_kernels_match_eager.
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    expected, actual = step(p, t), compiled(p2, t)
    torch.testing.assert_close(actual, expected)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(p2.grad, p.grad)


FUSED_CASES = {  # each case costs two inductor compiles (seconds): keep them few and broad
    "batch_float32": ({}, None, torch.float32),
    "sample_none_masked_multiclass_bfloat16": (
        {
            "class_boundaries": [0.0, 1.0],
            "class_weights": [1.0, 3.0, 0.5],
            "pooling": "sample",
            "reduction": "none",
        },
        (4, 1, 16, 12),
        torch.bfloat16,
    ),
}


@pytest.mark.slow
def test_fused_compiled_kernels_match_eager(fused):
    """The compiled kernels (forward and hand-written backward) against autograd on the eager
    maths; and new hyper-parameter values reuse the compiled kernels (no recompile)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    for kernel in (acb_functional._FORWARD, acb_functional._BACKWARD):
        kernel.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedFallbackWarning)
        for kwargs, mask_shape, dtype in FUSED_CASES.values():
            p, t = sparse((4, 3, 16, 12), 0.1, dtype=dtype)
            p_eager = p.detach().clone().requires_grad_()
            mask = None if mask_shape is None else torch.rand(mask_shape) < 0.7
            fused_loss = ACBMSELoss(**kwargs, fused=True)(p, t, mask)
            eager_loss = ACBMSELoss(**kwargs, fused=False)(p_eager, t, mask)
            torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-5, atol=1e-7)
            grad = torch.rand_like(fused_loss)
            fused_loss.backward(grad)
            eager_loss.backward(grad)
            torch.testing.assert_close(p.grad, p_eager.grad, rtol=1e-5, atol=1e-7)
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0  # it did compile
        p, t = sparse((4, 3, 16, 12), 0.1)
        # The first case's signature again, with new weights: no recompile.
        for weights, tol in [((0.2, 5.0), 0.0), ((3.0, 0.1), 0.25), ((1.0, 0.5), 0.1)]:
            p_eager = p.detach().clone().requires_grad_()
            fused_loss = ACBMSELoss(*weights, zero_tolerance=tol, fused=True)(p, t)
            eager_loss = ACBMSELoss(*weights, zero_tolerance=tol, fused=False)(p_eager, t)
            torch.testing.assert_close(fused_loss, eager_loss, rtol=1e-5, atol=1e-7)
            p.grad = None
            fused_loss.backward()
            eager_loss.backward()
            torch.testing.assert_close(p.grad, p_eager.grad, rtol=1e-5, atol=1e-7)
        assert counters["stats"]["unique_graphs"] == graphs
    for kernel in (acb_functional._FORWARD, acb_functional._BACKWARD):
        assert kernel.failed is None


def test_valid_mask_keyword_and_deprecated_mask():
    """``valid_mask=`` is the keyword of every dense loss; ``mask=`` still works, with a warning
    naming the new keyword."""
    p, t = sparse((2, 1, 4, 4), 0.3)
    mask = torch.rand(2, 1, 4, 4) < 0.6
    loss = ACBMSELoss(0.5, 2.0)
    expected = loss(p, t, valid_mask=mask)
    torch.testing.assert_close(loss(p, t, mask), expected)
    with pytest.warns(DeprecationWarning, match="valid_mask"):
        torch.testing.assert_close(loss(p, t, mask=mask), expected)
    with pytest.raises(TypeError, match="valid_mask"):
        loss(p, t, valid_mask=mask, mask=mask)
