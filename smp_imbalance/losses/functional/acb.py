"""Class-balanced squared error over bins of the target magnitude (the maths of ACB-MSE).

Pixels are put in ``K`` classes by ``|y_true|`` against ascending ``boundaries`` ``b``
(``K - 1`` values): class 0 is ``|t| <= b[0]``, class ``k`` is ``b[k-1] < |t| <= b[k]``, the last
class is ``|t| > b[-1]``. With ``d = y_pred - y_true``, a validity mask ``m`` and a pooling set
``P`` of pixels (the whole batch, or one sample)::

    n_k  = sum_{i in P} m_i [class(i) = k]
    L_P  = sum_k w_k * (sum_{i in P} m_i [class(i) = k] d_i^2) / max(n_k, 1)
         = sum_{i in P} s_i d_i^2,     s_i = m_i w_{class(i)} / max(n_{class(i)}, 1)

so every class contributes the mean squared error over its own pixels, and an empty class
contributes exactly 0. The forward computes the first form (per-class sums ``S_k`` as dot
products of a class indicator with the squared-error map); the gradient is ``2 s_i d_i``, with
``s`` the per-pixel scale of the second form (not differentiated: it depends on the target only).

Validity ``m``: the ``mask`` when one is given; without one, every pixel whose target is finite
(NaN and +-inf targets belong to no class, so a corrupt target pixel cannot poison the loss). A
non-finite *prediction* is never masked: it gives a non-finite loss, so that a diverging model is
seen. With a ``mask``, pixels outside it reach neither the loss nor the gradient whatever their
values, and a non-finite target inside it gives a non-finite loss.

Everything is written without data-dependent control flow (no boolean indexing, ``nonzero`` or
``.item()``): the functions never sync the device and compile with ``fullgraph=True``. The class
indicators are float 0/1 maps made by comparisons written straight into float tensors (a bool
map costs several times more on the CPU, in the comparison and again in every ``where`` and sum
that reads it). The eager path is about 15 full-size ops forward and backward together
(``F.mse_loss`` is about 4), float arithmetic only without a mask; ``s``, where it is built
(the fused backward), is a sum of indicator products, exact as one indicator is 1, the others 0.

Two paths compute the same values:

* :func:`acb_mse` -- differentiable tensor maths; autograd derives the backward (twice
  differentiable). The eager default, and the one a caller's own ``torch.compile`` region traces.
* :func:`acb_mse_fused` -- a hand-written :class:`torch.autograd.Function` whose forward and
  backward are each one :class:`~smp_imbalance.losses._compile.FusedKernel`. The forward returns
  the loss and one scale per (pooling group, class); the backward recomputes ``d`` and the
  classes from the saved inputs and writes ``2 * d * s * g`` in one pass over memory, so nothing
  of the input's size is saved between the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smp_imbalance.losses._compile import FusedKernel

__all__ = ["POOLINGS", "acb_mse", "acb_mse_fused", "class_indicators", "class_statistics"]

POOLINGS = ("batch", "sample")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _as_float(compare, a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
    """``compare(a, b)`` as a 0/1 tensor of ``a``'s dtype, written straight into it (eager), or
    converted (inside a compiler, which fuses the conversion away)."""
    if torch.compiler.is_compiling():
        return compare(a, b).to(a.dtype)
    return compare(a, b, out=torch.empty_like(a))


def class_indicators(
    y_true: torch.Tensor, boundaries: torch.Tensor, mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """One 0/1 float map per class (``len(boundaries) + 1``, disjoint), in ``y_true``'s dtype and
    broadcast shape: the valid pixels whose ``|y_true|`` falls in that bin. Valid: ``mask`` if
    given, else ``y_true`` finite. ``y_true`` and ``boundaries`` should have the compute dtype,
    so that a half-precision target is binned against the exact float32 edges."""
    a = y_true.abs()
    if mask is None:
        # NaN and inf compare False with every finite edge and with inf: in no class.
        below = [_as_float(torch.le, a, boundaries[i]) for i in range(boundaries.shape[0])]
        valid = _as_float(torch.lt, a, float("inf"))
    else:
        valid = mask.to(a.dtype)
        below = [_as_float(torch.le, a, boundaries[i]) * valid for i in range(boundaries.shape[0])]
    return [below[0]] + [hi - lo for lo, hi in zip(below, [*below[1:], valid], strict=True)]


def _pool_sum(x: torch.Tensor, pooling: str, n: int) -> torch.Tensor:
    """Sum over the pooling group: all (``"batch"``) or each of the ``n`` samples (``"sample"``)."""
    if pooling == "batch":
        return x.sum()
    return x.reshape(n, -1).sum(1)


def _safe(y_true: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Without a mask, ``y_true`` with its non-finite values replaced by 0 (their pixels' scale is
    0, and ``0 * d^2`` must not be ``0 * nan``); with one, ``y_true`` as is."""
    if mask is None:
        return torch.nan_to_num(y_true, nan=0.0, posinf=0.0, neginf=0.0)
    return y_true


