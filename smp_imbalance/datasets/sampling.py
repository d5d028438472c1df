"""Multi-label fold splits and a batch sampler that guarantees rare-label positives per batch.

Batch-wise hard mining (the Class Rectification Loss) only acts on a minority label with at
least two positives in the batch; with uniform batches of 32 from the HPA training set, a label
with 11-50 images (0.04-0.2 %) almost never has two. :class:`MinorityAwareBatchSampler` builds
each batch from a plain shuffled shard of the data plus a few reserved slots holding positives
of rare labels, taken in turn.

Typical use (fold 0 of 5 for validation)::

    train_ds = ProteinAtlas(root, "train.csv", transform=train_transforms(512))
    val_ds = ProteinAtlas(root, "train.csv", transform=val_transforms())
    folds = multilabel_stratified_folds(train_ds.labels, n_splits=5, seed=0)
    train_idx, val_idx = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    sampler = MinorityAwareBatchSampler(train_ds.labels[train_idx], batch_size=32, seed=0)
    loader = DataLoader(Subset(train_ds, train_idx), batch_sampler=sampler, num_workers=8)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ...
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "BatchPlan",
    "MinorityAwareBatchSampler",
    "multilabel_kfold",
    "multilabel_stratified_folds",
    "rare_labels",
]


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (N, C) multi-hot matrix, got {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1 (multi-hot)")
    return array.astype(bool)


def multilabel_stratified_folds(
    labels: np.ndarray, n_splits: int = 5, *, seed: int = 0
) -> np.ndarray:
    """Assign each sample a fold with iterative stratification (Sechidis et al., 2011).

    Uses ``iterstrat.ml_stratifiers.MultilabelStratifiedKFold(shuffle=True,
    random_state=seed)``: each fold receives close to ``1 / n_splits`` of the positives of every
    label (on the HPA ``train.csv``, within one image of ``count / 5`` for all 28 labels).

    Args:
        labels: ``(N, C)`` multi-hot matrix (0/1 or bool).
        n_splits: number of folds, ``2 <= n_splits <= N``.
        seed: shuffling seed; the same seed gives the same folds.

    Returns:
        ``(N,)`` int64 fold index in ``0 .. n_splits - 1``.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y = _check_labels(labels).astype(np.int64)
    if not 2 <= n_splits <= len(y):
        raise ValueError(f"n_splits must be in 2..{len(y)} (the sample count), got {n_splits}")
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = np.full(len(y), -1, dtype=np.int64)
    for fold, (_, val_idx) in enumerate(splitter.split(np.zeros((len(y), 1)), y)):
        folds[val_idx] = fold
    return folds


