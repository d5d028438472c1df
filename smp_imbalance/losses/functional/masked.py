"""Valid-pixel weighted reductions and the spectral angle (pure tensor functions).

The valid-pixel weighted loss (seed ``002``, Sentinel-2 L1C -> L2A with nodata pixels) averages
a base loss over the valid pixels of each *group* -- a ``(sample, channel)`` pair, or a whole
sample -- and weights each group by a power of its valid-pixel ratio::

    L_g = (1 / n_g) * sum_{i valid in g} f(y_pred_i, y_true_i)
    w_g = (n_g / T_g) ** weight_power          (n_g valid of T_g pixels; 0.5 in the seed)
    loss = sum_g w_g L_g / sum_g w_g           over the groups with n_g > 0

``weight_power = 0`` weights every non-empty group alike (mean of per-group means);
``weight_power = 1`` with equal ``T_g`` is the plain masked mean over all valid pixels.

How the work is split, and why:

* The kernels (``_*_sums``) make the one pass over the pixels: the validity mask, the base loss,
  and per-``(sample, channel)`` sums and valid counts. They are pure, differentiable functions.
  With ``fused=True`` (the default) a custom autograd function runs each through
  :class:`~smp_imbalance.losses._compile.FusedKernel` twice: a compiled forward under no-grad,
  and a compiled backward, ``torch.func.vjp`` of the same function, which recomputes the mask
  and the error from the inputs instead of saving them -- about one read of the inputs per pass
  and one write of the gradient. ``fused=False``, or a caller's own ``torch.compile`` region,
  uses the function with plain autograd. Float hyper-parameters reach the kernels as 0-dim
  tensors, so a new value never recompiles; the only static argument is whether a
  ``valid_mask`` is given. Each kernel is its own ``def`` (its own code object, hence its own
  small compile cache).
* Granularity, weights and reduction then act on the ``(N, C)`` sums in eager code: sums and counts
  are additive, so ``granularity="sample"`` is a sum over channels, and these ops touch ``N * C``
  numbers only.
* A *callable* base loss runs eagerly (``fused`` is ignored for it): an arbitrary callable may not
  trace in one graph, and a failed compile would turn the shared kernels off for the whole
  process. Wrap your training step in ``torch.compile`` to fuse it with the rest.

Invalid pixels never reach the loss or its gradient: the prediction and target are replaced by
``1`` there with ``torch.where`` *before* the base loss (multiplying by the mask would turn a NaN
prediction at an invalid pixel into a NaN gradient, ``0 * nan``), and the loss map is zeroed
there with ``torch.where`` again. A callable base must hence be finite, with a finite gradient,
at ``(1, 1)`` -- true of any error that vanishes when prediction equals target.

Nothing here syncs with the host: no ``.item()``, ``nonzero``, boolean indexing or branching on
tensor values, so the functions also run inside a caller's ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable

import torch

from smp_imbalance.losses._checks import (
    check_choice,
    check_mask,
    check_non_negative,
    check_positive,
    check_reduction,
    check_same_shape,
    check_tensor,
    compute_dtype,
)
from smp_imbalance.losses._compile import FusedKernel

__all__ = [
    "BASE_LOSSES",
    "GRANULARITIES",
    "ElementwiseLoss",
    "check_options",
    "default_valid_mask",
    "elementwise_loss",
    "sam_mse_loss",
    "spectral_angle",
    "spectral_angle_loss",
    "valid_pixel_loss",
    "weighted_group_mean",
]

ElementwiseLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

BASE_LOSSES = ("mse", "l1", "huber", "charbonnier")
GRANULARITIES = ("channel", "sample")


# --------------------------------------------------------------------------------------------
# Elementwise pieces
# --------------------------------------------------------------------------------------------


def default_valid_mask(
    y_true: torch.Tensor, threshold: float | torch.Tensor | None = None
) -> torch.Tensor:
    """The validity rule without a ``valid_mask``, same shape as ``y_true``: ``isfinite(y_true)``,
    and ``y_true > threshold`` too when a ``threshold`` is given.

    Strictly greater: with ``threshold=0`` a digital number of 0 (Sentinel-2 nodata) is invalid.
    (The seed tests ``>= 0`` in one place and ``> threshold`` in another; we follow the latter.)
    NaN and +-inf targets are always invalid. ``threshold=None`` (or ``-inf``) applies no value
    rule.
    """
    finite = torch.isfinite(y_true)
    if threshold is None:
        return finite
    return (y_true > threshold) & finite


def _squared_error(p: torch.Tensor, t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    return (p - t).square()


def _absolute_error(p: torch.Tensor, t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    return (p - t).abs()


def _huber(p: torch.Tensor, t: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    # As F.huber_loss: 0.5 d^2 for |d| <= delta, else delta * (|d| - delta / 2); delta is a tensor.
    d = (p - t).abs()
    return torch.where(d <= delta, 0.5 * d.square(), delta * (d - 0.5 * delta))


def _charbonnier(p: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    # sqrt(d^2 + eps^2), the smooth L1 of LapSRN; its gradient is finite at d = 0.
    return ((p - t).square() + eps.square()).sqrt()


_ELEMENTWISE = {
    "mse": _squared_error,
    "l1": _absolute_error,
    "huber": _huber,
    "charbonnier": _charbonnier,
}


def elementwise_loss(
    y_pred: torch.Tensor, y_true: torch.Tensor, base: str, delta: float = 1.0, eps: float = 1e-3
) -> torch.Tensor:
    """The named base loss per element, no reduction: ``mse`` = ``d^2``, ``l1`` = ``|d|``,
    ``huber`` as :func:`torch.nn.functional.huber_loss` with ``delta``, ``charbonnier`` =
    ``sqrt(d^2 + eps^2)``, where ``d = y_pred - y_true``."""
    check_choice("base", base, BASE_LOSSES)
    param = delta if base == "huber" else eps
    param = torch.full((), param, dtype=y_pred.dtype, device=y_pred.device)
    return _ELEMENTWISE[base](y_pred, y_true, param)


# --------------------------------------------------------------------------------------------
# Kernels: one pass over the pixels -> per-(sample, channel) sums and valid counts
# --------------------------------------------------------------------------------------------


def _valid(y_true: torch.Tensor, valid_mask: torch.Tensor | None, threshold: torch.Tensor):
    if valid_mask is None:
        # threshold is a tensor here; -inf stands for "no value rule" (-inf < every finite t)
        return (y_true > threshold) & torch.isfinite(y_true)
    return valid_mask.expand(y_true.shape)


def _masked_sums(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    valid_mask: torch.Tensor | None,
    threshold: torch.Tensor,
    param: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C)`` sums of ``loss_fn`` over the valid pixels and ``(N, C)`` valid counts."""
    dtype = threshold.dtype
    p, t = y_pred.to(dtype), y_true.to(dtype)
    valid = _valid(t, valid_mask, threshold)
    loss = loss_fn(torch.where(valid, p, 1.0), torch.where(valid, t, 1.0), param)
    if loss.shape != p.shape:
        raise ValueError(
            f"the base loss must return a tensor of the input's shape {tuple(p.shape)} "
            f"(elementwise, no reduction), got {tuple(loss.shape)}"
        )
    loss = torch.where(valid, loss, 0.0)
    n, c = t.shape[:2]
    sums = loss.reshape(n, c, -1).sum(-1)
    counts = valid.reshape(n, c, -1).sum(-1, dtype=dtype)
    return sums, counts


