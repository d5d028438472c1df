"""HitGraphDenoiser: shapes, empty pixels, batch independence (no padding leak), gradients,
arguments, and the DenseTask gate around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.datasets.detector_sim import normalize_times
from smp_imbalance.models import MODELS, HitGraphDenoiser
from smp_imbalance.training.dense import DenseTask

GAP, MAX_TIME = 0.1, 1000
SMALL = {"channels": 8, "neighbours": 4, "layers": 2, "radius": 6.0}


def _random_frames(
    counts: list[int], shape: tuple[int, int] = (24, 16), seed: int = 0
) -> torch.Tensor:
    """Frames (N, 1, H, W) with exactly ``counts[i]`` hits at random pixels and times."""
    g = torch.Generator().manual_seed(seed)
    height, width = shape
    frames = torch.zeros(len(counts), height * width, dtype=torch.int64)
    for i, k in enumerate(counts):
        pixels = torch.randperm(height * width, generator=g)[:k]
        frames[i, pixels] = torch.randint(1, MAX_TIME + 1, (k,), generator=g)
    return normalize_times(frames, GAP, MAX_TIME).view(len(counts), 1, height, width)


@pytest.fixture(scope="module")
def detector_images() -> torch.Tensor:
    """Three noisy detector frames (3, 1, 128, 88) with different hit counts."""
    ds = DetectorFrames(num_frames=3, seed=11, train=False, noise_hits=(40, 220))
    images = torch.stack([ds[i]["image"] for i in range(3)])
    counts = (images > 0).flatten(1).sum(1)
    assert len(set(counts.tolist())) == 3
    return images


def _model(seed: int = 0, **kwargs: object) -> HitGraphDenoiser:
    torch.manual_seed(seed)
    return HitGraphDenoiser(**{**SMALL, **kwargs}).eval()  # type: ignore[arg-type]


# -- outputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic", [False, True])
def test_shape_empty_logit_and_finite(dynamic: bool) -> None:
    x = _random_frames([30, 5, 0, 1])
    model = _model(dynamic=dynamic, empty_logit=-13.5)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert (out[x == 0] == -13.5).all()
    # hits get a logit of the network, not the empty one
    assert (out[x > 0] != -13.5).all()


def test_registered_for_dense_task() -> None:
    assert MODELS["HitGraphDenoiser"] is HitGraphDenoiser


@pytest.mark.parametrize("dynamic", [False, True])
def test_each_frame_is_independent_of_the_batch(
    dynamic: bool, detector_images: torch.Tensor
) -> None:
    """Padding must not leak: a frame's logits are the same alone and in any batch."""
    model = _model(channels=16, neighbours=8, layers=3, radius=28.0, dynamic=dynamic)
    with torch.no_grad():
        together = model(detector_images)
        for i in range(3):
            alone = model(detector_images[i : i + 1])
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-4)
        order = [2, 0, 1]
        permuted = model(detector_images[order])
    torch.testing.assert_close(permuted, together[order], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dynamic", [False, True])
def test_frames_with_no_hits_and_fewer_hits_than_neighbours(dynamic: bool) -> None:
    x = _random_frames([0, 2, 25, 1, 4], seed=3)
    model = _model(neighbours=6, dynamic=dynamic)
    with torch.no_grad():
        together = model(x)
        assert torch.isfinite(together).all()
        assert (together[0] == model.empty_logit).all()
        for i in range(len(x)):
            alone = model(x[i : i + 1])
            assert torch.isfinite(alone).all()
            torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-4, atol=1e-4)


def test_all_empty_batch_gives_the_empty_logit() -> None:
    model = _model()
    out = model(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 1, 8, 8)
    assert (out == model.empty_logit).all()


def test_output_depends_on_the_hits() -> None:
    x = _random_frames([20], seed=1)
    model = _model()
    with torch.no_grad():
        base = model(x)
        moved = x.clone()
        lit = torch.nonzero(x.flatten()).flatten()
        moved.view(-1)[lit[0]] = 1.0  # one hit to the last time bin
        assert not torch.allclose(model(moved)[x > 0], base[x > 0])


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("dynamic", [False, True])
def test_gradients_reach_every_parameter(dynamic: bool) -> None:
    x = _random_frames([40, 12], seed=2)
    model = _model(layers=3, dynamic=dynamic).train()
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (model(x) * weights * (x > 0)).sum().backward()
    dead = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0
    ]
    assert dead == []


