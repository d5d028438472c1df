"""The losses on a CUDA device: same values and gradients as on the CPU, no host-device sync in
forward or backward, float32 compute under autocast. Skipped where no GPU is present (CI has none;
run on a GPU machine with ``pytest tests/test_cuda.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from smp_imbalance import create_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

Inputs = tuple[torch.Tensor, ...]


def _frames(device: str) -> Inputs:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(4, 1, 32, 24, generator=g) * (torch.rand(4, 1, 32, 24, generator=g) < 0.1)
    pred = torch.rand(4, 1, 32, 24, generator=g)
    return pred.to(device), target.to(device)


def _bands(device: str) -> Inputs:
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 4, 16, 16, generator=g) + 0.01
    target[torch.rand(3, 4, 16, 16, generator=g) < 0.3] = 0.0
    target[2] = 0.0  # one all-invalid sample
    pred = target + 0.1 * torch.randn(3, 4, 16, 16, generator=g)
    return pred.to(device), target.to(device)


def _multilabel(device: str) -> Inputs:
    g = torch.Generator().manual_seed(2)
    target = (
        torch.rand(32, 6, generator=g) < torch.tensor([0.5, 0.1, 0.1, 0.05, 0.3, 0.0])
    ).float()
    logits = torch.randn(32, 6, generator=g)
    return logits.to(device), target.to(device)


def _multilabel_features(device: str) -> Inputs:
    features = torch.randn(32, 8, generator=torch.Generator().manual_seed(4))
    return *_multilabel(device), features.to(device)


def _single_label(device: str) -> Inputs:
    g = torch.Generator().manual_seed(3)
    target = torch.multinomial(torch.tensor([0.7, 0.2, 0.06, 0.04]), 40, True, generator=g)
    return torch.randn(40, 4, generator=g).to(device), target.to(device)


CASES: dict[str, tuple[Callable[[], torch.nn.Module], Callable[[str], Inputs]]] = {
    "acb_mse": (lambda: create_loss("acb_mse", zero_weighting=57.0), _frames),
    "acb_mse eager": (lambda: create_loss("acb_mse", fused=False), _frames),
    "acb_mse sample": (lambda: create_loss("acb_mse", pooling="sample"), _frames),
    "valid_pixel": (lambda: create_loss("valid_pixel"), _bands),
    "valid_pixel eager": (lambda: create_loss("valid_pixel", fused=False), _bands),
    "valid_pixel sample": (lambda: create_loss("valid_pixel", granularity="sample"), _bands),
    "sam": (lambda: create_loss("sam"), _bands),
    "sam_mse": (lambda: create_loss("sam_mse"), _bands),
    "crl": (lambda: create_loss("crl", alpha=0.5, k=5), _multilabel),
    "crl absolute": (lambda: create_loss("crl", alpha=0.5, criterion="absolute"), _multilabel),
    "crl distribution": (
        lambda: create_loss("crl", alpha=0.5, criterion="distribution"),
        _multilabel,
    ),
    "crl instance": (
        lambda: create_loss("crl", alpha=0.5, mining="instance"),
        _multilabel_features,
    ),
    "crl single-label": (lambda: create_loss("crl", alpha=0.5, k=5), _single_label),
}


def _forward_backward(
    loss: torch.nn.Module, inputs: Inputs, device: str
) -> tuple[torch.Tensor, ...]:
    pred = inputs[0].to(device).detach().requires_grad_(True)
    rest = [x.to(device) for x in inputs[1:]]
    # CRL with features: (logits, target, features)
    value = loss(pred, rest[0], features=rest[1]) if len(rest) == 2 else loss(pred, *rest)
    value.backward()
    assert pred.grad is not None
    return value.detach(), pred.grad


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMP_IMBALANCE_COMPILE", "1")  # the fused kernels, as users get them


@pytest.mark.parametrize("name", list(CASES))
def test_cuda_equals_cpu_without_host_sync(name: str, compiled: None) -> None:
    make, data = CASES[name]
    loss = make()
    inputs = data("cpu")
    expected_value, expected_grad = _forward_backward(loss, inputs, "cpu")
    loss = loss.cuda()
    _forward_backward(loss, inputs, "cuda")  # compiles, caches constants on the device
    cuda_inputs = [x.cuda() for x in inputs]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        value, grad = _forward_backward(loss, cuda_inputs, "cuda")
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert value.is_cuda and value.dtype == torch.float32
    torch.testing.assert_close(value.cpu(), expected_value, rtol=2e-5, atol=1e-6)
    torch.testing.assert_close(grad.cpu(), expected_grad, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["acb_mse", "valid_pixel", "sam_mse", "crl"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_under_autocast_compute_in_float32(
    name: str, dtype: torch.dtype, compiled: None
) -> None:
    make, data = CASES[name]
    loss = make().cuda()
    inputs = data("cuda")
    low = [inputs[0].to(dtype), *inputs[1:]]
    # The reference: float32 maths on the values the half-precision prediction holds.
    expected, _ = _forward_backward(loss, [low[0].float(), *low[1:]], "cuda")
    with torch.autocast("cuda", dtype=dtype):
        value, grad = _forward_backward(loss, low, "cuda")
    assert value.dtype == torch.float32 and torch.isfinite(value)
    assert grad.dtype == dtype and torch.isfinite(grad).all()
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def test_edge_cases_stay_on_the_device_and_attached() -> None:
    pred = torch.rand(2, 3, 8, 8, device="cuda", requires_grad=True)
    all_invalid = create_loss("valid_pixel")(pred, torch.zeros(2, 3, 8, 8, device="cuda"))
    logits = torch.randn(8, 4, device="cuda", requires_grad=True)
    no_minority = create_loss("crl", alpha=1.0)(logits, torch.ones(8, 4, device="cuda"))
    no_hits = create_loss("acb_mse")(pred, torch.zeros_like(pred))
    for value in (all_invalid, no_minority, no_hits):
        assert value.is_cuda and value.requires_grad and torch.isfinite(value)
    assert all_invalid.item() == 0.0 and no_minority.item() == 0.0


def test_user_compiled_training_step_fullgraph() -> None:
    """A caller's own ``torch.compile(fullgraph=True)`` region around model + loss (inductor)."""
    model = torch.nn.Conv2d(1, 1, 3, padding=1).cuda()
    acb = create_loss("acb_mse", zero_weighting=57.0)
    vp = create_loss("valid_pixel")

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = model(x)
        return acb(y, t) + vp(y, t)

    x, t = (v.cuda() for v in _frames("cpu"))
    expected = step(x, t)
    compiled_step = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled_step(x, t), expected, rtol=1e-5, atol=1e-6)