def _mse_sums(y_pred, y_true, valid_mask, threshold, param):
    return _masked_sums(y_pred, y_true, valid_mask, threshold, param, _squared_error)


def _l1_sums(y_pred, y_true, valid_mask, threshold, param):
    return _masked_sums(y_pred, y_true, valid_mask, threshold, param, _absolute_error)


def _huber_sums(y_pred, y_true, valid_mask, threshold, param):
    return _masked_sums(y_pred, y_true, valid_mask, threshold, param, _huber)


def _charbonnier_sums(y_pred, y_true, valid_mask, threshold, param):
    return _masked_sums(y_pred, y_true, valid_mask, threshold, param, _charbonnier)


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` whose gradient at ``x = 0`` is 0 instead of ``inf``; NaN stays
    NaN (so a NaN prediction still propagates)."""
    zero = x == 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, x).sqrt())


def _sum(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    return functools.reduce(operator.add, terms)


def spectral_angle(
    y_pred: torch.Tensor, y_true: torch.Tensor, dim: int = 1, eps: float | torch.Tensor = 1e-8
) -> torch.Tensor:
    """Angle in radians, in ``[0, pi]``, between the vectors along ``dim`` (no masking).

    Shapes: ``(N, C, *)`` -> ``(N, *)`` for ``dim=1``. Computed as ``2 * atan2(|u - v|, |u + v|)``
    with ``u = p / max(|p|, eps)``, ``v = t / max(|t|, eps)`` (Kahan's formula: accurate at
    every angle, where ``arccos`` of the cosine loses half the digits near 0 and has
    an infinite slope at 1). Value and gradient are finite everywhere: the angle between identical
    vectors is exactly 0 with gradient 0; a vector shorter than ``eps`` is scaled by ``1 / eps``,
    so the angle goes continuously to ``pi / 2`` at a zero vector (0 when both are zero).
    The result is invariant to positive scaling of either vector (while its norm is >= ``eps``).
    """
    if not isinstance(eps, torch.Tensor):
        eps = torch.full((), eps, dtype=y_pred.dtype, device=y_pred.device)
    eps2 = eps.square()
    # Sums over the (few) channels are unrolled into elementwise ops on (N, *) slices: inductor
    # vectorises those over pixels, where a reduction over the strided channel dim ran 4x slower.
    ps, ts = y_pred.unbind(dim), y_true.unbind(dim)
    inv_p = _sum(x * x for x in ps).clamp_min(eps2).rsqrt()
    inv_t = _sum(x * x for x in ts).clamp_min(eps2).rsqrt()
    diff2 = _sum((x * inv_p - y * inv_t).square() for x, y in zip(ps, ts, strict=True))
    sum2 = _sum((x * inv_p + y * inv_t).square() for x, y in zip(ps, ts, strict=True))
    # atan2(0, 0) has a NaN gradient; that happens only when u = v = 0, where the angle is 0.
    both_zero = (diff2 + sum2) == 0
    return 2.0 * torch.atan2(_safe_sqrt(diff2), torch.where(both_zero, 1.0, _safe_sqrt(sum2)))


def _sam_sums(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    valid_mask: torch.Tensor | None,
    threshold: torch.Tensor,
    eps: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 1)`` sums of the spectral angle over the valid pixels and ``(N, 1)`` counts; a pixel
    is valid when it is valid in every channel."""
    dtype = threshold.dtype
    p, t = y_pred.to(dtype), y_true.to(dtype)
    valid = _valid(t, valid_mask, threshold).all(1)
    # Invalid pixels become the identical vectors (1, ..., 1): angle 0, gradient 0, never NaN.
    pixel_valid = valid.unsqueeze(1)
    angle = spectral_angle(
        torch.where(pixel_valid, p, 1.0), torch.where(pixel_valid, t, 1.0), dim=1, eps=eps
    )
    angle = torch.where(valid, angle, 0.0)
    n = t.shape[0]
    return angle.reshape(n, 1, -1).sum(-1), valid.reshape(n, 1, -1).sum(-1, dtype=dtype)


def _sam_mse_sums(y_pred, y_true, valid_mask, threshold, eps):
    """Both kernels' outputs from one pass over the inputs."""
    mse = _masked_sums(y_pred, y_true, valid_mask, threshold, eps, _squared_error)
    return (*mse, *_sam_sums(y_pred, y_true, valid_mask, threshold, eps))


# --------------------------------------------------------------------------------------------
# The fused path: compiled forward, compiled backward that recomputes instead of saving
# --------------------------------------------------------------------------------------------


def _vjp(sums_fn, grads, y_pred, y_true, valid_mask, threshold, param) -> torch.Tensor:
    """Gradient w.r.t. ``y_pred`` of ``sum_k <grads[k], sums_fn(...)[2k]>`` (the differentiable
    outputs are the even ones), recomputing the forward: compiled, it is one pass over memory."""

    def sums_only(p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return sums_fn(p, y_true, valid_mask, threshold, param)[0::2]

    _, pullback = torch.func.vjp(sums_only, y_pred)
    return pullback(grads)[0]


# One def per kernel, not closures: torch.compile caches per code object (8 entries at most),
# so each kernel gets its own small cache (mask given or not, static then dynamic shapes).
def _mse_vjp(grads, y_pred, y_true, valid_mask, threshold, param):
    return _vjp(_mse_sums, grads, y_pred, y_true, valid_mask, threshold, param)


def _l1_vjp(grads, y_pred, y_true, valid_mask, threshold, param):
    return _vjp(_l1_sums, grads, y_pred, y_true, valid_mask, threshold, param)


def _huber_vjp(grads, y_pred, y_true, valid_mask, threshold, param):
    return _vjp(_huber_sums, grads, y_pred, y_true, valid_mask, threshold, param)


def _charbonnier_vjp(grads, y_pred, y_true, valid_mask, threshold, param):
    return _vjp(_charbonnier_sums, grads, y_pred, y_true, valid_mask, threshold, param)


def _sam_vjp(grads, y_pred, y_true, valid_mask, threshold, param):
    return _vjp(_sam_sums, grads, y_pred, y_true, valid_mask, threshold, param)


def _sam_mse_vjp(grads, y_pred, y_true, valid_mask, threshold, param):
    return _vjp(_sam_mse_sums, grads, y_pred, y_true, valid_mask, threshold, param)


class _Kernels:
    """A sums function ``f(y_pred, y_true, valid_mask, threshold, param) -> (sums, counts, ...)``
    with its compiled forward and compiled backward (a vjp that recomputes ``f``)."""

    def __init__(self, fn, vjp, name: str) -> None:
        self.fn = fn
        self.forward = FusedKernel(fn, f"{name} forward")
        self.backward = FusedKernel(vjp, f"{name} backward")


_KERNELS = {
    "mse": _Kernels(_mse_sums, _mse_vjp, "valid_pixel (mse)"),
    "l1": _Kernels(_l1_sums, _l1_vjp, "valid_pixel (l1)"),
    "huber": _Kernels(_huber_sums, _huber_vjp, "valid_pixel (huber)"),
    "charbonnier": _Kernels(_charbonnier_sums, _charbonnier_vjp, "valid_pixel (charbonnier)"),
    "sam": _Kernels(_sam_sums, _sam_vjp, "sam"),
    "sam_mse": _Kernels(_sam_mse_sums, _sam_mse_vjp, "sam_mse"),
}


class _FusedSums(torch.autograd.Function):
    """Runs a :class:`_Kernels`: the forward kernel under no-grad (one pass, nothing of the
    input's size saved), the backward kernel recomputing what it needs from ``y_pred`` and
    ``y_true``. Letting autograd trace the compiled forward instead would save the validity mask
    and an error map between the passes, and inductor's CPU code stores and loads bool tensors
    slowly: measured 6x ``F.mse_loss`` that way, about 0.5x this way."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, kernels: _Kernels, y_pred, y_true, valid_mask, threshold, param
    ) -> tuple[torch.Tensor, ...]:
        outs = kernels.forward(y_pred, y_true, valid_mask, threshold, param)
        ctx.kernels = kernels
        ctx.save_for_backward(y_pred, y_true, valid_mask, threshold, param)
        ctx.mark_non_differentiable(*outs[1::2])
        return outs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        y_pred, y_true, valid_mask, threshold, param = ctx.saved_tensors
        # The (N, G) incoming grads arrive with strides that depend on the ops downstream (an
        # expand for granularity="sample"); contiguous copies keep one compiled backward.
        grads = tuple(g.contiguous() for g in grads[0::2])
        grad = ctx.kernels.backward(grads, y_pred, y_true, valid_mask, threshold, param)
        return None, grad, None, None, None, None


def _sums(
    kernel: str,
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    valid_mask: torch.Tensor | None,
    threshold: torch.Tensor,
    param: torch.Tensor,
    fused: bool,
) -> tuple[torch.Tensor, ...]:
    """Per-(sample, channel) sums and counts by the fused path or by plain autograd.

    The plain path is taken when ``fused=False``, inside a caller's ``torch.compile`` region
    (whose compiler then fuses the pure maths with the rest of the graph), and when the target
    requires grad (the fused backward only differentiates w.r.t. the prediction)."""
    kernels = _KERNELS[kernel]
    if not fused or torch.compiler.is_compiling() or y_true.requires_grad:
        return kernels.fn(y_pred, y_true, valid_mask, threshold, param)
    return _FusedSums.apply(kernels, y_pred, y_true, valid_mask, threshold, param)


# --------------------------------------------------------------------------------------------
# Weighting and reduction of per-group sums (eager; N x C numbers)
# --------------------------------------------------------------------------------------------


def weighted_group_mean(
    sums: torch.Tensor,
    counts: torch.Tensor,
    total: int,
    weight_power: float = 0.5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Valid-ratio weighted mean of per-group means.

    Args:
        sums: ``(N, G)`` sum of the loss over each group's valid pixels (0 where none).
        counts: ``(N, G)`` valid pixels per group, ``n_g``.
        total: pixels per group, ``T_g``.
        weight_power: ``w_g = (n_g / T_g) ** weight_power`` for ``n_g > 0``, else 0.
        reduction: ``"mean"``: ``sum_g w_g L_g / sum_g w_g`` (a scalar); ``"sum"``:
            ``sum_g w_g L_g``; ``"none"``: ``(N,)``, the weighted mean over each sample's own
            groups. Where no group has a valid pixel the result is 0 (attached to the graph).
    """
    has_valid = counts > 0
    means = sums / counts.clamp_min(1)
    weights = torch.where(has_valid, (counts / total).pow(weight_power), 0.0)
    weighted = weights * means
    if reduction == "sum":
        return weighted.sum()
    if reduction == "none":
        weighted, weights = weighted.sum(1), weights.sum(1)
    else:
        weighted, weights = weighted.sum(), weights.sum()
    return weighted / torch.where(weights > 0, weights, 1.0)


def _group(
    sums: torch.Tensor, counts: torch.Tensor, pixels: int, granularity: str
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-(sample, channel) sums -> per-group sums, counts and pixels per group."""
    if granularity == "sample":
        return sums.sum(1, keepdim=True), counts.sum(1, keepdim=True), pixels * sums.shape[1]
    return sums, counts, pixels


# --------------------------------------------------------------------------------------------
# Public functional API
# --------------------------------------------------------------------------------------------


def check_options(
    *,
    weight_power: float,
    reduction: str,
    threshold: float | None = None,
    granularity: str = "channel",
    base: str | ElementwiseLoss = "mse",
) -> None:
    """Validate the shared options (Python values only); raises ``ValueError``/``TypeError``."""
    check_non_negative("weight_power", weight_power)
    check_reduction(reduction)
    check_choice("granularity", granularity, GRANULARITIES)
    if threshold is None:
        pass
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be None or a real number, got {type(threshold).__name__}")
    elif math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    if not callable(base):
        check_choice("base", base, BASE_LOSSES)


def _check_inputs(
    y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor | None, min_channels: int
) -> None:
    check_tensor("y_pred", y_pred, min_dim=2)
    check_tensor("y_true", y_true, min_dim=2)
    check_same_shape(y_pred, y_true)
    if y_pred.device != y_true.device:
        raise ValueError(f"y_pred is on {y_pred.device} but y_true is on {y_true.device}")
    if y_pred.shape[1] < min_channels:
        raise ValueError(
            f"the spectral angle needs at least {min_channels} channels (dim 1), got y_pred of "
            f"shape {tuple(y_pred.shape)}"
        )
    if valid_mask is not None:
        check_mask(valid_mask, y_true, name="valid_mask")


def _threshold(threshold: float | None) -> float:
    """``None`` (no value rule) as ``-inf``: ``y_true > -inf`` holds for every finite target."""
    return -math.inf if threshold is None else threshold


def _scalar(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # A 0-dim tensor made on the device by a fill (no host-to-device copy); as a tensor it is a
    # graph input, so a new value does not recompile the fused kernel.
    return torch.full((), value, dtype=dtype, device=device)


def valid_pixel_loss(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    *,
    base: str | ElementwiseLoss = "mse",
    threshold: float | None = None,
    weight_power: float = 0.5,
    granularity: str = "channel",
    reduction: str = "mean",
    delta: float = 1.0,
    eps: float = 1e-3,
    fused: bool = False,
) -> torch.Tensor:
    """Valid-pixel weighted loss (see the module docstring for the formula).

    Args:
        y_pred: ``(N, C, *)`` floating-point prediction.
        y_true: ``(N, C, *)`` floating-point target, same shape.
        valid_mask: optional bool mask broadcastable to ``y_true`` (e.g. ``(N, 1, H, W)``);
            default: every finite pixel of ``y_true`` (and ``y_true > threshold`` when a
            ``threshold`` is given).
        base: ``"mse"``, ``"l1"``, ``"huber"`` (``delta``), ``"charbonnier"`` (``eps``), or a
            callable ``f(pred, target) -> same-shape tensor`` (run eagerly).
        granularity: ``"channel"``: a group per ``(sample, channel)``; ``"sample"``: per sample.
        reduction: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (``(N,)``), as in
            :func:`weighted_group_mean`.
        fused: run the named bases through the ``torch.compile``'d kernels (opt-in).

    Returns:
        float64 if an input is float64, else float32 (half inputs are computed in float32).
    """
    check_options(
        weight_power=weight_power,
        reduction=reduction,
        threshold=threshold,
        granularity=granularity,
        base=base,
    )
    _check_inputs(y_pred, y_true, valid_mask, min_channels=1)
    dtype = compute_dtype(y_pred, y_true)
    thr = _scalar(_threshold(threshold), dtype, y_true.device)
    if callable(base):
        loss_fn = lambda p, t, _: base(p, t)  # noqa: E731
        sums, counts = _masked_sums(y_pred, y_true, valid_mask, thr, thr, loss_fn)
    else:
        name, value = ("delta", delta) if base == "huber" else ("eps", eps)
        param = _scalar(check_positive(name, value), dtype, y_true.device)
        sums, counts = _sums(base, y_pred, y_true, valid_mask, thr, param, fused)
    groups = _group(sums, counts, math.prod(y_true.shape[2:]), granularity)
    return weighted_group_mean(*groups, weight_power, reduction)


def spectral_angle_loss(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    *,
    threshold: float | None = None,
    weight_power: float = 0.5,
    reduction: str = "mean",
    eps: float = 1e-8,
    fused: bool = False,
) -> torch.Tensor:
    """Spectral angle (radians) between ``y_pred`` and ``y_true`` along dim 1, averaged over the
    valid pixels of each sample and valid-ratio weighted across samples (groups = samples).

    A pixel counts when it is valid in every channel. Shapes ``(N, C, *)`` with ``C >= 2``;
    ``valid_mask``, ``threshold``, ``weight_power``, ``reduction`` and the result dtype as in
    :func:`valid_pixel_loss`; ``eps`` as in :func:`spectral_angle`.
    """
    check_options(weight_power=weight_power, reduction=reduction, threshold=threshold)
    check_positive("eps", eps)
    _check_inputs(y_pred, y_true, valid_mask, min_channels=2)
    dtype = compute_dtype(y_pred, y_true)
    device = y_true.device
    thr, eps_t = _scalar(_threshold(threshold), dtype, device), _scalar(eps, dtype, device)
    sums, counts = _sums("sam", y_pred, y_true, valid_mask, thr, eps_t, fused)
    return weighted_group_mean(sums, counts, math.prod(y_true.shape[2:]), weight_power, reduction)


def sam_mse_loss(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    threshold: float | None = None,
    weight_power: float = 0.5,
    granularity: str = "channel",
    reduction: str = "mean",
    eps: float = 1e-8,
    fused: bool = False,
) -> torch.Tensor:
    """``alpha * spectral_angle_loss + beta * valid_pixel_loss(base="mse")`` with the shared
    options, computed in one pass over the inputs. ``granularity`` applies to the MSE term (the
    angle is per pixel, its groups are samples); ``reduction`` applies to both terms."""
    check_options(
        weight_power=weight_power, reduction=reduction, threshold=threshold, granularity=granularity
    )
    check_non_negative("alpha", alpha)
    check_non_negative("beta", beta)
    check_positive("eps", eps)
    _check_inputs(y_pred, y_true, valid_mask, min_channels=2)
    dtype = compute_dtype(y_pred, y_true)
    device = y_true.device
    thr, eps_t = _scalar(_threshold(threshold), dtype, device), _scalar(eps, dtype, device)
    mse_sums, mse_counts, sam_sums, sam_counts = _sums(
        "sam_mse", y_pred, y_true, valid_mask, thr, eps_t, fused
    )
    pixels = math.prod(y_true.shape[2:])
    mse = weighted_group_mean(
        *_group(mse_sums, mse_counts, pixels, granularity), weight_power, reduction
    )
    sam = weighted_group_mean(sam_sums, sam_counts, pixels, weight_power, reduction)
    return alpha * sam + beta * mse
