"""Batch-wise minority profiling, hard mining and the rectification criteria of the CRL.

Pure tensor functions behind :class:`~smp_imbalance.losses.ClassRectificationLoss` (Dong, Gong &
Zhu, *Imbalanced Deep Learning by Minority Class Incremental Rectification*, TPAMI 2019).

Everything here works on **groups**: a group is one value of one attribute, with a membership
column over the batch and a score column (the model's probability of that value). Layout is
group-first, ``(G, N)``:

* multi-label (``C`` binary attributes): one group per label, on the label's *rarer* value. For
  label ``c`` with ``n_c`` positives among ``N`` samples, the group is "has ``c``" (score
  ``sigmoid(z_c)``) when ``n_c <= N - n_c`` and "has not ``c``" (score ``sigmoid(-z_c)`` =
  ``1 - sigmoid(z_c)``) otherwise. Each label is profiled on its own, never as one 28-way
  attribute.
* single-label (one ``C``-way attribute): one group per class, score ``softmax(z)_c``.

No function here loops over anchors or classes, reads tensor values on the host, or indexes with
booleans: selection is ``topk`` over masked score matrices (``+/-inf`` fill) and every invalid slot
is carried by a mask, so an empty selection yields a zero attached to the graph.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable

from smp_imbalance.losses._compile import FusedKernel

__all__ = [
    "Groups",
    "Mined",
    "absolute_criterion",
    "class_relative_criterion",
    "distribution_criterion",
    "mine_class_level",
    "mine_instance_level",
    "multiclass_groups",
    "multilabel_class_relative",
    "multilabel_groups",
    "pairwise_distances",
    "relative_criterion",
]


class Groups(NamedTuple):
    """Per-group view of a batch (``G`` groups, ``N`` samples).

    Attributes:
        scores: ``(G, N)`` probability of each sample on the group's value (differentiable).
        member: ``(G, N)`` bool, sample belongs to the group.
        minority: ``(G,)`` bool, the group is a minority group of this batch.
    """

    scores: torch.Tensor
    member: torch.Tensor
    minority: torch.Tensor


class Mined(NamedTuple):
    """Hard-mined pairs of every anchor of every group, as distances with validity masks.

    Anchors are compacted: a minority group has at most ``floor(rho * N)`` members, so ``A`` anchor
    slots per group hold them all (in batch order). ``P`` positive and ``Q`` negative slots per
    anchor; a triplet is ``(anchor, positive slot, negative slot)`` with both slots valid.

    Attributes:
        anchor: ``(G, A)`` batch index of each anchor slot.
        positive: ``(G, A, P)`` batch index of each positive slot.
        negative: ``(G, A, Q)`` batch index of each negative slot.
        d_pos: ``(G, A, P)`` anchor-to-positive distance.
        pos_valid: ``(G, A, P)`` bool; False for non-minority groups, non-member anchors, the
            anchor itself, non-members and slots beyond ``k``.
        d_neg: ``(G, A, Q)`` anchor-to-negative distance (signed for class-level mining).
        neg_valid: ``(G, A, Q)`` bool, same rules on the negative side.

    Invariant used by :func:`relative_criterion`: along the last axis the negative slots are in
    ascending order of ``d_neg`` with the valid ones first.
    """

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    d_pos: torch.Tensor
    pos_valid: torch.Tensor
    d_neg: torch.Tensor
    neg_valid: torch.Tensor


# -- profiling ----------------------------------------------------------------------------------


def multilabel_groups(logits: torch.Tensor, target: torch.Tensor, rho: float) -> Groups:
    """Profile ``C`` binary attributes from ``logits`` and multi-hot ``target``, both ``(N, C)``.

    A target entry counts as positive when ``>= 0.5`` (soft targets are thresholded for the
    profiling only). Label ``c`` takes its rarer value (ties: "has ``c``"), whose count ``n`` makes
    it a minority group when ``2 <= n <= rho * N``.
    """
    n = logits.shape[0]
    positive = target >= 0.5
    n_pos = positive.sum(0)
    flip = (n - n_pos) < n_pos  # the absence of c is the rarer value
    member = (positive ^ flip).t().contiguous()
    count = torch.where(flip, n - n_pos, n_pos)
    minority = (count >= 2) & (count <= rho * n)
    scores = torch.sigmoid(torch.where(flip, -logits, logits)).t().contiguous()
    return Groups(scores, member, minority)


def multiclass_groups(logits: torch.Tensor, target: torch.Tensor, rho: float) -> Groups:
    """Profile one ``C``-way attribute from ``logits`` ``(N, C)`` and class indices ``(N,)``.

    Classes are sorted by batch count, ascending, ties broken by class index (a stable sort); the
    minority classes are the longest prefix whose cumulative count is ``<= rho * N``, keeping
    those with at least two samples (a triplet needs an anchor and a positive).
    """
    n, c = logits.shape
    member = target[None, :] == torch.arange(c, device=target.device)[:, None]
    counts = member.sum(1)
    order = torch.sort(counts, stable=True).indices
    in_prefix_sorted = counts[order].cumsum(0) <= rho * n
    in_prefix = torch.empty_like(in_prefix_sorted).scatter_(0, order, in_prefix_sorted)
    minority = in_prefix & (counts >= 2)
    scores = torch.softmax(logits, dim=1).t().contiguous()
    return Groups(scores, member, minority)


# -- mining -------------------------------------------------------------------------------------


def _anchors(groups: Groups, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor slots ``(G, A)``, ``A = max(1, floor(rho * N))``: the first ``A`` members of each
    group in batch order (all of them for a minority group), and their validity."""
    member = groups.member
    a = max(1, min(member.shape[1], int(rho * member.shape[1])))
    order = torch.sort((~member).to(torch.uint8), dim=1, stable=True).indices[:, :a]
    valid = member.gather(1, order) & groups.minority[:, None]
    return order, valid


