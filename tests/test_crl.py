"""Tests of the Class Rectification Loss (``crl``): profiling, mining, criteria, alpha, timm.

The reference implementations below are written from the maths with Python loops over groups and
anchors (no code shared with the package) and are compared on small random batches.
"""

from __future__ import annotations

import csv
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import HPA_SAMPLE
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from smp_imbalance import create_loss
from smp_imbalance.losses import ClassRectificationLoss
from smp_imbalance.losses._compile import FusedFallbackWarning
from smp_imbalance.losses.class_rectification import imbalance_measure
from smp_imbalance.losses.functional import mining as M

HPA_COUNTS = HPA_SAMPLE / "class_counts.csv"
CRITERIA = ("relative", "absolute", "distribution")


def logit(p: list[float]) -> torch.Tensor:
    p_ = torch.tensor(p, dtype=torch.float64)
    return torch.log(p_ / (1 - p_))


# -- reference (Python loops, from the maths) -----------------------------------------------------


def ref_groups(logits: torch.Tensor, target: torch.Tensor, mode: str, rho: float):
    """[(group, members, scores)] of the minority groups; scores as a list of 0-d tensors."""
    n, c = logits.shape
    out = []
    if mode == "multilabel":
        for j in range(c):
            present = [i for i in range(n) if float(target[i, j]) >= 0.5]
            absent = [i for i in range(n) if i not in present]
            if len(absent) < len(present):  # the absence of j is the rarer value
                members, scores = absent, [torch.sigmoid(-logits[i, j]) for i in range(n)]
            else:
                members, scores = present, [torch.sigmoid(logits[i, j]) for i in range(n)]
            if 2 <= len(members) <= rho * n:
                out.append((j, members, scores))
    else:
        prob = torch.softmax(logits, 1)
        counts = [sum(int(t) == j for t in target) for j in range(c)]
        cum = 0
        for j in sorted(range(c), key=lambda j: (counts[j], j)):
            cum += counts[j]
            if cum > rho * n:
                break
            if counts[j] >= 2:
                members = [i for i in range(n) if int(target[i]) == j]
                out.append((j, members, [prob[i, j] for i in range(n)]))
    return out


def ref_mine(logits, target, mode, k, rho, mining, features=None):
    """{(group, anchor): (positives [(p, d_ap)], negatives [(n, d_an)])} from the definitions."""
    n = logits.shape[0]
    mined = {}
    for j, members, s in ref_groups(logits, target, mode, rho):
        others = [i for i in range(n) if i not in members]
        for a in members:
            pos = [p for p in members if p != a]
            if mining == "class":
                pos = sorted(pos, key=lambda p: float(s[p]))[:k]  # lowest score first
                neg = sorted(others, key=lambda q: -float(s[q]))[:k]  # highest score first
                mined[j, a] = (
                    [(p, torch.clamp(s[a] - s[p], min=0)) for p in pos],
                    [(q, s[a] - s[q]) for q in neg],
                )
            else:

                def dist(x, y):
                    return torch.sqrt(
                        sum(
                            (features[x, d] - features[y, d]) ** 2 for d in range(features.shape[1])
                        )
                    )

                pos = sorted(pos, key=lambda p: -float(dist(a, p)))[:k]  # farthest first
                neg = sorted(others, key=lambda q: float(dist(a, q)))[:k]  # nearest first
                mined[j, a] = ([(p, dist(a, p)) for p in pos], [(q, dist(a, q)) for q in neg])
    return mined


def ref_loss(mined: dict, criterion: str, margin: float, bins: int, lo: float, hi: float):
    zero = torch.zeros((), dtype=torch.float64)
    if criterion == "relative":
        hinges = [
            torch.clamp(margin + dp - dn, min=0)
            for pos, neg in mined.values()
            for _, dp in pos
            for _, dn in neg
        ]
        return sum(hinges) / len(hinges) if hinges else zero
    if criterion == "absolute":
        pos = [dp**2 for p, _ in mined.values() for _, dp in p]
        neg = [torch.clamp(margin - dn, min=0) ** 2 for _, q in mined.values() for _, dn in q]
        if not pos:
            return zero
        return 0.5 * (sum(pos) / len(pos) + sum(neg) / len(neg))
    # distribution: per group, soft histograms with triangular kernels on `bins` nodes
    delta = (hi - lo) / (bins - 1)

    def hist(values):
        h = []
        for r in range(bins):
            node = lo + r * delta
            h.append(
                sum(torch.clamp(1 - abs(min(max(v, lo), hi) - node) / delta, min=0) for v in values)
            )
        return [x / len(values) for x in h]

    groups = sorted({g for g, _ in mined})
    losses = []
    for g in groups:
        hp = hist([dp for (gg, _), (pos, _) in mined.items() if gg == g for _, dp in pos])
        hn = hist([dn for (gg, _), (_, neg) in mined.items() if gg == g for _, dn in neg])
        losses.append(sum(hn[r] * sum(hp[q] for q in range(r, bins)) for r in range(bins)))
    return sum(losses) / len(losses) if losses else zero


