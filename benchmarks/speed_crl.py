"""Speed of the Class Rectification Loss (``crl``) at N=64, C=28, k=25 on HPA-like targets.

Contenders (forward + backward, 2 torch threads, interleaved medians):

* ``crl`` -- the CRL term of :class:`smp_imbalance.losses.ClassRectificationLoss` (class-level
  mining, relative criterion: the default, computed by the fused multi-label function, compiled
  by ``torch.compile``), and the whole module (``alpha=0.5``: BCE + CRL);
* ``crl eager (fused=False)`` -- the same fused function, not compiled;
* ``crl (generic group path)`` -- the same term through the general profiling, mining and
  criterion functions (``multilabel_groups`` + ``class_relative_criterion``, autograd), which the
  fused function replaces for the default configuration;
* ``per-anchor loop (blog style)`` -- the same loss organised as the published blog code (a
  Python loop over every (sample, label) positive as anchor, boolean masks over ``nonzero``
  lists, a sort per anchor, a ``meshgrid`` of triplets), with the semantics fixed (hardest
  negatives from the top, mean of per-triplet hinges, signed negative distance);
* ``per-anchor loop (lean)`` -- a leaner loop (negatives sorted once per label, one hinge vector
  per anchor), a stronger baseline. Both loops' values equal ``crl``'s (asserted);
* ``resnet18 step`` -- one timm ``resnet18`` training step (4 x 128 x 128 input, batch 64,
  BCE forward + backward + SGD), to express the CRL overhead as a fraction of a step.

Targets are 64 rows (seeded) of the real label vectors of HPA ``train.csv``, shipped with the
package (``smp_imbalance/sample_data/hpa/hpa_targets.txt.gz``, the same rows in the same order);
the table header says how many minority labels, anchors and triplets the batch has.

    python benchmarks/speed_crl.py [--quick] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import (
    FIRST_CALLS,
    device_sync,
    first_calls_s,
    host_syncs,
    machine_line,
    markdown_table,
    time_interleaved,
)

from smp_imbalance.losses import ClassRectificationLoss
from smp_imbalance.losses.functional import mining as M
from smp_imbalance.sample_data import sample_path

HPA_TARGETS = sample_path("hpa", "hpa_targets.txt.gz")
N, C, K, RHO, MARGIN = 64, 28, 25, 0.5, 0.5


def hpa_batch(n: int = N, seed: int = 0) -> torch.Tensor:
    """``(n, 28)`` multi-hot targets of ``n`` random HPA training rows (the shipped copy of the
    label vectors of ``train.csv``)."""
    rng = random.Random(seed)
    y = torch.zeros(n, C)
    with gzip.open(HPA_TARGETS, "rt") as f:
        rows = [line.strip() for line in f if line.strip()]
    for i, t in enumerate(rng.sample(rows, n)):
        y[i, [int(v) for v in t.split()]] = 1
    return y


def _profile(logits: torch.Tensor, target: torch.Tensor):
    """Per-label rarer value, its membership and scores, and the minority labels (as the loss)."""
    n = logits.shape[0]
    positive = target >= 0.5
    n_pos = positive.sum(0)
    flip = (n - n_pos) < n_pos
    member = positive ^ flip
    scores = torch.sigmoid(torch.where(flip, -logits, logits))
    count = member.sum(0)
    return member, scores, (count >= 2) & (count <= RHO * n)


def blog_style_loop_crl(logits: torch.Tensor, target: torch.Tensor, k: int = K) -> torch.Tensor:
    """Class-level relative CRL term as the published blog code is organised -- ``nonzero`` lists
    of (sample, label) positives and negatives, a Python loop over every positive as anchor with
    boolean masks over those lists, a sort of its positives and of its negatives, a ``meshgrid`` of
    triplets stacked per anchor -- with the semantics fixed: hardest negatives from the top,
    ``max(0, margin + s_n - min(s_a, s_p))`` per triplet, the mean over triplets."""
    member, scores, minority = _profile(logits, target)
    labels = torch.nonzero(minority).flatten()
    y_min, preds_min = member[:, labels], scores[:, labels]
    pos_list, neg_list = torch.nonzero(y_min), torch.nonzero(~y_min)
    preds_pos = preds_min[y_min]
    triplets = []
    for i, (_, anchor_class) in enumerate(pos_list):
        mask = pos_list[:, 1] == anchor_class
        mask[i] = False
        pos_idx = pos_list[mask]
        pos_preds = preds_min[pos_idx[:, 0], pos_idx[:, 1]].sort().values[:k]
        neg_idx = neg_list[neg_list[:, 1] == anchor_class]
        neg_preds = preds_min[neg_idx[:, 0], neg_idx[:, 1]].sort(descending=True).values[:k]
        grid = torch.stack(
            torch.meshgrid(
                torch.tensor([i]),
                torch.arange(len(pos_preds)),
                torch.arange(len(neg_preds)),
                indexing="ij",
            )
        ).reshape(3, -1)
        triplets.append(
            torch.stack([preds_pos[grid[0]], pos_preds[grid[1]], neg_preds[grid[2]]], 1)
        )
    if not triplets:
        return logits.sum() * 0
    t = torch.cat(triplets)
    return F.relu(MARGIN + t[:, 2] - torch.minimum(t[:, 0], t[:, 1])).mean()


def lean_loop_crl(logits: torch.Tensor, target: torch.Tensor, k: int = K) -> torch.Tensor:
    """The same term with a leaner Python loop (over minority labels, then their anchors; one
    hinge vector per anchor): a stronger baseline than the blog's organisation."""
    member_all, scores_all, minority = _profile(logits, target)
    hinges = []
    for c in torch.nonzero(minority).flatten().tolist():
        member, scores = member_all[:, c], scores_all[:, c]
        members = torch.nonzero(member).flatten()
        neg_scores = scores[~member].sort(descending=True).values[:k]  # hardest: highest
        for a in members.tolist():
            pos_scores = scores[members[members != a]].sort().values[:k]  # hardest: lowest
            weaker = torch.minimum(scores[a], pos_scores)
            hinges.append(F.relu(MARGIN + neg_scores[None, :] - weaker[:, None]).flatten())
    if not hinges:
        return logits.sum() * 0
    return torch.cat(hinges).mean()