def mine_class_level(groups: Groups, k: int, rho: float) -> Mined:
    """Class-level hard mining on the group scores.

    For group ``g`` and anchor ``a`` (a member of a minority group), the hard positives are the
    ``k`` other members with the lowest score ``s_g`` and the hard negatives the ``k`` non-members
    with the highest ``s_g`` (fewer when fewer exist). Distances (``s`` = score on ``g``)::

        d(a, p) = max(0, s_a - s_p)    # how far the positive falls below the anchor
        d(a, n) = s_a - s_n            # signed: raising s_n always brings n closer

    The hard sets do not depend on the anchor except that it is excluded from its own
    positives, so one ``topk`` of ``k + 1`` lowest members per group serves every anchor.
    """
    s, member, _ = groups
    g, n = s.shape
    with torch.no_grad():
        anchor, anchor_ok = _anchors(groups, rho)
        a = anchor.shape[1]
        kp, kn = min(k + 1, a), min(k, n)
        pos_idx = torch.topk(s.masked_fill(~member, float("inf")), kp, dim=1, largest=False)[1]
        neg_idx = torch.topk(s.masked_fill(member, float("-inf")), kn, dim=1)[1]
        positive = pos_idx[:, None, :].expand(g, a, kp)
        pos_valid = member.gather(1, pos_idx)[:, None, :] & (positive != anchor[:, :, None])
        pos_valid = anchor_ok[:, :, None] & pos_valid & (pos_valid.cumsum(-1) <= k)
        negative = neg_idx[:, None, :].expand(g, a, kn)
        neg_valid = anchor_ok[:, :, None] & ~member.gather(1, neg_idx)[:, None, :]
    s_a = s.gather(1, anchor)[:, :, None]
    d_pos = (s_a - s.gather(1, pos_idx)[:, None, :]).clamp_min(0)
    d_neg = s_a - s.gather(1, neg_idx)[:, None, :]
    return Mined(anchor, positive, negative, d_pos, pos_valid, d_neg, neg_valid)