def random_batch(n: int, c: int, mode: str, seed: int, d: int = 3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    if mode == "multilabel":
        freq = torch.rand(c, generator=g) * 0.9 + 0.05
        target = (torch.rand(n, c, generator=g) < freq).to(torch.float64)
    else:
        target = torch.randint(0, c, (n,), generator=g)
    features = torch.randn(n, d, generator=g, dtype=torch.float64)
    return logits, target, features


def mined_sets(mined: M.Mined, group_ids: list[int] | None = None):
    """{(g, a): ({positives}, {negatives})} read off the tensors of a Mined (tests may index)."""
    out = {}
    for g, a_slot in mined.pos_valid.any(-1).nonzero().tolist():
        a = int(mined.anchor[g, a_slot])
        pos = set(mined.positive[g, a_slot][mined.pos_valid[g, a_slot]].tolist())
        neg = set(mined.negative[g, a_slot][mined.neg_valid[g, a_slot]].tolist())
        out[g if group_ids is None else group_ids[g], a] = (pos, neg)
    return out


# -- parity with the reference --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["multilabel", "multiclass"])
@pytest.mark.parametrize("mining", ["class", "instance"])
@pytest.mark.parametrize(("n", "c", "k", "seed"), [(7, 3, 2, 0), (10, 4, 1, 1), (12, 3, 25, 2)])
def test_mining_matches_reference(mode, mining, n, c, k, seed):
    logits, target, features = random_batch(n, c, mode, seed)
    profile = M.multilabel_groups if mode == "multilabel" else M.multiclass_groups
    groups = profile(logits, target, 0.5)
    if mining == "class":
        mined = M.mine_class_level(groups, k, 0.5)
    else:
        mined = M.mine_instance_level(groups, features, k, 0.5)
    ref = ref_mine(logits, target, mode, k, 0.5, mining, features)
    assert ref, "the batch should have a minority group"
    got = mined_sets(mined)
    assert got == {
        key: ({p for p, _ in pos}, {q for q, _ in neg}) for key, (pos, neg) in ref.items()
    }
    # the distances of the selected slots
    for (g, a), (pos, neg) in ref.items():
        a_slot = int((mined.anchor[g] == a).nonzero()[0])
        for p, d in pos:
            slot = (mined.positive[g, a_slot] == p) & mined.pos_valid[g, a_slot]
            torch.testing.assert_close(mined.d_pos[g, a_slot][slot][0], d)
        for q, d in neg:
            slot = (mined.negative[g, a_slot] == q) & mined.neg_valid[g, a_slot]
            torch.testing.assert_close(mined.d_neg[g, a_slot][slot][0], d)


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("mode", ["multilabel", "multiclass"])
@pytest.mark.parametrize("mining", ["class", "instance"])
@pytest.mark.parametrize(("n", "c", "k", "seed"), [(8, 3, 2, 3), (11, 4, 25, 4)])
def test_loss_matches_reference(criterion, mode, mining, n, c, k, seed):
    logits, target, features = random_batch(n, c, mode, seed)
    loss = ClassRectificationLoss(alpha=1.0, criterion=criterion, mining=mining, k=k, bins=7)
    got = loss(logits, target, features if mining == "instance" else None)
    if mining == "instance":  # normalize_features=True, the default
        features = F.normalize(features, dim=1)
    mined = ref_mine(logits, target, mode, k, 0.5, mining, features)
    lo, hi = (-1.0, 1.0) if mining == "class" else (0.0, 2.0)
    expected = ref_loss(mined, criterion, 0.5, 7, lo, hi)
    torch.testing.assert_close(got, expected)


@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 6),
    n=st.integers(2, 16),
    rho=st.sampled_from([0.3, 0.5, 0.8]),
    mode=st.sampled_from(["multilabel", "multiclass"]),
)
@settings(max_examples=40, deadline=None)
def test_fast_relative_path_equals_generic(seed, k, n, rho, mode):
    logits, target, _ = random_batch(n, 5, mode, seed)
    profile = M.multilabel_groups if mode == "multilabel" else M.multiclass_groups
    groups = profile(logits, target, rho)
    scores = groups.scores.detach().requires_grad_()
    groups = M.Groups(scores, groups.member, groups.minority)
    fast = M.class_relative_criterion(groups, k, rho, 0.3)
    generic = M.relative_criterion(M.mine_class_level(groups, k, rho), 0.3)
    torch.testing.assert_close(fast, generic)
    # the same gradient too (continuous random scores: no ties, no kinks)
    torch.testing.assert_close(
        torch.autograd.grad(fast, scores)[0], torch.autograd.grad(generic, scores)[0]
    )


