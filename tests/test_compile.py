"""FusedKernel: the eager fallback, the environment switch, and the dynamo-free direct path.

Most tests replace ``torch.compile`` by the identity (the "dynamo path" then runs the eager
function) and, where they only check the bookkeeping, ``torch._inductor.compile`` by the traced
graph itself, so that they run in milliseconds; ``test_direct_path_compiles_with_inductor`` runs
the real compiler.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from smp_imbalance.losses import _compile
from smp_imbalance.losses._compile import COMPILE_ENV, FusedFallbackWarning, FusedKernel


def _kernel(x: torch.Tensor, y: torch.Tensor, scale: float, pooling: str):
    """A small pure kernel with a constant and a Python branch, returning a tuple."""
    d = (x - y) * scale
    total = d.square().sum() if pooling == "batch" else d.square().flatten(1).sum(1)
    return total, 2.0 * d


def _nested_kernel(grads: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor):
    return x * grads[0], [x + grads[1], (x.sum(),)]


def _single_kernel(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x.abs() if mask is None else torch.where(mask, x, 0.0)


@pytest.fixture
def dynamo_is_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.compile(fn)`` returns ``fn``: the dynamo path runs eagerly."""
    monkeypatch.setenv(COMPILE_ENV, "1")
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)


@pytest.fixture
def inductor_is_identity(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """``torch._inductor.compile(graph, example)`` returns the traced graph; counts the calls."""
    calls: list[int] = []

    def fake_compile(graph: torch.fx.GraphModule, example: list[torch.Tensor]):
        calls.append(len(example))
        return graph

    monkeypatch.setattr(torch._inductor, "compile", fake_compile)
    return calls


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
    kernel = FusedKernel(_kernel, "toy", hot_calls=0)
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
    monkeypatch.setattr(torch._inductor, "compile", must_not_compile)
    kernel = FusedKernel(_kernel, "toy")
    x, y = _inputs()
    with torch.no_grad():
        for _ in range(5):
            _assert_same(kernel(x, y, 2.0, "batch"), _kernel(x, y, 2.0, "batch"))
    assert kernel.direct_signatures == 0 and kernel.failed is None


def test_enabled_false_forces_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", pytest.fail)
    x, y = _inputs()
    out = FusedKernel(_kernel, "toy")(x, y, 2.0, "batch", enabled=False)
    _assert_same(out, _kernel(x, y, 2.0, "batch"))


# -- the direct path ----------------------------------------------------------------------------


@pytest.mark.usefixtures("dynamo_is_identity")
def test_hot_signature_gets_one_direct_compile(inductor_is_identity: list[int]) -> None:
    kernel = FusedKernel(_kernel, "toy", hot_calls=3)
    x, y = _inputs()
    with torch.no_grad():
        for call in range(1, 7):
            x2, y2 = x + call, y - call  # new tensors, same signature
            _assert_same(kernel(x2, y2, 0.5, "sample"), _kernel(x2, y2, 0.5, "sample"))
            assert kernel.direct_signatures == (1 if call >= 3 else 0)
    assert inductor_is_identity == [2]  # one compile, with the two tensors as its inputs


@pytest.mark.usefixtures("dynamo_is_identity")
@pytest.mark.parametrize(
    "other",
    [
        pytest.param(lambda x, y: (x[:2], y[:2], 1.0, "sample"), id="shape"),
        pytest.param(lambda x, y: (x.double(), y.double(), 1.0, "sample"), id="dtype"),
        pytest.param(lambda x, y: (x.mT, y.mT, 1.0, "sample"), id="strides"),
        pytest.param(lambda x, y: (x, y, 0.25, "sample"), id="constant-value"),
        # 1 traced as an int and 1.0 as a float could promote differently
        pytest.param(lambda x, y: (x, y, 1, "sample"), id="constant-type"),
        pytest.param(lambda x, y: (x, y, 1.0, "batch"), id="branch"),
    ],
)
def test_signature_tells_apart_what_a_static_compile_depends_on(
    inductor_is_identity: list[int], other
) -> None:
    kernel = FusedKernel(_kernel, "toy", hot_calls=2)
    x, y = _inputs()
    first = (x, y, 1.0, "sample")
    with torch.no_grad():
        for args in (first, first, other(x, y), other(x, y)):
            _assert_same(kernel(*args), _kernel(*args))
    assert kernel.direct_signatures == 2 and len(inductor_is_identity) == 2


@pytest.mark.usefixtures("dynamo_is_identity")
def test_alignment_is_part_of_the_signature(inductor_is_identity: list[int]) -> None:
    kernel = FusedKernel(_single_kernel, "toy", hot_calls=1)
    storage = torch.rand(65)
    aligned, unaligned = storage[:64], storage[1:]  # same shape and strides, 4 bytes apart
    assert aligned.data_ptr() % 16 == 0 and unaligned.data_ptr() % 16 != 0
    with torch.no_grad():
        _assert_same(kernel(aligned, None), aligned.abs())
        _assert_same(kernel(unaligned, None), unaligned.abs())
    assert kernel.direct_signatures == 2


@pytest.mark.usefixtures("dynamo_is_identity", "inductor_is_identity")
def test_results_keep_their_structure() -> None:
    nested = FusedKernel(_nested_kernel, "nested", hot_calls=1)
    single = FusedKernel(_single_kernel, "single", hot_calls=1)
    x = torch.rand(2, 3)
    grads = (torch.rand(2, 3), torch.rand(2, 3))
    mask = torch.rand(2, 3) > 0.5
    with torch.no_grad():
        for _ in range(2):
            _assert_same(nested(grads, x), _nested_kernel(grads, x))
            _assert_same(single(x, mask), _single_kernel(x, mask))
            _assert_same(single(x, None), _single_kernel(x, None))
    assert nested.direct_signatures == 1 and single.direct_signatures == 2


@pytest.mark.usefixtures("dynamo_is_identity")
def test_no_direct_path_with_grad_kwargs_meta_tensors_or_unknown_constants(
    inductor_is_identity: list[int],
) -> None:
    kernel = FusedKernel(_kernel, "toy", hot_calls=1)
    x, y = _inputs()
    x_grad = x.clone().requires_grad_()
    out = kernel(x_grad, y, 0.5, "batch")  # grad enabled: autograd needs the dynamo path
    assert out[0].requires_grad
    with torch.no_grad():
        kernel(x, y, scale=0.5, pooling="batch")
        kernel(x.to("meta"), y.to("meta"), 0.5, "batch")
        kernel(x, y, 0.5, object())  # unknown constant type; the eager branch takes "sample"
    assert kernel.direct_signatures == 0 and inductor_is_identity == []


@pytest.mark.usefixtures("dynamo_is_identity")
def test_at_most_max_direct_signatures(inductor_is_identity: list[int]) -> None:
    kernel = FusedKernel(_single_kernel, "toy", hot_calls=1, max_direct=2)
    with torch.no_grad():
        for n in range(1, 6):
            x = torch.rand(n)
            _assert_same(kernel(x, None), x.abs())
    assert kernel.direct_signatures == 2 and len(inductor_is_identity) == 2
    kernel.reset()
    assert kernel.direct_signatures == 0


@pytest.mark.usefixtures("dynamo_is_identity")
def test_direct_compile_failure_warns_once_and_stays_on_dynamo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(graph, example):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(torch._inductor, "compile", broken)
    kernel = FusedKernel(_kernel, "toy", hot_calls=1)
    x, y = _inputs()
    with torch.no_grad():
        with pytest.warns(FusedFallbackWarning, match="dynamo-free compile failed"):
            _assert_same(kernel(x, y, 0.5, "batch"), _kernel(x, y, 0.5, "batch"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _assert_same(kernel(x, y, 0.5, "batch"), _kernel(x, y, 0.5, "batch"))
    assert kernel.direct_failed == "RuntimeError: inductor exploded"
    assert kernel.failed is None  # still fused, through torch.compile


@pytest.mark.usefixtures("dynamo_is_identity")
def test_direct_call_failure_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def compiled_that_fails_later(graph, example):
        def call(*tensors):
            raise AssertionError("expected size 3==4")

        return call

    monkeypatch.setattr(torch._inductor, "compile", compiled_that_fails_later)
    kernel = FusedKernel(_single_kernel, "toy", hot_calls=1)
    x = torch.rand(3)
    with torch.no_grad(), pytest.warns(FusedFallbackWarning, match="dynamo-free kernel failed"):
        _assert_same(kernel(x, None), x.abs())
    assert kernel.direct_signatures == 0 and kernel.direct_failed is not None


def test_counts_start_over_for_shapes_that_never_repeat(
    monkeypatch: pytest.MonkeyPatch, dynamo_is_identity: None, inductor_is_identity: list[int]
) -> None:
    monkeypatch.setattr(_compile, "_MAX_COUNTED", 4)
    kernel = FusedKernel(_single_kernel, "toy", hot_calls=2)
    with torch.no_grad():
        for n in range(1, 20):
            kernel(torch.rand(n), None)
    assert len(kernel._calls) <= 4 and inductor_is_identity == []


@pytest.mark.slow
def test_direct_path_compiles_with_inductor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real thing: make_fx + inductor, against the eager function, for a tuple result."""
    monkeypatch.setenv(COMPILE_ENV, "1")
    kernel = FusedKernel(_kernel, "toy", hot_calls=1)
    x, y = _inputs((4, 3, 16, 12))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FusedFallbackWarning)
        for pooling in ("batch", "sample"):
            _assert_same(kernel(x, y, 0.5, pooling), _kernel(x, y, 0.5, pooling))
    assert kernel.direct_signatures == 2 and kernel.direct_failed is None


@pytest.mark.slow
def test_direct_path_of_a_loss_under_cpu_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hot ACB-MSE signature under CPU autocast (bfloat16 inputs) runs the direct kernels and
    still computes in float32: the value and gradient of the eager loss outside autocast."""
    from smp_imbalance.losses import ACBMSELoss
    from smp_imbalance.losses.functional import acb

    monkeypatch.setenv(COMPILE_ENV, "1")
    for kernel in (acb._FORWARD, acb._BACKWARD):
        kernel.reset()
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 8, 8, generator=gen) * (torch.rand(2, 1, 8, 8, generator=gen) < 0.2)
    target = target.bfloat16()
    pred = torch.rand(2, 1, 8, 8, generator=gen).bfloat16().requires_grad_()
    reference = ACBMSELoss(fused=False)(pred.float(), target.float())
    (expected_grad,) = torch.autograd.grad(reference, pred)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedFallbackWarning)
        for _ in range(_compile.HOT_CALLS):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                value = ACBMSELoss()(pred, target)
            (grad,) = torch.autograd.grad(value, pred)
            assert value.dtype == torch.float32 and grad.dtype == torch.bfloat16
            torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(grad, expected_grad)
    assert acb._FORWARD.direct_signatures == 1 and acb._BACKWARD.direct_signatures == 1