def pairwise_distances(features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances ``(N, N)`` between the rows of ``features`` ``(N, D)``.

    Written with a Gram matrix and ``sqrt(max(d2, eps))`` so that the zero self-distances (and
    duplicates) have a zero gradient instead of ``NaN``.
    """
    sq = features.pow(2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2 * features @ features.t()
    return d2.clamp_min(eps).sqrt()


def mine_instance_level(groups: Groups, features: torch.Tensor, k: int, rho: float) -> Mined:
    """Instance-level hard mining on Euclidean feature distances.

    For group ``g`` and anchor ``a``, the hard positives are the ``k`` other members farthest
    from ``a`` and the hard negatives the ``k`` non-members nearest to ``a``::

        d(a, p) = ||f_a - f_p||_2,    d(a, n) = ||f_a - f_n||_2
    """
    member = groups.member
    g, n = member.shape
    dist = pairwise_distances(features)  # (N, N), differentiable
    with torch.no_grad():
        anchor, anchor_ok = _anchors(groups, rho)
        a = anchor.shape[1]
        kp, kn = min(k, a), min(k, n)
        rows = dist.detach()[anchor]  # (G, A, N)
        cand = member[:, None, :].expand(g, a, n)
        not_self = anchor[:, :, None] != torch.arange(n, device=member.device)
        pos_ok = cand & not_self
        positive = torch.topk(rows.masked_fill(~pos_ok, float("-inf")), kp, dim=2)[1]
        negative = torch.topk(rows.masked_fill(cand, float("inf")), kn, dim=2, largest=False)[1]
        pos_valid = anchor_ok[:, :, None] & pos_ok.gather(2, positive)
        neg_valid = anchor_ok[:, :, None] & ~cand.gather(2, negative)
    rows = dist[anchor]
    return Mined(
        anchor,
        positive,
        negative,
        rows.gather(2, positive),
        pos_valid,
        rows.gather(2, negative),
        neg_valid,
    )


# -- criteria -----------------------------------------------------------------------------------


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``valid``; 0 (attached to the graph) when nothing is valid."""
    return torch.where(valid, values, 0.0).sum() / valid.sum().clamp_min(1)


def relative_criterion(mined: Mined, margin: float) -> torch.Tensor:
    """Triplet ranking: mean over valid triplets ``T`` of per-triplet hinges::

        L = 1/|T| sum_{(a,p,n) in T} max(0, margin + d(a, p) - d(a, n))

    For class-level distances this is ``max(0, margin + s_n - min(s_a, s_p))``: the weaker of
    anchor and positive must beat the negative's score by ``margin``.

    Computed without the ``(G, A, P, Q)`` triplet tensor: the negative slots of an anchor are
    sorted by distance with the valid ones first (see :class:`Mined`), so the negatives active for
    a positive are a prefix of length ``c = #{n : d(a, n) < margin + d(a, p)}`` (``searchsorted``)
    and their hinges sum to ``c * (margin + d(a, p)) - sum_{j < c} d(a, n_j)`` (a cumulative sum).
    """
    d_neg = torch.where(mined.neg_valid, mined.d_neg, 0.0)
    thresh = margin + mined.d_pos
    with torch.no_grad():
        search = mined.d_neg.masked_fill(~mined.neg_valid, float("inf")).contiguous()
        active = torch.searchsorted(search, thresh.contiguous())  # (G, A, P)
    prefix = F.pad(d_neg.cumsum(-1), (1, 0))  # prefix[..., c] = sum of the first c distances
    hinge_sum = active * thresh - prefix.gather(-1, active)
    total = torch.where(mined.pos_valid, hinge_sum, 0.0).sum()
    count = (mined.pos_valid.sum(-1) * mined.neg_valid.sum(-1)).sum()
    return total / count.clamp_min(1)


def class_relative_criterion(groups: Groups, k: int, rho: float, margin: float) -> torch.Tensor:
    """Class-level mining + relative criterion in one pass; equal to
    ``relative_criterion(mine_class_level(groups, k, rho), margin)`` at a fraction of the cost.

    Sort the ``n_g`` members of group ``g`` by ascending score, ``x_0 <= x_1 <= ...``. Anchor
    ``r`` takes as positives the first ``L = min(k, n_g - 1)`` ranks other than ``r``, so the
    triplet hinge ``max(0, margin + s_n - u)`` only sees ``u = min(s_a, s_p) = x_min(r, q)`` and
    member ``r`` is that minimum in ``n(r) = max(0, L - r)`` pairs as anchor plus
    ``[r < k] max(0, n_g - 1 - r)`` pairs as positive. The hard negatives ``t_1 >= t_2 >= ...``
    are shared by all anchors, and the ``c(x) = #{j : t_j > x - margin}`` active ones are a
    prefix. Hence, over the triplets ``T``::

        sum_T hinge = sum_r n(r) [c(x_r) (margin - x_r) + sum_{j <= c(x_r)} t_j]

    which needs ``O(G * A * Q)`` comparisons and ``O(G * (A + Q))`` differentiable terms instead of
    a triplet tensor: ``d/dt_j = #{pairs : c > j} >= 0``, ``d/dx_r = -n(r) c(x_r) <= 0``.
    """
    s, member, minority = groups
    g, n = s.shape
    a = max(1, min(n, int(rho * n)))  # a minority group has at most floor(rho * N) members
    kn = min(k, n)
    with torch.no_grad():
        order = torch.topk(s.masked_fill(~member, float("inf")), a, dim=1, largest=False)[1]
        neg_idx = torch.topk(s.masked_fill(member, float("-inf")), kn, dim=1)[1]
        neg_valid = ~member.gather(1, neg_idx)  # (G, Q), a prefix: topk put members last
        n_g = member.sum(1, keepdim=True)
        n_pos = (n_g - 1).clamp(0, k)  # L, positives per anchor
        r = torch.arange(a, device=s.device)
        n_min = (n_pos - r).clamp_min(0) + (n_g - 1 - r).clamp_min(0) * (r < k)
        n_min = n_min * minority[:, None]  # (G, A): pairs whose minimum is rank r
    picked = s.gather(1, torch.cat([order, neg_idx], 1))  # one gather: one scatter in backward
    with torch.no_grad():
        x, t = picked.split([a, kn], 1)
        t = torch.where(neg_valid, t, float("-inf"))
        c = (t[:, None, :] > (x - margin)[..., None]).sum(-1)  # (G, A)
        w = c * n_min
        # #{pairs : c > j}: suffix sums of the histogram of c over the pairs
        hist = torch.zeros(g, kn + 1, dtype=w.dtype, device=s.device).scatter_add_(1, c, n_min)
        m = hist.flip(1).cumsum(1).flip(1)[:, 1:]
        count = (n_g[:, 0] * n_pos[:, 0] * minority * neg_valid.sum(1)).sum().clamp_min(1)
        weight = torch.cat([-w, m], 1).to(s.dtype)
        constant = margin * w.sum()
    return (constant + (picked * weight).sum()) / count


@functools.lru_cache(maxsize=32)
def _rank_constants(
    a: int, q: int, k: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r = torch.arange(a, device=device, dtype=dtype)
    return r, (r < k).to(dtype), torch.arange(q, device=device, dtype=dtype)


def _multilabel_class_relative_value_and_grad(
    logits: torch.Tensor, target: torch.Tensor, k: int, rho: float, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value of :func:`multilabel_class_relative` and its gradient ``(N, C)`` w.r.t. ``logits``.

    The same maths as ``class_relative_criterion(multilabel_groups(...))`` in fewer, larger ops,
    in the label-first layout ``(C, N)``: one sort per label puts the members first by ascending
    score (the anchor ranks ``x``) and the non-members next by descending score (the hard
    negatives ``t``, at sorted positions ``n_g + j``); ``c(x_r)`` is a ``searchsorted`` and
    ``#{pairs : c > j}`` a cumulative histogram. The loss is linear in the picked scores with
    weights fixed by the ranks, so its gradient is those weights scattered back through the sort
    and ``d sigmoid``.
    """
    n, c = logits.shape
    a = max(1, min(n, int(rho * n)))
    q = min(k, n)
    dtype, device = logits.dtype, logits.device
    if torch.compiler.is_compiling():
        r = torch.arange(a, device=device, dtype=dtype)
        early, j = (r < k).to(dtype), torch.arange(q, device=device, dtype=dtype)
    else:
        r, early, j = _rank_constants(a, q, k, dtype, device)
    z = logits.t()
    positive = (target.t() >= 0.5).to(dtype)
    n_pos = positive.sum(1, keepdim=True)
    flip = n_pos > n / 2  # (C, 1): the absence of the label is its rarer value
    n_g = torch.where(flip, n - n_pos, n_pos)
    member = positive != flip
    minority = (n_g >= 2) & (n_g <= rho * n)
    s = torch.sigmoid(torch.where(flip, -z, z))
    idx = torch.where(member, -s, s - 3).argsort(dim=1, descending=True)
    s_sorted = s.gather(1, idx)
    neg_slot = n_g + j
    neg_valid = neg_slot < n
    neg_pos = neg_slot.clamp_max_(n - 1).long()
    x = s_sorted[:, :a]  # (C, A): anchor ranks, ascending
    t = s_sorted.gather(1, neg_pos)  # (C, Q): hard negatives, descending
    n_g1 = n_g - 1
    n_min = (n_g1.clamp(0, k) - r).clamp_min_(0).addcmul_((n_g1 - r).clamp_min_(0), early)
    n_min = torch.where(minority, n_min, 0.0)  # pairs whose minimum is rank r
    gap = margin - x
    active = torch.searchsorted(torch.where(neg_valid, -t, float("inf")), gap)  # c(x_r)
    w = active * n_min
    hist = torch.zeros(c, q + 1, dtype=dtype, device=device).scatter_add_(1, active, n_min)
    pairs = n_min.sum(1, keepdim=True)
    m = pairs - hist.cumsum(1)[:, :q]  # #{pairs : c > j}
    count = (pairs * neg_valid).sum().clamp_min_(1)
    value = ((gap * w).sum() + (t * m).sum()) / count
    grad_sorted = torch.zeros_like(s)
    grad_sorted[:, :a] = -w
    grad_sorted.scatter_add_(1, neg_pos, m)  # add: a short group's negatives sit in anchor slots
    grad = torch.empty_like(s).scatter_(1, idx, grad_sorted).mul_(s * (1 - s)).div_(count)
    return value, torch.where(flip, -grad, grad).t()


# The CRL's tensors are tiny ((C, N), about 2,000 numbers): eager ATen runs such ops on one
# thread (below its parallel grain), but inductor opens an OpenMP region per kernel from 512
# elements on, and on a shared CPU every region waits for the slowest thread -- which made the
# compiled path slower than eager in a loaded run. One thread keeps the compiled kernels serial.
_VALUE_AND_GRAD = FusedKernel(
    _multilabel_class_relative_value_and_grad, name="crl", options={"cpp.threads": 1}
)


class _MultilabelClassRelative(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: torch.Tensor,
        target: torch.Tensor,
        k: int,
        rho: float,
        margin: float,
        compile: bool,
    ) -> torch.Tensor:
        value, grad = _VALUE_AND_GRAD(logits, target, k, rho, margin, enabled=compile)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None


def multilabel_class_relative(
    logits: torch.Tensor,
    target: torch.Tensor,
    k: int,
    rho: float,
    margin: float,
    compile: bool = True,
) -> torch.Tensor:
    """``class_relative_criterion(multilabel_groups(logits, target, rho), k, rho, margin)`` for
    ``logits`` and multi-hot ``target`` ``(N, C)``, fused: the CRL's default configuration.

    About 40 tensor ops forward (one sort) and one multiply backward, instead of about 100 with
    autograd's bookkeeping: at N=64, C=28 each op costs microseconds, so the op count is the
    cost. With ``compile=True`` (and compilation available, see
    :class:`~smp_imbalance.losses._compile.FusedKernel`) the forward is one compiled graph:
    fewer kernels (launches, on a GPU) for one-time compiles of seconds. First-order gradients only (``once_differentiable``).
    """
    return _MultilabelClassRelative.apply(logits, target, k, rho, margin, compile)


def absolute_criterion(mined: Mined, margin: float) -> torch.Tensor:
    """Contrastive loss on the mined anchor-positive pairs ``P`` and anchor-negative pairs ``Q``::

        L = 1/2 [ 1/|P| sum_P d(a, p)^2 + 1/|Q| sum_Q max(0, margin - d(a, n))^2 ]

    An empty mean counts as 0.
    """
    pos = _masked_mean(mined.d_pos.pow(2), mined.pos_valid)
    neg = _masked_mean((margin - mined.d_neg).clamp_min(0).pow(2), mined.neg_valid)
    return 0.5 * (pos + neg)


def _soft_histogram(
    x: torch.Tensor, valid: torch.Tensor, lo: float, hi: float, bins: int
) -> torch.Tensor:
    """Per-group normalised histogram ``(G, bins)`` of ``x`` ``(G, ...)`` with linear (triangular)
    soft assignment to the two nearest of ``bins`` evenly spaced nodes on ``[lo, hi]``."""
    g = x.shape[0]
    x = x.reshape(g, -1)
    w = valid.reshape(g, -1).to(x.dtype)
    pos = (x.clamp(lo, hi) - lo) * ((bins - 1) / (hi - lo))
    left = pos.detach().floor().clamp(0, bins - 2)
    frac = pos - left
    left = left.long()
    hist = x.new_zeros(g, bins)
    hist = hist.scatter_add(1, left, w * (1 - frac)).scatter_add(1, left + 1, w * frac)
    return hist / w.sum(1, keepdim=True).clamp_min(1)


def distribution_criterion(mined: Mined, bins: int, lo: float, hi: float) -> torch.Tensor:
    """Histogram loss (Ustinova & Lempitsky, 2016) on the distance distributions, per group.

    ``h+`` and ``h-`` are the soft histograms (``bins`` nodes on ``[lo, hi]``) of the positive and
    negative pair distances of group ``g``; the loss of ``g`` is their overlap measured as the
    probability that a random negative pair is at most as far as a random positive pair::

        L_g = sum_r h-_r * sum_{q >= r} h+_q

    ``L`` is the mean of ``L_g`` over groups with both positive and negative pairs.
    """
    h_pos = _soft_histogram(mined.d_pos, mined.pos_valid, lo, hi, bins)
    h_neg = _soft_histogram(mined.d_neg, mined.neg_valid, lo, hi, bins)
    tail_pos = h_pos.flip(1).cumsum(1).flip(1)  # sum_{q >= r} h+_q
    per_group = (h_neg * tail_pos).sum(1)
    g = h_pos.shape[0]
    has = mined.pos_valid.reshape(g, -1).any(1) & mined.neg_valid.reshape(g, -1).any(1)
    return _masked_mean(per_group, has)
