"""smp_imbalance.models.hits: padded hit lists of sparse frames, distances, scatter back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_imbalance.datasets.detector_sim import normalize_times
from smp_imbalance.models.hits import hit_list

GAP, MAX_TIME = 0.1, 1000


def _frames(
    times: list[list[list[int]]], gap: float = GAP, max_time: int = MAX_TIME
) -> torch.Tensor:
    """Integer time bins (N, H, W) (0 = no hit) -> normalised float64 frames (N, 1, H, W)."""
    t = torch.tensor(times, dtype=torch.float64)
    # normalize_times's formula in float64 (it returns float32)
    return torch.where(t > 0, gap + (1 - gap) * (t - 1) / (max_time - 1), 0.0).unsqueeze(1)


def _bin(v: float, gap: float = GAP, max_time: int = MAX_TIME) -> float:
    return 1.0 + (v - gap) * (max_time - 1) / (1.0 - gap)


def test_exact_lists_in_pixel_order_with_padding() -> None:
    x = _frames(
        [
            [[0, 7, 0, 0], [3, 0, 0, 1000]],  # 3 hits: pixels 1, 4, 7
            [[0, 0, 0, 0], [0, 0, 500, 0]],  # 1 hit: pixel 6
        ]
    )
    hits = hit_list(x, GAP, MAX_TIME)
    assert hits.size == 3
    assert hits.shape == (2, 4)
    assert hits.counts.tolist() == [3, 1]
    assert hits.valid.tolist() == [[True, True, True], [True, False, False]]
    assert hits.index[0].tolist() == [1, 4, 7]
    assert hits.index[1, 0].item() == 6
    # padding points at non-hit pixels (distinct from the hit)
    assert set(hits.index[1, 1:].tolist()).isdisjoint({6})
    assert (x.flatten(1)[1].gather(0, hits.index[1, 1:]) == 0).all()
    assert hits.row[0].tolist() == [0.0, 1.0, 1.0]
    assert hits.col[0].tolist() == [1.0, 0.0, 3.0]
    assert hits.row[1, 0].item() == 1.0 and hits.col[1, 0].item() == 2.0
    # float64 frames: the bins are the integer times back, to rounding
    torch.testing.assert_close(
        hits.time_bin[0], torch.tensor([7.0, 3.0, 1000.0], dtype=torch.float64)
    )
    assert hits.time_bin[1, 0].item() == pytest.approx(500.0, abs=1e-9)
    assert hits.index.dtype == torch.int64


@pytest.mark.parametrize(("gap", "max_time"), [(0.1, 1000), (0.25, 64), (0.5, 2)])
def test_time_bins_follow_the_formula(gap: float, max_time: int) -> None:
    values = [gap, gap + 0.013, 0.77, 1.0]
    x = torch.zeros(1, 1, 2, 3, dtype=torch.float64)
    x.view(-1)[[0, 2, 3, 5]] = torch.tensor(values, dtype=torch.float64)
    hits = hit_list(x, gap, max_time)
    expected = torch.tensor([_bin(v, gap, max_time) for v in values], dtype=torch.float64)
    torch.testing.assert_close(hits.time_bin[0], expected, rtol=0, atol=1e-9)
    assert hits.time_bin[0, 0].item() == pytest.approx(1.0)
    assert hits.time_bin[0, -1].item() == pytest.approx(float(max_time))


def test_float32_integer_bins_round_trip() -> None:
    times = torch.arange(1, MAX_TIME + 1)
    x = normalize_times(times, GAP, MAX_TIME).view(1, 1, 40, 25)
    hits = hit_list(x, GAP, MAX_TIME)
    assert hits.size == MAX_TIME
    assert (hits.time_bin[0] - times.float()).abs().max() < 1e-3


def test_hit_threshold_is_half_the_gap() -> None:
    x = torch.tensor([[[[0.0, 0.049, 0.05, 0.051]]]], dtype=torch.float64)
    hits = hit_list(x, 0.1, 1000)
    assert hits.counts.tolist() == [2]
    assert hits.index[0].tolist() == [2, 3]


def test_frame_without_hits_in_a_batch_with_hits() -> None:
    x = _frames([[[0, 0, 0], [0, 0, 0]], [[5, 0, 9], [0, 2, 0]], [[0, 0, 0], [0, 0, 0]]])
    hits = hit_list(x, GAP, MAX_TIME)
    assert hits.size == 3
    assert hits.counts.tolist() == [0, 3, 0]
    assert not hits.valid[0].any() and not hits.valid[2].any()
    assert hits.valid[1].all()
    assert hits.index[1].tolist() == [0, 2, 4]
    out = hits.to_frame(torch.ones(3, 3, dtype=torch.float64), fill=-7.0)
    assert (out[0] == -7).all() and (out[2] == -7).all()
    assert out[1].flatten().tolist() == [1, -7, 1, -7, 1, -7]


@pytest.mark.parametrize("n", [0, 2])
def test_all_empty_batch_has_size_zero(n: int) -> None:
    x = torch.zeros(n, 1, 3, 4)
    hits = hit_list(x, GAP, MAX_TIME)
    assert hits.size == 0
    assert hits.index.shape == (n, 0) and hits.valid.shape == (n, 0)
    assert hits.counts.tolist() == [0] * n
    out = hits.to_frame(torch.zeros(n, 0), fill=-3.0)
    assert out.shape == (n, 1, 3, 4)
    assert (out == -3).all()
    coords = hits.scaled_coords(2.0, 1.0)
    assert coords.shape == (n, 0, 3)
    assert hits.pair_distances(coords).shape == (n, 0, 0)


def test_to_frame_round_trip_and_fill() -> None:
    rng = np.random.default_rng(0)
    times = rng.integers(1, MAX_TIME + 1, (3, 6, 5)) * (rng.random((3, 6, 5)) < 0.3)
    times[1] = 0
    x = _frames(times.tolist())
    hits = hit_list(x, GAP, MAX_TIME)
    # scattering the hit values back gives the input frames exactly
    values = x.flatten(1).gather(1, hits.index)
    torch.testing.assert_close(hits.to_frame(values, 0.0), x, rtol=0, atol=0)
    # padding values are ignored, fill lands everywhere else
    garbage = values.masked_fill(~hits.valid, 123.0)
    out = hits.to_frame(garbage, -1.0)
    assert (out[x == 0] == -1).all()
    assert (out[x > 0] == x[x > 0]).all()
    # per-hit ordinal numbers land on their pixels
    ordinal = torch.arange(hits.size, dtype=torch.float64).expand(3, -1)
    out = hits.to_frame(ordinal, -1.0).flatten(1)
    for i in range(3):
        lit = torch.nonzero(x[i].flatten()).flatten()
        assert out[i, lit].tolist() == list(range(lit.numel()))


def test_to_frame_gradient_only_through_valid_hits() -> None:
    x = _frames([[[0, 4, 0], [8, 0, 0]], [[0, 0, 0], [0, 0, 3]]])
    hits = hit_list(x, GAP, MAX_TIME)
    values = torch.ones(2, hits.size, dtype=torch.float64, requires_grad=True)
    hits.to_frame(values, 0.0).sum().backward()
    assert values.grad is not None
    assert values.grad.tolist() == hits.valid.double().tolist()


def test_scaled_coords() -> None:
    x = _frames([[[0, 0, 0], [0, 0, 11]]])
    hits = hit_list(x, GAP, MAX_TIME)
    coords = hits.scaled_coords(radius=2.0, time_scale=3.0)
    torch.testing.assert_close(
        coords[0, 0], torch.tensor([0.5, 1.0, 16.5], dtype=torch.float64), rtol=0, atol=1e-9
    )


def test_pair_distances_inf_on_diagonal_and_padding() -> None:
    x = _frames([[[1, 0, 0], [0, 0, 1]], [[0, 0, 0], [0, 1, 0]]])
    hits = hit_list(x, GAP, MAX_TIME)
    coords = hits.scaled_coords(radius=1.0, time_scale=1.0)
    d = hits.pair_distances(coords)
    assert d.shape == (2, 2, 2)
    assert torch.isinf(d.diagonal(dim1=1, dim2=2)).all()
    # frame 0: two hits at (0, 0) and (1, 2), same time: distance sqrt(5)
    assert d[0, 0, 1].item() == pytest.approx(5**0.5)
    assert d[0, 1, 0].item() == pytest.approx(5**0.5)
    # frame 1: one hit, the second slot is padding: inf towards it
    assert torch.isinf(d[1, 0, 1])


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 2, 3, 4), (1, 1, 1, 3, 4), (3,)])
def test_bad_shape_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        hit_list(torch.zeros(shape))
