"""Exact mid-epoch resume: a training data pipeline whose state is a batch count, and RNG states
saved with each checkpoint.

What Lightning 2.x restores from a checkpoint by itself: the weights, optimizer and scheduler
states, the loop progress (epoch, global step, batch index within the epoch) and the callbacks'
states. What it does *not* restore: the position in the training data (unless the train
``DataLoader`` is "stateful", i.e. has ``state_dict`` / ``load_state_dict``: then Lightning stores
``loader.state_dict()`` with every checkpoint and, usually, hands it back before the resumed
epoch's first batch: see :class:`ResumableDataLoader` for when it does not), and the
process-global RNG states (torch, numpy, ``random``). A plain
``DataLoader(shuffle=True)`` therefore restarts an interrupted epoch from its first batch, with an
order drawn from whatever the global RNG state happens to be, and on-the-fly augmentations draw
from streams that depend on everything drawn before.

Here every random choice of the training data is a pure function of ``(seed, epoch, rank, position
in the epoch)``:

* :class:`ShuffleShardSampler` (a ``DistributedSampler``: one shuffled permutation per
  ``(seed, epoch)``, this rank's shard of it) or the batch sampler wrapped by :class:`DrawBatches`
  (e.g. ``MinorityAwareBatchSampler``, a pure function of ``(seed, epoch, rank)``) choose the
  indices, and tag each with its :class:`Draw` (epoch, rank, position);
* :class:`SeededDraws` wraps the dataset: before fetching a draw it seeds the process-global
  RNGs (restored afterwards) and the albumentations transform from the draw, so degradations and
  augmentations do not depend on the worker count, on earlier samples or on a resume;
* :class:`ResumableDataLoader` counts the batches it has handed out in the current epoch; that
  count is its state, and after a resume the samplers skip that many batches without loading them;
* :class:`RNGStateCheckpoint` saves the global RNG states of every rank with each checkpoint and
  restores them right before the first training step after a resume (dropout, stochastic depth,
  random mining in the step then continue the interrupted run's streams).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

__all__ = [
    "Draw",
    "DrawBatches",
    "RNGStateCheckpoint",
    "ResumableDataLoader",
    "SeededDraws",
    "ShuffleShardSampler",
    "world",
]


def world() -> tuple[int, int]:
    """``(world_size, rank)`` of ``torch.distributed`` when initialised, else ``(1, 0)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class Draw(NamedTuple):
    """One draw of a training sample: dataset ``index``, drawn at ``position`` (0, 1, ...) of
    ``rank``'s stream of ``epoch``. What the sample's randomness is seeded from."""

    index: int
    epoch: int
    rank: int
    position: int


def _find_transform(dataset: Any) -> Any:
    """The ``transform`` of ``dataset`` or of the dataset it wraps (``Subset``), or None."""
    for _ in range(8):  # Subset of Subset of ...; bounded in case of a cycle
        transform = getattr(dataset, "transform", None)
        if transform is not None:
            return transform
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


@contextmanager
def _seeded_globals(words: np.ndarray) -> Iterator[None]:
    """Seed the CPU torch generator, numpy's legacy global RNG and ``random`` from ``words``
    (uint64), restoring their states on exit. Only the CPU generator: ``torch.manual_seed``
    would also reseed CUDA, whose stream the training step in the same process uses."""
    torch_state = torch.default_generator.get_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        torch.default_generator.manual_seed(int(words[0]))
        np.random.seed(int(words[1] % 2**32))
        random.seed(int(words[1]))
        yield
    finally:
        torch.default_generator.set_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