@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 30),
    n=st.integers(1, 40),
    c=st.integers(1, 6),
    rho=st.sampled_from([0.2, 0.5, 0.8, 1.0]),
    margin=st.sampled_from([0.0, 0.3, 1.0]),
    soft=st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_fused_multilabel_path_equals_generic(seed, k, n, c, rho, margin, soft):
    """The default configuration's fused function (one sort, hand-written gradient) against the
    generic group path it replaces: value and gradient, soft targets and label ties included."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64, requires_grad=True)
    if soft:
        target = torch.rand(n, c, generator=g, dtype=torch.float64)
    else:
        target = (torch.rand(n, c, generator=g) < torch.rand(c, generator=g)).double()
    fused = M.multilabel_class_relative(logits, target, k, rho, margin)
    generic = M.class_relative_criterion(M.multilabel_groups(logits, target, rho), k, rho, margin)
    torch.testing.assert_close(fused, generic)
    torch.testing.assert_close(
        torch.autograd.grad(fused, logits)[0], torch.autograd.grad(generic, logits)[0]
    )


def test_fused_multilabel_path_exact_tiny_case():
    logits, target = tiny_case()  # members .9, .6; non-members .7, .2; k=1, margin .2 -> .3
    logits.requires_grad_()
    value = M.multilabel_class_relative(logits, target, 1, 0.5, 0.2)
    torch.testing.assert_close(value, torch.tensor(0.3, dtype=torch.float64))
    (grad,) = torch.autograd.grad(value, logits)
    # two triplets, both (min .6, negative .7): d/ds = -1 for member 1, +1 for non-member 2
    s = torch.tensor([0.9, 0.6, 0.7, 0.2], dtype=torch.float64)
    expected = torch.tensor([0.0, -1.0, 1.0, 0.0], dtype=torch.float64) * s * (1 - s)
    torch.testing.assert_close(grad[:, 0], expected)


def test_default_crl_compiles_fullgraph():
    """The default (fused) path inside a caller's torch.compile: no graph break, same value and
    gradient (aot_eager: dynamo and AOT autograd without inductor's compile time)."""
    loss = ClassRectificationLoss(alpha=0.5, k=5)
    target = (torch.rand(16, 6) < 0.2).float()

    def step(z: torch.Tensor) -> torch.Tensor:
        return loss(z * 2.0, target)

    logits = torch.randn(16, 6, requires_grad=True)
    logits2 = logits.detach().clone().requires_grad_()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    expected, actual = step(logits), compiled(logits2)
    torch.testing.assert_close(actual, expected)
    expected.backward()
    actual.backward()
    torch.testing.assert_close(logits2.grad, logits.grad)


@pytest.mark.slow
def test_compiled_default_matches_eager(fused):
    """The default module compiles the fused function (inductor) and gives the eager path's value
    and gradient, also after the batch size changes (one recompile, then shape-dynamic), and
    from the dynamo-free kernel of a signature seen three times."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    M._VALUE_AND_GRAD.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusedFallbackWarning)
        for i, n in enumerate((32, 24, 20, 20, 20)):
            g = torch.Generator().manual_seed(100 * i + n)
            target = (torch.rand(n, 7, generator=g) < torch.rand(7, generator=g) * 0.6).float()
            logits = torch.randn(n, 7, generator=g, requires_grad=True)
            logits_eager = logits.detach().clone().requires_grad_()
            compiled = ClassRectificationLoss(alpha=0.5, k=5, fused=True)(logits, target)
            eager = ClassRectificationLoss(alpha=0.5, k=5, fused=False)(logits_eager, target)
            torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-7)
            compiled.backward()
            eager.backward()
            torch.testing.assert_close(logits.grad, logits_eager.grad, rtol=1e-5, atol=1e-7)
    assert 0 < counters["stats"]["unique_graphs"] <= 2  # compiled; at most one recompile
    assert M._VALUE_AND_GRAD.failed is None


# -- profiling ------------------------------------------------------------------------------------


def test_multilabel_profiling_is_per_label_with_negative_side():
    # N = 8, rho * N = 4. Per-label counts: 2, 3, 4 (tie: present), 6 (absence: 2), 1, 0, 8.
    counts = [2, 3, 4, 6, 1, 0, 8]
    target = torch.zeros(8, len(counts))
    for j, cnt in enumerate(counts):
        target[:cnt, j] = 1
    groups = M.multilabel_groups(torch.zeros(8, len(counts)), target, 0.5)
    assert groups.minority.tolist() == [True, True, True, True, False, False, False]
    # label 3 is profiled on its absence: the members are the two samples without it
    assert groups.member[3].tolist() == [False] * 6 + [True] * 2
    assert groups.member[2].tolist() == [True] * 4 + [False] * 4
    # the blog's rule treats the labels as one multi-class attribute: labels sorted by count, a
    # running total <= rho * N over all of them, then count > 1 -- it keeps label 0 only
    order = sorted(range(len(counts)), key=lambda j: counts[j])
    running = [sum(counts[j] for j in order[: i + 1]) for i in range(len(order))]
    blog = {j for j, tot in zip(order, running, strict=True) if tot <= 4 and counts[j] > 1}
    assert blog == {0}
    assert set(groups.minority.nonzero().flatten().tolist()) == {0, 1, 2, 3}


def test_multilabel_negative_side_scores_are_one_minus_sigmoid():
    target = torch.tensor([[1.0], [1.0], [1.0], [0.0], [0.0], [1.0]])
    logits = torch.linspace(-2, 2, 6)[:, None]
    groups = M.multilabel_groups(logits, target, 0.5)
    assert groups.minority.tolist() == [True]
    torch.testing.assert_close(groups.scores[0], 1 - torch.sigmoid(logits[:, 0]))


def test_multiclass_profiling_tie_rule():
    # N = 10, rho * N = 5. Counts by class: [3, 1, 2, 2, 2]. Sorted (count, index): 1, 2, 3, 4, 0
    # with running totals 1, 3, 5, 7, 10 -> prefix {1, 2, 3}; class 1 has a single sample.
    target = torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 4, 4])
    groups = M.multiclass_groups(torch.zeros(10, 5), target, 0.5)
    assert groups.minority.tolist() == [False, False, True, True, False]


# -- the published blog code's defects, each shown right here -------------------------------------


def tiny_case():
    """One label, N = 4: members 0, 1 (scores .9, .6), non-members 2, 3 (scores .7, .2)."""
    target = torch.tensor([[1.0], [1.0], [0.0], [0.0]], dtype=torch.float64)
    return logit([[0.9], [0.6], [0.7], [0.2]]), target


def test_hard_negatives_come_from_the_hard_end():
    logits, target = tiny_case()
    loss = ClassRectificationLoss(alpha=1.0, k=1, margin=0.2)
    mined = M.mine_class_level(M.multilabel_groups(logits, target, 0.5), 1, 0.5)
    assert mined_sets(mined) == {(0, 0): ({1}, {2}), (0, 1): ({0}, {2})}
    # both anchors: max(0, .2 + .7 - min(s_a, s_p) = .6) = .3 (the easy negative .2 would give 0)
    torch.testing.assert_close(loss(logits, target), torch.tensor(0.3, dtype=torch.float64))


def test_relative_is_a_mean_of_per_triplet_hinges():
    logits, target = tiny_case()
    loss = ClassRectificationLoss(alpha=1.0, k=2, margin=0.2)
    # triplets per anchor: negatives .7 -> .3, .2 -> max(0, .2 + .2 - .6) = 0; mean = .15
    torch.testing.assert_close(loss(logits, target), torch.tensor(0.15, dtype=torch.float64))
    # one hinge of the batch mean would be max(0, .2 + .45 - .6) = .05: not what we compute
    assert not math.isclose(float(loss(logits, target)), 0.05, abs_tol=1e-6)


@pytest.mark.parametrize("criterion", CRITERIA)
def test_raising_a_negative_score_never_lowers_the_loss(criterion):
    logits, target, _ = random_batch(12, 4, "multilabel", 7)
    groups = M.multilabel_groups(logits, target, 0.5)
    scores = groups.scores.detach().requires_grad_()
    g = M.Groups(scores, groups.member, groups.minority)
    mined = M.mine_class_level(g, 3, 0.5)
    if criterion == "relative":
        value = M.class_relative_criterion(g, 3, 0.5, 0.5)
    elif criterion == "absolute":
        value = M.absolute_criterion(mined, 0.5)
    else:
        value = M.distribution_criterion(mined, 9, -1.0, 1.0)
    (grad,) = torch.autograd.grad(value, scores)
    assert groups.minority.any()
    assert (grad[~groups.member] >= 0).all()
    if criterion == "relative":
        assert (grad[groups.member] <= 0).all()  # raising an anchor/positive never raises it
        # every negative of an active triplet gets a strictly positive gradient
        active = set()
        for (gi, _), (pos, neg) in ref_mine(logits, target, "multilabel", 3, 0.5, "class").items():
            for _, dp in pos:
                active |= {(gi, q) for q, dn in neg if 0.5 + dp - dn > 0}
        assert active
        assert all(grad[gi, q] > 0 for gi, q in active)


def test_negative_distance_is_signed():
    # a negative scoring ABOVE the anchor: |s_a - s_n| (the blog) grows as s_n rises, so raising
    # it would lower the hinge; ours is s_a - s_n < 0 and the hinge rises with s_n
    target = torch.tensor([[1.0], [1.0], [0.0], [0.0]], dtype=torch.float64)
    scores = torch.tensor([[0.6, 0.7, 0.8, 0.1]], dtype=torch.float64, requires_grad=True)
    groups = M.Groups(scores, target.t() > 0, torch.tensor([True]))
    mined = M.mine_class_level(groups, 1, 0.5)
    d_neg = mined.d_neg[0, :, 0]  # both anchors' hardest negative: sample 2
    assert mined.negative[0, :, 0].tolist() == [2, 2]
    torch.testing.assert_close(d_neg, torch.tensor([-0.2, -0.1], dtype=torch.float64))
    blog = torch.relu(
        0.5 + (scores[0, 0] - scores[0, 1]).abs() - (scores[0, 0] - scores[0, 2]).abs()
    )
    assert torch.autograd.grad(blog, scores)[0][0, 2] < 0  # the defect: raising s_n helps
    ours = M.relative_criterion(mined, 0.5)
    assert torch.autograd.grad(ours, scores)[0][0, 2] > 0


@pytest.mark.parametrize(
    ("target", "mode"),
    [
        (torch.zeros(6, 4), "multilabel"),  # no positives anywhere
        (torch.eye(6)[:, :4], "multilabel"),  # one positive per label: no pair
        (torch.tensor([0, 0, 0, 1, 1, 1]), "multiclass"),  # classes of 3 > rho * N: none
        (torch.zeros(1, 4), "multilabel"),  # a batch of one
    ],
)
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("mining", ["class", "instance"])
def test_no_minority_or_no_triplet_gives_zero_attached(target, mode, criterion, mining):
    n = target.shape[0]
    logits = torch.randn(n, 4, requires_grad=True)
    features = torch.randn(n, 3, requires_grad=True)
    loss = ClassRectificationLoss(alpha=0.3, criterion=criterion, mining=mining, rho=0.4)
    out = loss(logits, target, features if mining == "instance" else None)
    base = (
        F.binary_cross_entropy_with_logits(logits, target)
        if mode == "multilabel"
        else F.cross_entropy(logits, target)
    )
    torch.testing.assert_close(out, 0.7 * base)
    crl = loss.rectification(logits, target, mode, features if mining == "instance" else None)
    assert crl.requires_grad and float(crl.detach()) == 0.0
    out.backward()
    assert torch.isfinite(logits.grad).all()
    if mining == "instance":
        assert torch.isfinite(features.grad).all()


# -- alpha and Omega_imb --------------------------------------------------------------------------


def hpa_counts() -> list[int]:
    with HPA_COUNTS.open() as f:
        return [int(row["count"]) for row in csv.DictReader(f)]


def test_alpha_from_hpa_counts_has_a_useful_magnitude():
    counts = hpa_counts()
    assert len(counts) == 28
    loss = ClassRectificationLoss.from_class_counts(counts, num_samples=31072, eta=1.0)
    # mean over labels of |n_c / 31072 - 1/2|: 28 rare labels, all well below a half
    expected = sum(abs(c / 31072 - 0.5) for c in counts) / 28
    assert loss.alpha == pytest.approx(expected)
    assert 0.3 < loss.alpha < 0.5
    blog_alpha = min(counts) / max(counts) * 0.01  # the blog's rule: 8.5e-6
    assert blog_alpha == pytest.approx(8.537e-6, rel=1e-3)
    assert loss.alpha > 1e4 * blog_alpha
    assert loss.mode == "multilabel"


@pytest.mark.parametrize(
    ("counts", "num_samples", "expected"),
    [
        ([3, 1], None, 0.25),  # move 1 of 4 samples to get 2/2
        ([5, 5, 5], None, 0.0),
        ([10, 0, 0, 0], None, 0.75),
        ([5, 0], 10, 0.25),  # labels at 1/2 and 0: (0 + 1/2) / 2
        ([2, 8], 10, 0.3),
    ],
)
def test_imbalance_measure_exact(counts, num_samples, expected):
    assert imbalance_measure(counts, num_samples) == pytest.approx(expected)


def test_total_is_the_alpha_mix_of_base_and_crl():
    logits, target, _ = random_batch(10, 4, "multilabel", 5)
    loss = ClassRectificationLoss(alpha=0.2)
    crl = loss.rectification(logits, target, "multilabel")
    assert float(crl) > 0
    bce = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(loss(logits, target), 0.8 * bce + 0.2 * crl)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"class_counts": [1, 2], "alpha": 0.1}, "either alpha or class_counts"),
        ({"class_counts": [1, 2], "mode": "multilabel"}, "num_samples"),
        ({"num_samples": 10}, "only used with class_counts"),
        ({"class_counts": [3, 4], "num_samples": 2}, "exceeds num_samples"),
        ({"class_counts": [-1, 4]}, "counts"),
        ({"class_counts": [5, 5], "num_samples": 100, "eta": 3.0}, "alpha"),
    ],
)
def test_alpha_arguments_rejected(kwargs, error):
    with pytest.raises(ValueError, match=error):
        ClassRectificationLoss(**kwargs)


def test_class_counts_fix_the_number_of_classes():
    loss = ClassRectificationLoss.from_class_counts([5, 3, 2], mode="multiclass")
    assert loss.mode == "multiclass"
    with pytest.raises(ValueError, match="class_counts has 3"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 2, 3]))


# -- base loss ------------------------------------------------------------------------------------


def test_base_by_registry_name_and_module():
    logits, target, _ = random_batch(8, 3, "multilabel", 6)
    default = ClassRectificationLoss(alpha=0.4)(logits, target)
    torch.testing.assert_close(
        ClassRectificationLoss(alpha=0.4, base="bce")(logits, target), default
    )
    weighted = nn.BCEWithLogitsLoss(pos_weight=torch.full((3,), 3.0, dtype=torch.float64))
    loss = ClassRectificationLoss(alpha=0.4, base=weighted)
    crl = loss.rectification(logits, target, "multilabel")
    torch.testing.assert_close(loss(logits, target), 0.6 * weighted(logits, target) + 0.4 * crl)
    with pytest.raises(TypeError, match="base"):
        ClassRectificationLoss(base=3)


def test_multiclass_base_is_cross_entropy():
    logits, target, _ = random_batch(9, 3, "multiclass", 8)
    loss = ClassRectificationLoss(alpha=0.25)
    crl = loss.rectification(logits, target, "multiclass")
    expected = 0.75 * F.cross_entropy(logits, target) + 0.25 * crl
    torch.testing.assert_close(loss(logits, target), expected)


def test_registry_name():
    loss = create_loss("crl", k=3, criterion="absolute")
    assert isinstance(loss, ClassRectificationLoss) and loss.k == 3


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"k": True}, "k must be"),
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.0}, "rho"),
        ({"margin": -0.1}, "margin"),
        ({"criterion": "triplet"}, "criterion"),
        ({"mining": "batch"}, "mining"),
        ({"mode": "binary"}, "mode"),
        ({"alpha": 1.5}, "alpha"),
        ({"bins": 1}, "bins"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassRectificationLoss(**kwargs)


@pytest.mark.parametrize(
    ("logits", "target", "error", "match"),
    [
        (torch.ones(4, 3, dtype=torch.long), torch.zeros(4, 3), TypeError, "logits"),
        (torch.randn(4, 3, 2), torch.zeros(4, 3), ValueError, "logits must have shape"),
        (torch.randn(4, 3), torch.zeros(4, 2), ValueError, r"target of shape \(4, 3\)"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.long), ValueError, r"shape \(4,\)"),
        (torch.randn(4, 3), torch.zeros(4), TypeError, "integer"),
        (torch.randn(4, 3), torch.zeros(4, 3, dtype=torch.long), ValueError, "ambiguous"),
        (torch.randn(4, 3), torch.zeros(4, 3, 1), ValueError, "target must have shape"),
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.long), ValueError, "C >= 2"),
        (torch.randn(4, 3), [0, 1, 2, 0], TypeError, "target must be a torch.Tensor"),
    ],
)
def test_bad_inputs(logits, target, error, match):
    with pytest.raises(error, match=match):
        ClassRectificationLoss()(logits, target)


def test_explicit_mode_must_match_the_target():
    with pytest.raises(ValueError, match="mode='multiclass'"):
        ClassRectificationLoss(mode="multiclass")(torch.randn(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="mode='multilabel'"):
        ClassRectificationLoss(mode="multilabel")(
            torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
        )
    # an integer multi-hot target is accepted once the mode says so
    target = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 1, 1], [0, 0, 0]])
    logits = torch.randn(4, 3)
    torch.testing.assert_close(
        ClassRectificationLoss(mode="multilabel")(logits, target),
        ClassRectificationLoss()(logits, target.float()),
    )


def test_features_from_arguments():
    with pytest.raises(ValueError, match="only used by mining='instance'"):
        ClassRectificationLoss(features_from=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="get_classifier"):
        ClassRectificationLoss(mining="instance", features_from=nn.Linear(2, 2))


def test_class_mining_rejects_features():
    with pytest.raises(ValueError, match="only used by mining='instance'"):
        ClassRectificationLoss()(torch.randn(4, 3), torch.zeros(4, 3), torch.randn(4, 2))


def test_instance_mining_needs_features():
    loss = ClassRectificationLoss(mining="instance")
    with pytest.raises(ValueError, match="needs features"):
        loss(torch.randn(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"features must have shape \(N, D\)"):
        loss(torch.randn(4, 3), torch.zeros(4, 3), torch.randn(5, 2))
    with pytest.raises(TypeError, match="features"):
        loss(torch.randn(4, 3), torch.zeros(4, 3), torch.ones(4, 2, dtype=torch.long))


# -- dtypes, gradients, graph safety --------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("mining", ["class", "instance"])
def test_half_inputs_computed_in_float32(dtype, criterion, mining):
    logits, target, features = random_batch(12, 4, "multilabel", 9)
    logits, features = logits.to(dtype), features.to(dtype)
    if mining == "class":
        features = None
    loss = ClassRectificationLoss(alpha=0.5, criterion=criterion, mining=mining)
    out = loss(logits, target.to(dtype), features)
    assert out.dtype == torch.float32
    expected = loss(logits.float(), target.float(), None if features is None else features.float())
    torch.testing.assert_close(out, expected)


def test_float64_stays_float64():
    logits, target, _ = random_batch(6, 3, "multiclass", 1)
    assert ClassRectificationLoss()(logits, target).dtype == torch.float64


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize(
    ("mode", "mining"),
    [
        ("multilabel", "class"),
        ("multiclass", "class"),
        ("multilabel", "instance"),
        ("multiclass", "instance"),
    ],
)
def test_gradcheck(criterion, mode, mining):
    logits, target, features = random_batch(9, 3, mode, 11)
    loss = ClassRectificationLoss(alpha=0.6, criterion=criterion, mining=mining, k=3, bins=6)
    if mining == "class":
        assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits.requires_grad_(),))
    else:
        assert torch.autograd.gradcheck(
            lambda z, f: loss(z, target, f), (logits.requires_grad_(), features.requires_grad_())
        )


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("mining", ["class", "instance"])
@pytest.mark.parametrize("multiclass", [False, True])
def test_forward_backward_run_on_meta_tensors(criterion, mining, multiclass):
    """On the meta device any .item(), nonzero(), boolean mask indexing or Python branch on a
    tensor value raises: running there proves the loss is free of host syncs."""
    with pytest.raises(Exception):  # noqa: B017 -- the control: a data-dependent op fails
        torch.zeros(3, device="meta").nonzero()
    logits = torch.randn(8, 5, device="meta", requires_grad=True)
    target = (
        torch.zeros(8, dtype=torch.long, device="meta")
        if multiclass
        else torch.zeros(8, 5, device="meta")
    )
    features = torch.randn(8, 3, device="meta") if mining == "instance" else None
    out = ClassRectificationLoss(criterion=criterion, mining=mining)(logits, target, features)
    out.backward()
    assert out.shape == () and logits.grad.shape == (8, 5)


def test_sync_dist_without_process_group_is_a_noop():
    logits, target, _ = random_batch(10, 4, "multilabel", 12)
    torch.testing.assert_close(
        ClassRectificationLoss(sync_dist=True)(logits, target),
        ClassRectificationLoss()(logits, target),
    )


# -- properties -----------------------------------------------------------------------------------


@given(
    seed=st.integers(0, 10_000),
    mode=st.sampled_from(["multilabel", "multiclass"]),
    mining=st.sampled_from(["class", "instance"]),
    criterion=st.sampled_from(CRITERIA),
)
@settings(max_examples=30, deadline=None)
def test_batch_permutation_leaves_the_loss_unchanged(seed, mode, mining, criterion):
    logits, target, features = random_batch(10, 4, mode, seed)  # continuous: distinct scores
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(seed))
    loss = ClassRectificationLoss(criterion=criterion, mining=mining, k=3)
    if mining == "class":
        features = None
    permuted = loss(logits[perm], target[perm], None if features is None else features[perm])
    torch.testing.assert_close(permuted, loss(logits, target, features))


@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 10.0))
@settings(max_examples=20, deadline=None)
def test_instance_relative_is_homogeneous_in_features_and_margin(seed, scale):
    """Raw features (normalize_features=False): scaling features and margin scales the loss;
    normalised (the default): scaling the features changes nothing."""
    logits, target, features = random_batch(10, 4, "multilabel", seed)
    kw = {"alpha": 1.0, "mining": "instance", "k": 3}
    raw = ClassRectificationLoss(**kw, margin=0.5, normalize_features=False)
    raw_scaled = ClassRectificationLoss(**kw, margin=0.5 * scale, normalize_features=False)
    torch.testing.assert_close(
        raw_scaled(logits, target, features * scale), scale * raw(logits, target, features)
    )
    normalised = ClassRectificationLoss(**kw, margin=0.5)
    torch.testing.assert_close(
        normalised(logits, target, features * scale), normalised(logits, target, features)
    )


@given(seed=st.integers(0, 10_000), shift=st.floats(-5.0, 5.0))
@settings(max_examples=20, deadline=None)
def test_multiclass_crl_is_invariant_to_a_logit_shift(seed, shift):
    logits, target, _ = random_batch(10, 4, "multiclass", seed)
    loss = ClassRectificationLoss(alpha=1.0, k=3)
    torch.testing.assert_close(loss(logits + shift, target), loss(logits, target))


# -- the timm host --------------------------------------------------------------------------------


def hpa_like_target(n: int, generator: torch.Generator) -> torch.Tensor:
    """Multi-hot (n, 28) with a frequent label 0 and a few rare labels of 2-3 positives each."""
    target = (torch.rand(n, 28, generator=generator) < 0.03).float()
    target[: n // 2, 0] = 1
    target[:3, 5] = 1
    target[4:6, 9] = 1
    return target


@pytest.mark.slow
def test_in_timm_multilabel_task():
    timm = pytest.importorskip("timm")
    from timm.task import MultiLabelClassificationTask

    g = torch.Generator().manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=28, in_chans=4)
    task = MultiLabelClassificationTask(
        model, criterion=ClassRectificationLoss(alpha=0.5, k=5), verbose=False
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(16, 4, 32, 32, generator=g)
    target = hpa_like_target(16, g)
    assert (
        ClassRectificationLoss(alpha=1.0).rectification(torch.zeros(16, 28), target, "multilabel")
        > 0
    )  # the batch has minority labels, so the CRL term is active
    for _ in range(3):
        opt.zero_grad()
        out = task(x, target)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        opt.step()
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) > len(changed) // 2

    # instance-level mining: the classifier's input is captured by features_from's hook
    crl = ClassRectificationLoss(mining="instance", alpha=0.5, k=5, features_from=model)
    task = MultiLabelClassificationTask(model, criterion=crl, verbose=False)
    model.eval()  # no batch-norm update, so that the explicit call below sees the same model
    out = task(x, target)
    with torch.no_grad():
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    assert pre_logits.shape == (16, 512)
    torch.testing.assert_close(out["loss"], crl(out["output"], target, pre_logits))
    assert crl._captured is None  # consumed: a stale capture is never reused
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    crl.detach_features_hook()
    model.train()

    # without features_from, instance-level mining in timm's task is a clear error
    task = MultiLabelClassificationTask(
        model, criterion=ClassRectificationLoss(mining="instance"), verbose=False
    )
    with pytest.raises(ValueError, match="mining='class'"):
        task(x, target)


def test_class_counts_without_num_samples_or_mode_raise_at_construction():
    """Counts alone cannot tell multi-label from single-label: no silent switch of mode."""
    with pytest.raises(ValueError, match=r"num_samples.*mode='multiclass'"):
        ClassRectificationLoss(class_counts=[5, 3, 2])
    assert ClassRectificationLoss(class_counts=[5, 3, 2], num_samples=9).mode == "multilabel"