def test_dynamic_layers_see_other_hits() -> None:
    x = _random_frames([30], seed=4)
    model = _model(layers=2, dynamic=True)
    # with the second layer's messages cut by hand, the output must change
    with torch.no_grad():
        base = model(x)
        model.convs[1].out.weight.zero_()
        cut = model(x)
    assert not torch.allclose(base[x > 0], cut[x > 0])


@pytest.mark.parametrize("dynamic", [False, True])
def test_finite_difference_on_one_weight_float64(dynamic: bool) -> None:
    x = _random_frames([9, 5], shape=(10, 8), seed=5).double()
    model = _model(channels=4, neighbours=3, layers=2, radius=4.0, dynamic=dynamic).double()
    weights = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss() -> torch.Tensor:
        return (model(x) * weights * (x > 0)).sum()

    for param in (model.embed[0].weight, model.convs[0].edge.weight, model.context[0].weight):
        model.zero_grad()
        loss().backward()
        assert param.grad is not None and torch.isfinite(param.grad).all()
        analytic = param.grad[0, 0].item()
        eps = 1e-6
        with torch.no_grad():
            param[0, 0] += eps
            up = loss().item()
            param[0, 0] -= 2 * eps
            down = loss().item()
            param[0, 0] += eps
        assert analytic == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-7)


# -- arguments and state ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 2},
        {"classes": 3},
        {"channels": 0},
        {"channels": 8.0},
        {"neighbours": 0},
        {"layers": -1},
        {"radius": 0.0},
        {"time_scale": -1.0},
        {"gap": 0.0},
        {"gap": 1.0},
        {"max_time": 1},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HitGraphDenoiser(**kwargs)


def test_state_dict_round_trip() -> None:
    x = _random_frames([15, 7], seed=6)
    a = _model(seed=0, dynamic=True)
    b = _model(seed=1, dynamic=True)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


# -- DenseTask gate ---------------------------------------------------------------------------
def _task() -> DenseTask:
    torch.manual_seed(0)
    return DenseTask(
        arch="HitGraphDenoiser",
        model_kwargs={"channels": 8, "neighbours": 4, "layers": 2},
        output_activation="gate",
        loss="acb_mse",
        metrics="none",
        plot_every_n_epochs=0,
    )


def test_dense_task_builds_our_model() -> None:
    task = _task()
    assert isinstance(task.net, HitGraphDenoiser)
    assert task.net.neighbours == 4
    assert task.divisor == 1


def test_dense_task_gate_train_and_eval(detector_images: torch.Tensor) -> None:
    task = _task()
    x = detector_images[:2]
    task.train()
    soft = task(x)
    torch.testing.assert_close(soft, x * torch.sigmoid(task.net(x)))
    assert (soft[x == 0] == 0).all()
    task.eval()
    with torch.no_grad():
        hard = task(x)
    assert ((hard == x) | (hard == 0)).all()
    assert (hard[x == 0] == 0).all()
    keep = torch.sigmoid(task.net(x)) > task.hparams.gate_threshold
    torch.testing.assert_close(hard, torch.where(keep, x, torch.zeros_like(x)), rtol=0, atol=0)


def test_dense_task_one_step_on_detector_frames() -> None:
    ds = DetectorFrames(num_frames=2, seed=21, train=False, target="kept")
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    task = _task().train()
    optimiser = torch.optim.AdamW(task.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        loss = task._loss(task(batch["image"]), batch)
        assert torch.isfinite(loss)
        optimiser.zero_grad()
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in task.parameters())
        optimiser.step()
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in task.parameters())
    assert np.isfinite(losses).all()
    task.eval()
    with torch.no_grad():
        out = task(batch["image"])
    assert torch.isfinite(out).all()