def _error(y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``d = y_pred - y_true``, harmless where invalid: 0 outside a ``mask`` (with ``where``: a
    product would let ``0 * nan`` reach the loss and the gradient); without one, finite where the
    target is not (a non-finite prediction stays non-finite)."""
    if mask is None:
        return y_pred - _safe(y_true, None)
    return torch.where(mask, y_pred - y_true, 0.0)


def _squared_error(
    y_pred: torch.Tensor, y_true: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """``_error(...) ** 2`` as one ``mse_loss`` kernel, whose backward is one kernel too (the
    backward of ``square`` is three)."""
    if mask is not None:
        y_pred, y_true = torch.where(mask, y_pred, 0.0), torch.where(mask, y_true, 0.0)
    return F.mse_loss(y_pred, _safe(y_true, mask), reduction="none")


def _pool_dot(x: torch.Tensor, y: torch.Tensor, pooling: str, n: int) -> torch.Tensor:
    """``sum(x * y)`` over the pooling group, as a dot product (one pass, no product map; its
    backward multiplies by a 0-dim gradient, the fast case)."""
    if pooling == "batch":
        return torch.dot(x.reshape(-1), y.reshape(-1))
    return torch.linalg.vecdot(x.reshape(n, -1), y.reshape(n, -1))


def class_statistics(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    boundaries: torch.Tensor,
    mask: torch.Tensor | None = None,
    pooling: str = "batch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of squared error over the valid pixels, and valid pixels per class.

    Returns ``(sums, counts)``, both of the compute dtype (float64 for float64 inputs, else
    float32), of shape ``(K,)`` for ``pooling="batch"`` and ``(N, K)`` for ``pooling="sample"``.
    ``sums`` is differentiable (w.r.t. both inputs), ``counts`` is not.
    """
    dtype = _compute_dtype(y_pred)
    t = y_true.to(dtype)
    n = t.shape[0] if t.dim() else 1
    indicators = class_indicators(t, boundaries.to(dtype), mask)
    se = _squared_error(y_pred.to(dtype), t, mask)
    sums = torch.stack([_pool_dot(i, se, pooling, n) for i in indicators], -1)
    counts = torch.stack([_pool_sum(i, pooling, n) for i in indicators], -1)
    return sums, counts


def _pixel_scale(indicators: list[torch.Tensor], scale: torch.Tensor, pooling: str) -> torch.Tensor:
    """``s_i = scale[class(i)]`` (0 where invalid): a sum of indicator products, exact because
    exactly one term is non-zero."""
    if pooling == "batch":
        columns = [scale[k] for k in range(scale.shape[0])]
    else:
        view = (-1,) + (1,) * (indicators[0].dim() - 1)
        columns = [scale[:, k].reshape(view) for k in range(scale.shape[1])]
    out = indicators[0] * columns[0]
    for ind, col in zip(indicators[1:], columns[1:], strict=True):
        out = torch.addcmul(out, ind, col)
    return out


def _reduce(per_group: torch.Tensor, pooling: str, reduction: str) -> torch.Tensor:
    if pooling == "batch" or reduction == "none":
        return per_group
    return per_group.mean() if reduction == "mean" else per_group.sum()


def acb_mse(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    weights: torch.Tensor,
    boundaries: torch.Tensor,
    mask: torch.Tensor | None = None,
    pooling: str = "batch",
    reduction: str = "mean",
) -> torch.Tensor:
    """Class-balanced squared error (see the module docstring), differentiable by autograd.

    Args:
        y_pred: prediction, any shape ``(N, *)``, floating point.
        y_true: target, same shape as ``y_pred``.
        weights: ``(K,)`` class weights.
        boundaries: ``(K - 1,)`` ascending bin edges on ``|y_true|``.
        mask: optional bool tensor broadcastable to ``y_true``; ``False`` pixels are ignored.
            ``None``: every pixel with a finite ``y_true``.
        pooling: ``"batch"`` (one balance over all pixels) or ``"sample"`` (one per sample).
        reduction: with ``pooling="sample"``: ``"mean"``, ``"sum"`` or ``"none"`` (shape
            ``(N,)``); ignored with ``pooling="batch"``, whose result is already a scalar.

    Inputs are not validated here (the module does that); the result has the compute dtype.
    """
    sums, counts = class_statistics(y_pred, y_true, boundaries, mask, pooling)
    scale = weights.to(sums.dtype) / counts.clamp(min=1)
    return _reduce((scale * sums).sum(-1), pooling, reduction)


# -- the fused path: one kernel for the forward, one for the backward ---------------------------


def _forward_kernel(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    weights: torch.Tensor,
    boundaries: torch.Tensor,
    mask: torch.Tensor | None,
    pooling: str,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss and ``scale = dloss / d(sum of d^2 in the class)``: ``(K,)`` or ``(N, K)``."""
    sums, counts = class_statistics(y_pred, y_true, boundaries, mask, pooling)
    scale = weights.to(sums.dtype) / counts.clamp(min=1)
    loss = _reduce((scale * sums).sum(-1), pooling, reduction)
    if pooling == "sample" and reduction == "mean":
        scale = scale / scale.shape[0]
    return loss, scale


def _backward_kernel(
    grad: torch.Tensor,
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    scale: torch.Tensor,
    boundaries: torch.Tensor,
    mask: torch.Tensor | None,
    pooling: str,
    reduction: str,
) -> torch.Tensor:
    """``d loss / d y_pred = 2 * d * scale[class] * grad``, in ``y_pred``'s dtype."""
    dtype = scale.dtype
    t = y_true.to(dtype)
    d = _error(y_pred.to(dtype), t, mask)
    indicators = class_indicators(t, boundaries.to(dtype), mask)
    per_pixel = _pixel_scale(indicators, scale, pooling)
    if pooling == "sample" and reduction == "none":
        grad = grad.reshape((-1,) + (1,) * (y_pred.dim() - 1))
    return (2.0 * d * per_pixel * grad.to(dtype)).to(y_pred.dtype)


_FORWARD = FusedKernel(_forward_kernel, name="acb_mse forward")
_BACKWARD = FusedKernel(_backward_kernel, name="acb_mse backward")


class _ACBMSEFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        y_pred: torch.Tensor,
        y_true: torch.Tensor,
        weights: torch.Tensor,
        boundaries: torch.Tensor,
        mask: torch.Tensor | None,
        pooling: str,
        reduction: str,
        compile: bool,
    ) -> torch.Tensor:
        loss, scale = _FORWARD(
            y_pred, y_true, weights, boundaries, mask, pooling, reduction, enabled=compile
        )
        ctx.save_for_backward(y_pred, y_true, scale, boundaries, mask)
        ctx.pooling, ctx.reduction, ctx.compile = pooling, reduction, compile
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        y_pred, y_true, scale, boundaries, mask = ctx.saved_tensors
        grad_pred = _BACKWARD(
            grad,
            y_pred,
            y_true,
            scale,
            boundaries,
            mask,
            ctx.pooling,
            ctx.reduction,
            enabled=ctx.compile,
        )
        grad_true = -grad_pred.to(y_true.dtype) if ctx.needs_input_grad[1] else None
        if not ctx.needs_input_grad[0]:
            grad_pred = None
        return grad_pred, grad_true, None, None, None, None, None, None


def acb_mse_fused(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    weights: torch.Tensor,
    boundaries: torch.Tensor,
    mask: torch.Tensor | None = None,
    pooling: str = "batch",
    reduction: str = "mean",
    compile: bool = True,
) -> torch.Tensor:
    """Same values as :func:`acb_mse`, with the hand-written backward and compiled kernels.

    ``compile=False`` runs the same two kernels eagerly (used to check the hand-written
    backward with ``gradcheck``). The backward is once-differentiable: use :func:`acb_mse` for
    double backward. The gradient with respect to ``weights`` and ``boundaries`` is not computed.
    """
    return _ACBMSEFunction.apply(
        y_pred, y_true, weights, boundaries, mask, pooling, reduction, compile
    )
