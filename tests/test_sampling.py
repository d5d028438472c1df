"""Multi-label stratified folds and the minority-aware batch sampler, on the real HPA labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from smp_imbalance.datasets import sampling
from smp_imbalance.datasets.sampling import (
    MinorityAwareBatchSampler,
    multilabel_kfold,
    multilabel_stratified_folds,
    rare_labels,
)
from smp_imbalance.sample_data import hpa_train_labels

HPA_RARE = [8, 9, 10, 15, 17, 20, 27]  # < 1 % of 31,072 images (class_counts.csv)


@pytest.fixture(scope="module")
def hpa_labels() -> np.ndarray:
    return hpa_train_labels()  # the real labels of HPA train.csv, shipped with the package


def check_plan(sampler: MinorityAwareBatchSampler) -> list[sampling.BatchPlan]:
    """Assert the documented per-batch invariants; return the plan."""
    plans = sampler.epoch_plan()
    assert len(plans) == len(sampler)
    k = sampler.positives_per_label
    for plan in plans:
        batch = np.concatenate([plan.fill, plan.cover])
        assert len(batch) == sampler.batch_size
        assert len(np.unique(batch)) == len(batch)
        assert len(plan.fill) == sampler.fill_per_batch
        assert len(plan.covered) == sampler.labels_per_batch
        assert set(plan.covered) <= set(sampler.rare)
        for c in plan.covered:
            assert sampler.labels[batch, c].sum() >= k, (plan.covered, c)
    assert [list(map(int, np.concatenate([p.fill, p.cover]))) for p in plans] == list(sampler)
    return plans


# -- rare labels, folds ---------------------------------------------------------------------------
def test_rare_labels_of_hpa(hpa_labels: np.ndarray) -> None:
    assert rare_labels(hpa_labels) == HPA_RARE
    assert rare_labels(hpa_labels, threshold=0.001) == [10, 15, 27]  # < 31 images


def fold_deviation(labels: np.ndarray, folds: np.ndarray, n_splits: int) -> np.ndarray:
    """|positives of label c in fold f - positives of c / n_splits|, shape (n_splits, C)."""
    per_fold = np.stack([labels[folds == f].sum(axis=0) for f in range(n_splits)])
    return np.abs(per_fold - labels.sum(axis=0) / n_splits)


@pytest.mark.slow
def test_stratified_folds_keep_label_proportions(hpa_labels: np.ndarray) -> None:
    folds = multilabel_stratified_folds(hpa_labels, 5, seed=0)
    assert folds.shape == (31_072,) and folds.dtype == np.int64
    sizes = np.bincount(folds, minlength=5)
    assert sizes.sum() == 31_072
    assert np.abs(sizes / (31_072 / 5) - 1).max() < 0.01  # iterstrat balances labels, not sizes
    # every label, every fold: within one image of count / 5 (e.g. Rods & rings: 11 -> 2 or 3)
    assert fold_deviation(hpa_labels, folds, 5).max() < 1.0
    # hence per-fold positive rates within 2 % (relative) of the overall rate, labels >= 500 images
    common = hpa_labels.sum(axis=0) >= 500
    rates = np.stack([hpa_labels[folds == f].mean(axis=0) for f in range(5)])[:, common]
    overall = hpa_labels.mean(axis=0)[common]
    assert np.abs(rates / overall - 1).max() < 0.02
    # the count measure does catch a plain random split
    random_folds = np.random.default_rng(0).permutation(31_072) % 5
    assert fold_deviation(hpa_labels, random_folds, 5).max() > 10


def test_folds_seeded_and_kfold_partitions(hpa_labels: np.ndarray) -> None:
    subset = hpa_labels[:3000]  # a documented subsample: the full set is covered above
    a = multilabel_stratified_folds(subset, 4, seed=1)
    assert np.array_equal(a, multilabel_stratified_folds(subset, 4, seed=1))
    assert not np.array_equal(a, multilabel_stratified_folds(subset, 4, seed=2))
    splits = multilabel_kfold(subset, 4, seed=1)
    assert len(splits) == 4
    for k, (train, val) in enumerate(splits):
        assert np.array_equal(val, np.flatnonzero(a == k))
        assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(3000))
        assert not set(train.tolist()) & set(val.tolist())


@pytest.mark.parametrize(
    ("labels", "n_splits", "pattern"),
    [
        (np.zeros((10, 3)), 1, r"n_splits must be in 2\.\.10"),
        (np.zeros((3, 3)), 4, r"n_splits must be in 2\.\.3"),
        (np.zeros(10), 2, r"\(N, C\) multi-hot"),
        (np.full((10, 3), 2), 2, "only 0 and 1"),
    ],
)
def test_fold_errors(labels: np.ndarray, n_splits: int, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        multilabel_stratified_folds(labels, n_splits)


# -- sampler on the real label statistics ---------------------------------------------------------
@pytest.mark.slow
def test_guarantee_on_every_batch_real_hpa(hpa_labels: np.ndarray) -> None:
    sampler = MinorityAwareBatchSampler(hpa_labels, batch_size=32, seed=0)
    assert sampler.rare == tuple(HPA_RARE)
    assert sampler.fill_per_batch == 28
    assert len(sampler) == math.ceil(31_072 / 28) == 1110
    plans = check_plan(sampler)
    # every rare label is covered in any window of ceil(7 / 2) = 4 consecutive batches
    for start in range(len(plans) - 3):
        window = {c for plan in plans[start : start + 4] for c in plan.covered}
        assert window == set(HPA_RARE)
    # fill visits every image once (plus wrap-around padding to full batches)
    fill = np.concatenate([p.fill for p in plans])
    visits = np.bincount(fill, minlength=31_072)
    assert visits.min() == 1 and visits.max() == 2
    assert (visits == 2).sum() == 1110 * 28 - 31_072  # only the wrap-around padding repeats


@pytest.mark.parametrize(("replicas", "drop_last"), [(2, True), (4, True), (3, False)])
def test_shards_disjoint_across_ranks(
    hpa_labels: np.ndarray, replicas: int, drop_last: bool
) -> None:
    labels = hpa_labels[:5000]
    samplers = [
        MinorityAwareBatchSampler(
            labels, 24, num_replicas=replicas, rank=r, seed=3, drop_last=drop_last
        )
        for r in range(replicas)
    ]
    plans = [check_plan(s) for s in samplers]
    assert len({len(s) for s in samplers}) == 1  # same number of steps on every rank
    fills = [np.concatenate([p.fill for p in plan]) for plan in plans]
    everything = np.concatenate(fills)
    if drop_last:
        assert len(np.unique(everything)) == len(everything)  # disjoint
        assert len(samplers[0]) == 5000 // (replicas * 20)
    else:
        assert np.array_equal(np.unique(everything), np.arange(5000))
        assert len(samplers[0]) == math.ceil(5000 / (replicas * 20))
        assert len(everything) - 5000 < replicas * 20
    # the ranks cover different rare labels at the same step
    for step in range(len(samplers[0])):
        covered = [c for plan in plans for c in plan[step].covered]
        assert len(set(covered)) == min(len(covered), len(samplers[0].rare))


def test_seeded_and_set_epoch(hpa_labels: np.ndarray) -> None:
    labels = hpa_labels[:4000]
    a = MinorityAwareBatchSampler(labels, 32, seed=7)
    first = list(a)
    assert first == list(MinorityAwareBatchSampler(labels, 32, seed=7))
    assert first == list(a)  # iterating again repeats the epoch
    assert first != list(MinorityAwareBatchSampler(labels, 32, seed=8))
    a.set_epoch(1)
    second = list(a)
    assert second != first and len(second) == len(first)
    # both epochs' fill visits every sample (only which indices pad the last batch differs)
    assert {i for b in second for i in b[:28]} == {i for b in first for i in b[:28]}
    assert {i for b in first for i in b[:28]} == set(range(4000))
    a.set_epoch(0)
    assert list(a) == first


def test_defaults_follow_torch_distributed(
    hpa_labels: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sampling, "_dist_ready", lambda: True)
    monkeypatch.setattr(sampling.dist, "get_world_size", lambda: 4)
    monkeypatch.setattr(sampling.dist, "get_rank", lambda: 3)
    sampler = MinorityAwareBatchSampler(hpa_labels[:2000], 16)
    assert (sampler.num_replicas, sampler.rank) == (4, 3)
    explicit = MinorityAwareBatchSampler(hpa_labels[:2000], 16, num_replicas=4, rank=3)
    assert list(sampler) == list(explicit)


def test_dataloader_batch_sampler() -> None:
    labels = np.zeros((40, 3), np.uint8)
    labels[:3, 0] = 1
    labels[3:40, 1] = 1
    labels[5:7, 2] = 1
    sampler = MinorityAwareBatchSampler(labels, 8, rare=[0, 2], seed=0)
    dataset = TensorDataset(torch.arange(40), torch.from_numpy(labels))
    batches = list(DataLoader(dataset, batch_sampler=sampler))
    assert len(batches) == len(sampler) == math.ceil(40 / 4)
    for index, y in batches:
        assert len(index) == 8
        assert y[:, 0].sum() >= 2 and y[:, 2].sum() >= 2  # m = 2 covers both, every batch


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"batch_size": 4}, r"batch_size=4 must exceed .* = 4"),
        ({"rare": [0, 0]}, "must be distinct labels"),
        ({"rare": [5]}, r"distinct labels in 0\.\.2"),
        ({"rare": []}, "at least one label"),
        ({"rare": [2], "positives_per_label": 3}, r"label\(s\) \[2\] have fewer than"),
        (
            {"rare": None, "rare_threshold": 0.01},
            "no label with at least 2 positives has a positive rate below",
        ),
        ({"num_replicas": 2, "rank": 2}, "0 <= rank < num_replicas"),
        ({"num_replicas": 11}, "exceeds the dataset size"),
        ({"batch_size": 50}, "exceeds the dataset size 40"),
        ({"labels_per_batch": 0}, "must be >= 1"),
    ],
)
def test_sampler_errors(kwargs: dict, pattern: str) -> None:
    labels = np.zeros((40, 3), np.uint8)
    labels[:, 1] = 1
    labels[:3, 0] = 1
    labels[5:7, 2] = 1
    args = {"batch_size": 8, "rare": [0, 2], **kwargs}
    with pytest.raises(ValueError, match=pattern):
        MinorityAwareBatchSampler(labels, **args)


# -- invariants on random label matrices ----------------------------------------------------------
@st.composite
def sampler_cases(draw: st.DrawFn) -> tuple:
    n = draw(st.integers(30, 120))
    c = draw(st.integers(2, 6))
    k = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < rng.uniform(0.02, 0.5, size=c)).astype(np.uint8)
    for col in range(c):  # every label gets at least k positives
        labels[rng.choice(n, size=k, replace=False), col] = 1
    rare = sorted(draw(st.sets(st.integers(0, c - 1), min_size=1)))
    m = draw(st.integers(1, 3))
    batch = draw(st.integers(min(m, len(rare)) * k + 1, 24))
    replicas = draw(st.integers(1, 3))
    replicas = max(1, min(replicas, n // (batch - min(m, len(rare)) * k)))
    return labels, batch, rare, m, k, replicas, draw(st.booleans()), seed


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(sampler_cases())
def test_sampler_invariants(case: tuple) -> None:
    labels, batch, rare, m, k, replicas, drop_last, seed = case
    fills = []
    for rank in range(replicas):
        sampler = MinorityAwareBatchSampler(
            labels,
            batch,
            rare=rare,
            labels_per_batch=m,
            positives_per_label=k,
            num_replicas=replicas,
            rank=rank,
            seed=seed,
            drop_last=drop_last,
        )
        plans = check_plan(sampler)
        fills.extend(np.concatenate([p.fill for p in plans]).tolist() if plans else [])
        window = math.ceil(len(rare) / sampler.labels_per_batch)
        for start in range(len(plans) - window + 1):
            covered = {c for p in plans[start : start + window] for c in p.covered}
            assert covered == set(rare)
    if drop_last:
        assert len(set(fills)) == len(fills)
    else:
        assert set(fills) == set(range(len(labels)))


def test_auto_rare_skips_uncoverable_labels_with_warning() -> None:
    labels = np.zeros((200, 3), np.uint8)
    labels[:, 0] = 1
    labels[0, 1] = 1  # 1 positive: rare but cannot give 2 per batch
    labels[1:3, 2] = 1  # 2 positives: rare and coverable
    with pytest.warns(UserWarning, match=r"rare label\(s\) \[1\] have fewer than"):
        sampler = MinorityAwareBatchSampler(labels, 8, rare_threshold=0.05)
    assert sampler.rare == (2,) and sampler.uncoverable == (1,)
    assert sampler.labels_per_batch == 1
    check_plan(sampler)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        labels = np.zeros((400, 4), np.uint8)
        labels[:, 0] = 1
        labels[::50, 1] = 1  # 8 positives: rare at 5 %
        labels[1:4, 2] = 1  # 3 positives
        sampler = MinorityAwareBatchSampler(labels, 16, rare_threshold=0.05, drop_last=True)
        sampler.set_epoch(3)
        plans = sampler.epoch_plan()
        fill = np.concatenate([p.fill for p in plans])
        np.save(f"{out_dir}/fill{rank}.npy", fill)
        np.save(
            f"{out_dir}/meta{rank}.npy", np.array([sampler.num_replicas, sampler.rank, len(plans)])
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_real_process_group_shards(tmp_path) -> None:
    import torch.multiprocessing as mp

    # fork: no re-import of torch in the children (spawn costs seconds on a loaded machine)
    mp.start_processes(
        _ddp_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    metas = [np.load(tmp_path / f"meta{r}.npy").tolist() for r in range(2)]
    assert metas == [[2, 0, 400 // (2 * 12)], [2, 1, 400 // (2 * 12)]]
    fills = [np.load(tmp_path / f"fill{r}.npy") for r in range(2)]
    assert not set(fills[0].tolist()) & set(fills[1].tolist())
    assert len(fills[0]) == len(fills[1]) == 16 * 12