class SeededDraws(Dataset):
    """``dataset`` whose samples are fetched by :class:`Draw` with seeded randomness.

    ``self[draw]`` fetches ``dataset[draw.index]`` with the process-global RNGs (torch CPU, numpy,
    ``random``) seeded from ``(seed, draw.epoch, draw.rank, draw.position)`` and restored
    afterwards, and with the albumentations transform of the dataset (``dataset.transform``,
    looked up through ``Subset``) given generators seeded from the same draw. A plain int index
    fetches ``dataset[index]`` unchanged.

    This covers randomness drawn from the global RNGs (e.g. ``DetectorFrames(train=True)``, whose
    degradation generator is keyed by ``torch.initial_seed()``; torchvision transforms) and from an
    ``A.Compose``; a dataset with a private generator of its own is not reseeded.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Draw | int) -> Any:
        if not isinstance(key, Draw):
            return self.dataset[key]
        sequence = np.random.SeedSequence([self.seed, key.epoch, key.rank, key.position])
        words = sequence.generate_state(2, np.uint64)
        transform = _find_transform(self.dataset)
        if hasattr(transform, "set_random_state"):  # albumentations: its own generators
            transform.set_random_state(
                np.random.default_rng(words[1]), random.Random(int(words[0]))
            )
        with _seeded_globals(words):
            return self.dataset[key.index]


class ShuffleShardSampler(DistributedSampler):
    """``DistributedSampler(shuffle=True)`` that yields :class:`Draw` s and can skip its first
    draws once (after a resume).

    The permutation of epoch ``e`` is ``torch.randperm(N, generator seeded with seed + e)``,
    padded by wrapping around to a multiple of the world size, and rank ``r`` takes every
    ``world_size``-th index from ``r`` (``DistributedSampler``'s contract; Lightning leaves a
    ``DistributedSampler`` in place instead of injecting its own). ``num_replicas`` and ``rank``
    default to ``torch.distributed``'s when initialised, else 1 and 0.
    """

    def __init__(
        self,
        dataset: Sized,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        size, own = world()
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=size if num_replicas is None else num_replicas,
            rank=own if rank is None else rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self._skip = 0

    def skip_first(self, draws: int) -> None:
        """Leave out the first ``draws`` draws of the next iteration only."""
        self._skip = int(draws)

    def __iter__(self) -> Iterator[Draw]:  # type: ignore[override]
        skip, self._skip = self._skip, 0
        indices = list(super().__iter__())
        for position in range(skip, len(indices)):
            yield Draw(int(indices[position]), self.epoch, self.rank, position)


class DrawBatches(Sampler[list[Draw]]):
    """A batch sampler (e.g. ``MinorityAwareBatchSampler``) whose batches are yielded as lists
    of :class:`Draw`, and which can skip its first batches once (after a resume).

    Skipped batches are still drawn from the wrapped sampler (cheap: indices only), so a sampler
    whose batches depend on the ones before stays on the same stream. The wrapped sampler is
    exposed as ``.sampler``: Lightning calls ``set_epoch`` on ``dataloader.sampler`` and on
    ``dataloader.batch_sampler.sampler``, never on ``dataloader.batch_sampler`` itself, so a
    batch sampler with a ``set_epoch`` only gets new epochs through this attribute. Its ``epoch``
    and ``rank`` attributes (default 0) go into the draws.
    """

    def __init__(self, batch_sampler: Sampler[list[int]]) -> None:
        self.sampler = batch_sampler
        self._skip = 0

    @property
    def epoch(self) -> int:
        """The wrapped sampler's epoch."""
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Set the wrapped sampler's epoch (when it has ``set_epoch``)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)

    def skip_first(self, batches: int) -> None:
        """Leave out the first ``batches`` batches of the next iteration only."""
        self._skip = int(batches)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[Draw]]:
        skip, self._skip = self._skip, 0
        epoch, rank = self.epoch, int(getattr(self.sampler, "rank", 0))
        position = 0
        for number, batch in enumerate(self.sampler):
            start, position = position, position + len(batch)
            if number >= skip:
                yield [Draw(int(i), epoch, rank, start + j) for j, i in enumerate(batch)]


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose state is the number of batches it has yielded in the current epoch.

    Lightning saves ``state_dict()`` with each checkpoint (the loader is ``_Stateful``) and calls
    ``load_state_dict`` before a resumed epoch's first batch; the next iteration then starts
    after the batches already trained on, skipping them in the sampler (no sample is loaded for
    them). That needs a :class:`ShuffleShardSampler` as sampler or a :class:`DrawBatches` as batch
    sampler; with any other it is a plain ``DataLoader`` (whose position is not restored).

    The saved count belongs to one epoch: if the loader is iterated for another epoch first
    (a checkpoint written after the epoch's last batch), it is dropped. Loading the same state
    twice before the next iteration is harmless.

    Lightning hands the saved state to the loader only if the loader is built after the
    checkpoint is restored; ``trainer.estimated_stepping_batches`` in ``configure_optimizers``
    (our tasks size their timm schedules with it) builds it before, and the state is then
    silently dropped (Lightning issue #20550). :class:`~.data.RegistryDataModule` therefore also
    keeps the state in its own ``state_dict`` and gives it to the loader it builds.
    """

    _yielded = 0
    _epoch = 0
    _resume: tuple[int, int] | None = None

    def _source(self) -> tuple[ShuffleShardSampler | DrawBatches | None, int]:
        """The skippable sampler, and how many of its items make one batch (None, 1 when the
        sampler was replaced, e.g. by Lightning's ``overfit_batches``: no resume then)."""
        if isinstance(self.batch_sampler, DrawBatches):
            return self.batch_sampler, 1
        if isinstance(self.sampler, ShuffleShardSampler) and self.batch_size is not None:
            return self.sampler, self.batch_size
        return None, 1

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # a generator: nothing runs (no sampler is read) until the first batch is asked for,
        # which is after Lightning has called set_epoch for the epoch
        source, per_batch = self._source()
        self._epoch = int(source.epoch) if source is not None else 0
        self._yielded = 0
        if self._resume is not None:
            epoch, batches = self._resume
            self._resume = None
            if source is not None and epoch == self._epoch and batches > 0:
                source.skip_first(batches * per_batch)
                self._yielded = batches
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batches": n}``: n batches of epoch e have been yielded."""
        return {"epoch": self._epoch, "batches": self._yielded}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Skip ``state_dict["batches"]`` batches when next iterated for ``state_dict["epoch"]``."""
        self._resume = (int(state_dict["epoch"]), int(state_dict["batches"]))


def _collect_rng_states() -> dict[str, Any]:
    """The global RNG states as tensors and plain Python values (checkpoints are loaded with
    ``torch.load(weights_only=True)``, which refuses numpy arrays)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCheckpoint(L.Callback):
    """Saves the global RNG states (torch CPU and CUDA, numpy, ``random``) of every rank with each
    checkpoint, and restores this rank's right before the first training step after a resume.

    Restoring then, not when the checkpoint is loaded, skips the draws made in between that the
    interrupted run did not make at that point (creating dataloader iterators). Under DDP the
    states are gathered from all ranks when a checkpoint is written (Lightning writes checkpoints
    from every rank's call); a resume with another world size restores none.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        states = _collect_rng_states()
        size, _ = world()
        if size == 1:
            return {"ranks": [states]}
        gathered: list[Any] = [None] * size
        dist.all_gather_object(gathered, states)
        return {"ranks": gathered}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("ranks", [])
        size, rank = world()
        if len(ranks) != size:
            warnings.warn(
                f"RNGStateCheckpoint: the checkpoint holds RNG states of {len(ranks)} "
                f"process(es), this run has {size}: the RNG states are not restored",
                stacklevel=2,
            )
            return
        self._pending = ranks[rank]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending is not None:
            _set_rng_states(self._pending)
            self._pending = None
