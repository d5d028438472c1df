"""Class-balanced squared error over bins of the target magnitude (the maths of ACB-MSE).

Pixels are put in ``K`` classes by ``|y_true|`` against ascending ``boundaries`` ``b``
(``K - 1`` values): class 0 is ``|t| <= b[0]``, class ``k`` is ``b[k-1] < |t| <= b[k]``, the last
class is ``|t| > b[-1]``. With ``d = y_pred - y_true``, a validity mask ``m`` and a pooling set
``P`` of pixels (the whole batch, or one sample)::

    n_k  = sum_{i in P} m_i [class(i) = k]
    L_P  = sum_k w_k * (sum_{i in P} m_i [class(i) = k] d_i^2) / max(n_k, 1)

so every class contributes the mean squared error over its own pixels, and an empty class
contributes exactly 0. Everything is written without data-dependent control flow (no boolean
indexing, ``nonzero`` or ``.item()``): the functions never sync the device and compile with
``fullgraph=True``.

Two paths compute the same values:

* :func:`acb_mse` -- differentiable tensor maths; autograd derives the backward. This is the eager
  path, and the one a caller's own ``torch.compile`` region traces.
* :func:`acb_mse_fused` -- a hand-written :class:`torch.autograd.Function` whose forward and
  backward are each one :class:`~smp_imbalance.losses._compile.FusedKernel`. The forward returns
  the loss and one scale per (pooling group, class); the backward recomputes ``d`` and the class
  from the saved inputs and writes ``2 * d * w_k / n_k * g`` in one pass over memory, so nothing
  of the input's size is saved between the two.
"""

from __future__ import annotations

import torch

from smp_imbalance.losses._compile import FusedKernel

__all__ = ["POOLINGS", "acb_mse", "acb_mse_fused", "class_masks", "class_statistics"]

POOLINGS = ("batch", "sample")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def class_masks(
    y_true: torch.Tensor, boundaries: torch.Tensor, mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """One bool tensor per class (``len(boundaries) + 1`` of them), each shaped like ``y_true``:
    the pixels whose ``|y_true|`` falls in that bin and that ``mask`` (if given) marks valid.

    ``y_true`` and ``boundaries`` should have the same dtype (the compute dtype), so that a
    half-precision target is binned against the exact float32 edges."""
    a = y_true.abs()
    above = [a > boundaries[i] for i in range(boundaries.shape[0])]
    masks = [~above[0]]
    masks += [above[k - 1] & ~above[k] for k in range(1, len(above))]
    masks.append(above[-1])
    if mask is not None:
        masks = [m & mask for m in masks]
    return masks


def _pool_sum(x: torch.Tensor, pooling: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sum over the pooling group: everything (``"batch"``) or all but dim 0 (``"sample"``)."""
    if pooling == "batch":
        return x.sum(dtype=dtype)
    if x.dim() == 1:  # (N,): one pixel per sample (``sum(dim=[])`` would sum everything)
        return x.to(dtype) if dtype is not None else x
    return x.sum(list(range(1, x.dim())), dtype=dtype)


def class_statistics(
    y_pred: torch.Tensor,
    y_true: torch.Tensor,
    boundaries: torch.Tensor,
    mask: torch.Tensor | None = None,
    pooling: str = "batch",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of squared error and pixel counts.

    Returns ``(sums, counts)``, both of the compute dtype (float64 for float64 inputs, else
    float32), of shape ``(K,)`` for ``pooling="batch"`` and ``(N, K)`` for ``pooling="sample"``.
    """
    dtype = _compute_dtype(y_pred)
    t = y_true.to(dtype)
    d = y_pred.to(dtype) - t
    if mask is not None:
        # Zero the error (not only its square) so that NaN in invalid pixels reaches neither the
        # loss nor the gradient (``where`` would pass 0 * NaN = NaN back through d * d).
        d = torch.where(mask, d, 0.0)
    se = d * d
    sums, counts = [], []
    for in_k in class_masks(t, boundaries.to(dtype), mask):
        sums.append(_pool_sum(torch.where(in_k, se, 0.0), pooling))
        counts.append(_pool_sum(in_k, pooling, dtype))
    return torch.stack(sums, -1), torch.stack(counts, -1)


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
        pooling: ``"batch"`` (one balance over all pixels) or ``"sample"`` (one per sample).
        reduction: with ``pooling="sample"``: ``"mean"``, ``"sum"`` or ``"none"`` (shape
            ``(N,)``); ignored with ``pooling="batch"``, whose result is already a scalar.

    Inputs are not validated here (the module does that); the result has the compute dtype.
    """
    sums, counts = class_statistics(y_pred, y_true, boundaries, mask, pooling)
    w = weights.to(sums.dtype)
    return _reduce((w * sums / counts.clamp(min=1)).sum(-1), pooling, reduction)


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
    d = y_pred.to(dtype) - t
    if mask is not None:
        d = torch.where(mask, d, 0.0)
    if pooling == "sample":
        view = (-1,) + (1,) * (y_pred.dim() - 1)
        columns = [scale[:, k].reshape(view) for k in range(scale.shape[1])]
        if reduction == "none":
            grad = grad.reshape(view)
    else:
        columns = [scale[k] for k in range(scale.shape[0])]
    # Pick the class's scale with a chain of ``where`` (fuses into one elementwise kernel).
    a = t.abs()
    b = boundaries.to(dtype)
    per_pixel = columns[-1]
    for k in range(len(columns) - 2, -1, -1):
        per_pixel = torch.where(a > b[k], per_pixel, columns[k])  # as in class_masks for NaN
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