def _triplet_stats(target: torch.Tensor, k: int = K) -> tuple[int, int, int]:
    n = target.shape[0]
    n_pos = (target >= 0.5).sum(0)
    count = torch.minimum(n_pos, n - n_pos)
    minority = (count >= 2) & (count <= RHO * n)
    cnt = count[minority]
    triplets = (cnt * (cnt - 1).clamp(max=k) * (n - cnt).clamp(max=k)).sum()
    return int(minority.sum()), int(cnt.sum()), int(triplets)


def run(quick: bool = False, threads: int = 2, device: str = "cpu") -> str:
    """Time the contenders with ``threads`` torch threads (on the CPU, or on a CUDA ``device``);
    return a markdown report."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, device)
    finally:
        torch.set_num_threads(previous)


def _run(quick: bool, device: str) -> str:
    torch.manual_seed(0)
    cuda = torch.device(device).type == "cuda"
    sync = device_sync(device)
    target = hpa_batch().to(device)
    logits = torch.randn(N, C).to(device).requires_grad_(True)
    crl = ClassRectificationLoss(alpha=1.0, k=K, rho=RHO, margin=MARGIN, fused=True)
    crl_eager = ClassRectificationLoss(alpha=1.0, k=K, rho=RHO, margin=MARGIN, fused=False)

    module = ClassRectificationLoss(alpha=0.5, k=K, rho=RHO, margin=MARGIN, fused=True)

    def crl_term(z: torch.Tensor) -> torch.Tensor:
        return crl.rectification(z, target, "multilabel")

    def eager_term(z: torch.Tensor) -> torch.Tensor:
        return crl_eager.rectification(z, target, "multilabel")

    def generic_term(z: torch.Tensor) -> torch.Tensor:
        return M.class_relative_criterion(M.multilabel_groups(z, target, RHO), K, RHO, MARGIN)

    compile_s = first_calls_s(lambda: crl_term(logits))  # compiles twice, see first_calls_s
    ours = crl_term(logits)
    torch.testing.assert_close(ours, eager_term(logits), rtol=1e-5, atol=1e-6)
    for loop in (blog_style_loop_crl, lean_loop_crl):
        torch.testing.assert_close(ours, loop(logits, target), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours, generic_term(logits), rtol=1e-5, atol=1e-6)
    n_labels, n_anchors, n_triplets = _triplet_stats(target)

    def fwd_bwd(fn):
        def step() -> None:
            logits.grad = None
            fn(logits).backward()

        return step

    repeats = 5 if quick else 20
    loss_rows = time_interleaved(
        [
            ("crl", fwd_bwd(crl_term)),
            ("crl eager (default)", fwd_bwd(eager_term)),
            ("crl module (0.5 BCE + 0.5 CRL)", fwd_bwd(lambda z: module(z, target))),
            ("per-anchor loop (blog style)", fwd_bwd(lambda z: blog_style_loop_crl(z, target))),
            ("per-anchor loop (lean)", fwd_bwd(lambda z: lean_loop_crl(z, target))),
            ("crl (generic group path)", fwd_bwd(generic_term)),
        ],
        repeats=repeats,
        warmup=2,
        min_time_s=0.02,
        sync=sync,
    )

    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=C, in_chans=4).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    size = 64 if quick else 128
    x = torch.randn(N, 4, size, size, device=device)

    def train_step() -> None:
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(model(x), target).backward()
        opt.step()

    step_rows = time_interleaved(
        [("resnet18 step", train_step), ("crl", fwd_bwd(crl_term))],
        repeats=3 if quick else (25 if cuda else 7),
        warmup=3 if cuda else 1,
        sync=sync,
    )
    by_label = {row.label: row.median_s for row in loss_rows}
    speedup = by_label["per-anchor loop (blog style)"] / by_label["crl"]
    speedup_eager = by_label["per-anchor loop (blog style)"] / by_label["crl eager (default)"]
    speedup_lean = by_label["per-anchor loop (lean)"] / by_label["crl"]
    speedup_generic = by_label["crl (generic group path)"] / by_label["crl"]
    overhead = step_rows[1].median_s / step_rows[0].median_s
    syncs = []
    if cuda:
        syncs = [
            "",
            'Host-device syncs in one forward + backward (`torch.cuda.set_sync_debug_mode("error")`)'
            f": crl {host_syncs(fwd_bwd(crl_term))}; crl eager "
            f"{host_syncs(fwd_bwd(eager_term))}; crl module "
            f"{host_syncs(fwd_bwd(lambda z: module(z, target)))}.",
        ]
    return "\n".join(
        [
            f"### crl speed{' (CUDA)' if cuda else ''} (N={N}, C={C}, k={K})"
            f"{' -- quick' if quick else ''}",
            "",
            machine_line(device),
            "",
            f"Batch: {N} HPA rows, {n_labels} minority labels, {n_anchors} anchors, "
            f"{n_triplets} triplets.",
            "",
            markdown_table("CRL term, forward + backward", loss_rows, "crl"),
            "",
            markdown_table(
                f"Overhead vs a resnet18 training step ({N} x 4 x {size} x {size})",
                step_rows,
                "resnet18 step",
            ),
            "",
            f"Speed-up of crl over the blog-style per-anchor loop: **{speedup:.0f}x** (eager, "
            f"fused=False: {speedup_eager:.0f}x; over the lean loop: {speedup_lean:.0f}x; over the "
            f"generic group path: {speedup_generic:.1f}x); CRL fwd+bwd / step: "
            f"**{overhead * 100:.2f} %**. One-time compile of crl (first {FIRST_CALLS} calls, not in the "
            "table): "
            f"{compile_s:.1f} s (less when inductor's on-disk cache already holds the kernel), and "
            "once more when the batch size first changes.",
            *syncs,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller images")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args()
    print(run(quick=args.quick, threads=args.threads, device=args.device))


if __name__ == "__main__":
    main()
