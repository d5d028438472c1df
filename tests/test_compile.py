"""FusedKernel (the opt-in fused path): the eager fallback, the environment switch, and that the
loss modules never reach it by default.

``torch.compile`` is replaced by a stub, so that the tests run in milliseconds; the real compiler
is exercised by the ``fused=True`` tests of each loss.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from smp_imbalance.losses._compile import COMPILE_ENV, FusedFallbackWarning, FusedKernel


def _kernel(x: torch.Tensor, y: torch.Tensor, scale: float, pooling: str):
    """A small pure kernel with a constant and a Python branch, returning a tuple."""
    d = (x - y) * scale
    total = d.square().sum() if pooling == "batch" else d.square().flatten(1).sum(1)
    return total, 2.0 * d


def _inputs(shape=(3, 4, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(shape), torch.rand(shape)


def _assert_same(actual, expected) -> None:
    assert type(actual) is type(expected)
    if isinstance(expected, (tuple, list)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _assert_same(a, e)
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-7)


# -- eager fallback and switches ------------------------------------------------------------------


def test_compile_failure_warns_once_and_runs_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(COMPILE_ENV, "1")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    kernel = FusedKernel(_kernel, "toy")
    x, y = _inputs()
    with pytest.warns(FusedFallbackWarning, match=r"toy: torch.compile is unavailable"):
        out = kernel(x, y, 0.5, "batch")
    _assert_same(out, _kernel(x, y, 0.5, "batch"))
    assert kernel.failed == "RuntimeError: no C++ compiler"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once
        _assert_same(kernel(x, y, 0.5, "sample"), _kernel(x, y, 0.5, "sample"))
    kernel.reset()
    assert kernel.failed is None


@pytest.mark.parametrize("value", ["0", "false", "No", " off "])
def test_environment_switch_forces_eager(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    def must_not_compile(*args, **kwargs):
        raise AssertionError("compiled although disabled")

    monkeypatch.setenv(COMPILE_ENV, value)
    monkeypatch.setattr(torch, "compile", must_not_compile)
    kernel = FusedKernel(_kernel, "toy")
    x, y = _inputs()
    with torch.no_grad():
        for _ in range(5):
            _assert_same(kernel(x, y, 2.0, "batch"), _kernel(x, y, 2.0, "batch"))
    assert kernel.failed is None


def test_enabled_false_forces_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", pytest.fail)
    x, y = _inputs()
    out = FusedKernel(_kernel, "toy")(x, y, 2.0, "batch", enabled=False)
    _assert_same(out, _kernel(x, y, 2.0, "batch"))


@pytest.mark.parametrize(
    "name, kwargs",
    [("acb_mse", {}), ("valid_pixel", {}), ("sam", {}), ("sam_mse", {}), ("crl", {})],
)
def test_losses_are_eager_by_default(monkeypatch: pytest.MonkeyPatch, name, kwargs) -> None:
    """The default modules never call torch.compile (the opt-in path is fused=True)."""
    from smp_imbalance import create_loss

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(torch, "compile", pytest.fail)
    loss = create_loss(name, **kwargs)
    if name == "crl":
        y_pred = torch.randn(8, 5, requires_grad=True)
        y_true = (torch.rand(8, 5) < 0.3).float()
    else:
        y_pred = torch.rand(2, 3, 4, 4, requires_grad=True)
        y_true = torch.rand(2, 3, 4, 4)
    loss(y_pred, y_true).backward()
    assert torch.isfinite(y_pred.grad).all()


def test_fused_true_goes_through_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    from smp_imbalance import create_loss

    compiled: list[str] = []

    def fake_compile(fn, **kwargs):
        assert kwargs.get("fullgraph") is True
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(torch, "compile", fake_compile)
    from smp_imbalance.losses.functional import acb

    acb._FORWARD.reset()
    acb._BACKWARD.reset()
    y_pred = torch.rand(2, 1, 4, 4, requires_grad=True)
    create_loss("acb_mse", fused=True)(y_pred, torch.rand(2, 1, 4, 4)).backward()
    acb._FORWARD.reset()
    acb._BACKWARD.reset()
    assert compiled == ["_forward_kernel", "_backward_kernel"]


@pytest.mark.parametrize("options", [None, {"cpp.threads": 1}], ids=["default", "one_thread"])
def test_options_reach_torch_compile(monkeypatch: pytest.MonkeyPatch, options) -> None:
    monkeypatch.setenv(COMPILE_ENV, "1")
    seen: list[dict] = []

    def fake_compile(fn, **kwargs):
        seen.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    kernel = FusedKernel(_kernel, "toy", options=options)
    x, y = _inputs()
    _assert_same(kernel(x, y, 0.5, "batch"), _kernel(x, y, 0.5, "batch"))
    assert seen == [{"dynamic": None, "fullgraph": True, "options": options}]


def test_crl_kernel_compiles_single_threaded() -> None:
    """The CRL's tensors are ~2,000 numbers: its compiled kernels must not open an OpenMP region
    each (on a shared CPU every region waits for the slowest thread)."""
    from smp_imbalance.losses.functional import mining

    assert mining._VALUE_AND_GRAD.options == {"cpp.threads": 1}


def test_option_rejected_by_torch_compile_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch):
    """An option a future torch no longer knows raises in ``torch.compile`` itself: the kernel
    warns once and runs eagerly instead of failing the loss."""
    monkeypatch.setenv(COMPILE_ENV, "1")

    def rejecting(fn, **kwargs):
        raise RuntimeError("Unexpected optimization option cpp.threads")

    monkeypatch.setattr(torch, "compile", rejecting)
    kernel = FusedKernel(_kernel, "toy", options={"cpp.threads": 1})
    x, y = _inputs()
    with pytest.warns(FusedFallbackWarning, match="Unexpected optimization option"):
        _assert_same(kernel(x, y, 0.5, "batch"), _kernel(x, y, 0.5, "batch"))
    assert kernel.failed is not None