def multilabel_kfold(
    labels: np.ndarray, n_splits: int = 5, *, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train_indices, val_indices)`` for each fold of :func:`multilabel_stratified_folds`,
    sorted int64 arrays; use them with ``torch.utils.data.Subset``."""
    folds = multilabel_stratified_folds(labels, n_splits, seed=seed)
    return [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in range(n_splits)]


def rare_labels(labels: np.ndarray, threshold: float = 0.01) -> list[int]:
    """Labels whose positive rate (positives / N) is below ``threshold``, with at least one
    positive. On the HPA ``train.csv`` at 1 %: 8, 9, 10, 15, 17, 20, 27."""
    y = _check_labels(labels)
    rate = y.mean(axis=0)
    return [int(c) for c in np.flatnonzero((rate < threshold) & (rate > 0))]


class BatchPlan(NamedTuple):
    """How one batch was built (see :meth:`MinorityAwareBatchSampler.epoch_plan`)."""

    fill: np.ndarray  # indices from this replica's shard of the epoch permutation
    cover: np.ndarray  # reserved slots: rare-label positives, then uniform extras
    covered: tuple[int, ...]  # the rare labels this batch covers


class MinorityAwareBatchSampler(Sampler[list[int]]):
    """Yields batches (lists of indices) holding at least ``k`` positives of each covered label.

    Definitions (N samples, R = ``num_replicas``, B = ``batch_size``, m = ``labels_per_batch``,
    k = ``positives_per_label``, L = the rare labels):

    * **Epoch plan.** A permutation of ``range(N)`` drawn from ``(seed, epoch)`` (the same on
      every replica) is split into R shards by striding (``perm[rank::R]``). Each batch takes
      ``F = B - m * k`` *fill* indices from the replica's shard, in order, plus ``m * k``
      *cover* slots. There are ``len(self) = ceil(N / (R * F))`` batches per replica
      (``floor`` with ``drop_last``); without ``drop_last`` the permutation is extended by
      wrapping around so every batch is full. Every batch has exactly B distinct indices.
    * **Cover.** The rare labels are shuffled once per epoch (same order on every replica) and
      taken round-robin, m per batch: batch ``b`` of replica ``r`` covers
      ``order[((b + r) * m + j) % |L|]`` for ``j < m`` (all of L when ``m >= |L|``). Replicas
      therefore cover different labels at the same step, and on each replica every rare label
      is covered in any ``ceil(|L| / m)`` consecutive batches of an epoch.
    * **Guarantee.** For each covered label, positives are drawn (uniformly, without
      replacement, from that label's positives not already in the batch) until the batch holds
      at least k of them; reserved slots left over (because fill or earlier draws already had
      positives) get uniform draws from the whole dataset. So *every* batch contains >= k
      positives of each label it covers.
    * **Sharding.** With ``drop_last`` the fill indices of an epoch are disjoint across
      replicas and batches (each sample at most once); without it they visit every sample at
      least once, and only the wrap-around padding (fewer than R * F indices) repeats, as with
      ``DistributedSampler``. Cover slots are drawn from the whole dataset on every replica --
      rare labels have too few images to shard -- so rare images are oversampled: on HPA
      (N = 31,072, 7 rare labels, B = 32, m = k = 2, one replica) each rare label is covered in
      about 1110 * 2 / 7 = 317 batches an epoch, so each of the 11 "Rods & rings" images is
      seen about 58 times an epoch instead of once (``labels_per_batch=1`` halves that).

    Args:
        labels: ``(N, C)`` multi-hot matrix (e.g. ``ProteinAtlas.labels``, or its rows for a
            training fold, in ``Subset`` order).
        batch_size: B, at least ``m * k + 1``.
        rare: labels to cover, each with at least k positives. Default: :func:`rare_labels`
            at ``rare_threshold``, leaving out (with a warning, listed in ``.uncoverable``)
            those with fewer than k positives, e.g. in a small training fold.
        rare_threshold: positive rate below which a label is rare (when ``rare`` is None).
        labels_per_batch: m, rare labels covered per batch.
        positives_per_label: k, guaranteed positives per covered label (2: the minimum for
            hard-positive/anchor pairs in batch-wise mining).
        num_replicas, rank: the DDP world size and this process's rank; default from
            ``torch.distributed`` when initialised, else 1 and 0.
        seed: base seed; the plan is a pure function of ``(seed, epoch, rank)``.
        drop_last: drop the tail of the permutation instead of wrapping around.

    Use as ``DataLoader(dataset, batch_sampler=sampler)`` and call ``sampler.set_epoch(e)`` at
    the start of each epoch. With Lightning, pass ``use_distributed_sampler=False`` to the
    Trainer so it does not replace the sampler, and note that Lightning calls ``set_epoch`` on
    ``loader.sampler`` and ``loader.batch_sampler.sampler``, never on ``loader.batch_sampler``:
    :class:`smp_imbalance.training.RegistryDataModule` wraps this sampler so that the call
    reaches it (and resumes mid-epoch); elsewhere, call ``set_epoch`` yourself (e.g. in
    ``on_train_epoch_start``) or every epoch repeats epoch 0's plan.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        *,
        rare: Sequence[int] | None = None,
        rare_threshold: float = 0.01,
        labels_per_batch: int = 2,
        positives_per_label: int = 2,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        y = _check_labels(labels)
        n, num_classes = y.shape
        self.uncoverable: tuple[int, ...] = ()
        if labels_per_batch < 1 or positives_per_label < 1:
            raise ValueError(
                f"labels_per_batch ({labels_per_batch}) and positives_per_label "
                f"({positives_per_label}) must be >= 1"
            )
        counts = y.sum(axis=0)
        if rare is None:
            found = rare_labels(y, rare_threshold)
            rare = [c for c in found if counts[c] >= positives_per_label]
            if len(rare) < len(found):
                self.uncoverable = tuple(c for c in found if c not in rare)
                warnings.warn(
                    f"MinorityAwareBatchSampler: rare label(s) {list(self.uncoverable)} have "
                    f"fewer than positives_per_label={positives_per_label} positives and are "
                    "not covered (see .uncoverable)",
                    stacklevel=2,
                )
            if not rare:
                raise ValueError(
                    f"no label with at least {positives_per_label} positives has a positive "
                    f"rate below rare_threshold={rare_threshold}; pass rare=[...] or a higher "
                    "threshold"
                )
        rare = [int(c) for c in rare]
        if not rare:
            raise ValueError("rare must name at least one label")
        if len(set(rare)) != len(rare) or any(not 0 <= c < num_classes for c in rare):
            raise ValueError(f"rare {rare} must be distinct labels in 0..{num_classes - 1}")
        too_few = [c for c in rare if counts[c] < positives_per_label]
        if too_few:
            raise ValueError(
                f"rare label(s) {too_few} have fewer than positives_per_label="
                f"{positives_per_label} positives ({[int(counts[c]) for c in too_few]})"
            )
        self.labels_per_batch = min(labels_per_batch, len(rare))
        reserved = self.labels_per_batch * positives_per_label
        if batch_size <= reserved:
            raise ValueError(
                f"batch_size={batch_size} must exceed the reserved cover slots "
                f"min(labels_per_batch, len(rare)) * positives_per_label = {reserved}"
            )
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} exceeds the dataset size {n}")
        if num_replicas is None:
            num_replicas = dist.get_world_size() if _dist_ready() else 1
        if rank is None:
            rank = dist.get_rank() if _dist_ready() else 0
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got "
                f"num_replicas={num_replicas}, rank={rank}"
            )
        if num_replicas * (batch_size - reserved) > n:
            raise ValueError(
                f"num_replicas * fill per batch = {num_replicas} * {batch_size - reserved} "
                f"exceeds the dataset size {n}: one step would need more distinct samples"
            )
        self.labels = y
        self.batch_size = batch_size
        self.rare = tuple(rare)
        self.positives_per_label = positives_per_label
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.fill_per_batch = batch_size - reserved
        self._positives = {c: np.flatnonzero(y[:, c]).tolist() for c in rare}
        per_step = num_replicas * self.fill_per_batch
        # per_step <= n (checked above), so there is at least one batch
        self._num_batches = n // per_step if drop_last else math.ceil(n / per_step)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan ``__iter__`` yields (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches

    def __iter__(self) -> Iterator[list[int]]:
        for plan in self._plans():
            yield np.concatenate([plan.fill, plan.cover]).tolist()

    def epoch_plan(self) -> list[BatchPlan]:
        """The current epoch's batches for this replica, with each index's role."""
        return list(self._plans())

    def _plans(self) -> Iterator[BatchPlan]:
        n = len(self.labels)
        shared = np.random.default_rng([self.seed, self.epoch])
        perm = shared.permutation(n)
        order = shared.permutation(np.asarray(self.rare))
        total = self._num_batches * self.num_replicas * self.fill_per_batch
        if total > n:
            perm = np.resize(perm, total)  # repeats the permutation from its start
        shard = perm[:total][self.rank :: self.num_replicas]
        local = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        m, k = self.labels_per_batch, self.positives_per_label
        for b in range(self._num_batches):
            fill = shard[b * self.fill_per_batch : (b + 1) * self.fill_per_batch]
            start = (b + self.rank) * m
            covered = tuple(int(order[(start + j) % len(order)]) for j in range(m))
            yield self._cover(fill, covered, local, m * k)

    def _cover(
        self, fill: np.ndarray, covered: tuple[int, ...], rng: np.random.Generator, slots: int
    ) -> BatchPlan:
        in_batch = set(fill.tolist())
        cover: list[int] = []
        for c in covered:
            have = int(self.labels[fill, c].sum()) + int(self.labels[cover, c].sum())
            need = self.positives_per_label - have
            if need <= 0:
                continue
            candidates = [j for j in self._positives[c] if j not in in_batch]
            # |pool| >= k and at most `have` positives are in the batch, so len >= need
            picked = rng.choice(candidates, size=need, replace=False).tolist()
            cover.extend(picked)
            in_batch.update(picked)
        n = len(self.labels)
        while len(cover) < slots:  # leftover reserved slots: uniform, distinct
            j = int(rng.integers(n))
            if j not in in_batch:
                cover.append(j)
                in_batch.add(j)
        return BatchPlan(fill.astype(np.int64), np.asarray(cover, dtype=np.int64), covered)


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()
