"""A LightningDataModule for any registered dataset, built by name with per-split keyword arguments."""

from __future__ import annotations

import glob
import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from smp_imbalance.registry import DATASET_REGISTRY, create_dataset, is_dataset
from smp_imbalance.sample_data import SAMPLES
from smp_imbalance.training.resume import (
    DrawBatches,
    ResumableDataLoader,
    SeededDraws,
    ShuffleShardSampler,
    world,
)

_DEFAULT_RECIPES = {
    "detector_frames": "smp_imbalance.datasets.transforms.detector",
    "masked_bands": "smp_imbalance.datasets.transforms.satellite",
    "protein_atlas": "smp_imbalance.datasets.transforms.protein",
}


def default_transform(dataset: str, split: str, **kwargs: Any) -> Any:
    """The default albumentations recipe of ``dataset`` for ``split`` ("train" or "val"), or
    ``None`` when the dataset has no recipe module."""
    module_name = _DEFAULT_RECIPES.get(dataset)
    if module_name is None:
        return None
    module = importlib.import_module(module_name)
    factory = getattr(module, f"{'train' if split == 'train' else 'val'}_transforms")
    return factory(**kwargs)


class RegistryDataModule(L.LightningDataModule):
    """Train/val/test datasets made with :func:`smp_imbalance.create_dataset`.

    Args:
        dataset: a registered dataset name (``smp-imbalance datasets`` lists them).
        train_kwargs / val_kwargs / test_kwargs: constructor keywords of each split
            (``test_kwargs=None`` reuses the validation split for ``test``).
        common_kwargs: keywords shared by every split (overridden by the split's own).
        transforms: ``"default"`` (the dataset's recipes in ``datasets/transforms``) or ``"none"``.
        transform_kwargs: keywords for the default recipes.
        batch_size, num_workers: DataLoader settings (``persistent_workers`` when workers > 0).
        sampler: for multi-label data, ``"minority"`` uses
            :class:`~smp_imbalance.datasets.sampling.MinorityAwareBatchSampler` (it shards by
            itself under DDP: set ``trainer.use_distributed_sampler: false``).
        sampler_kwargs: its keywords (``seed`` defaults to ``seed`` below).
        seed: seed of the training data: the shuffling, the minority sampler's plans and every
            sample's on-the-fly randomness (degradations, augmentations) are pure functions of
            ``(seed, epoch, rank, position in the epoch)``, so a run resumed mid-epoch from a
            checkpoint continues with the same batches (see :mod:`.resume`). ``None``: the run's
            ``seed_everything`` seed (``PL_GLOBAL_SEED``), else 0.
        folds, fold, fold_seed: with ``folds`` set, train and val are fold ``fold`` of a
            multi-label stratified K-fold split of the *train* split's samples (the dataset's
            ``labels`` matrix); ``val_kwargs`` then only override keywords of the val copy.

    Under DDP the data module shards every split itself, whatever ``trainer.use_distributed_sampler``
    says: training with :class:`~.resume.ShuffleShardSampler` (a ``DistributedSampler``) or the
    minority sampler, validation and test with ``DistributedSampler(shuffle=False)`` (as Lightning
    would: when the split's size is not a multiple of the world size, a few samples are counted
    twice; validate on one device for exact numbers).

    A dataset whose samples need one more step on the device (``masked_bands`` with
    ``output: dn``: scaling, normalisation and fill per batch) says so through its
    ``batch_transform()``; the data module applies it in ``on_after_batch_transfer``, so the
    model, the loss and the metrics see the same batches as with ready samples.

    Data paths: when a dataset with a shipped sample (:data:`smp_imbalance.sample_data.SAMPLES`:
    ``protein_atlas``, ``masked_bands``) is given none of its path keywords (``root`` and
    ``csv_file``; ``scenes``), it reads that sample and says so in one line (with the settings
    the sample is too small for, e.g. folds). Paths that are given are checked here, before
    any training: a missing file or folder raises ``FileNotFoundError`` naming the config key.
    """

    def __init__(
        self,
        dataset: str,
        train_kwargs: dict[str, Any] | None = None,
        val_kwargs: dict[str, Any] | None = None,
        test_kwargs: dict[str, Any] | None = None,
        common_kwargs: dict[str, Any] | None = None,
        transforms: str = "default",
        transform_kwargs: dict[str, Any] | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        sampler: str = "random",
        sampler_kwargs: dict[str, Any] | None = None,
        folds: int | None = None,
        fold: int = 0,
        fold_seed: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not is_dataset(dataset):
            try:
                DATASET_REGISTRY.get(dataset)  # its message names the close matches
            except ValueError as err:
                raise ValueError(f"data.dataset: {err}") from err
        if transforms not in ("default", "none"):
            raise ValueError(f"data.transforms must be 'default' or 'none', got {transforms!r}")
        if sampler not in ("random", "minority"):
            raise ValueError(f"data.sampler must be 'random' or 'minority', got {sampler!r}")
        if folds is not None and not 0 <= fold < folds:
            raise ValueError(f"data.fold must be in [0, {folds}), got {fold}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.dataset_name = dataset
        self.split_kwargs = {
            "train": dict(train_kwargs or {}),
            "val": dict(val_kwargs or {}),
            "test": None if test_kwargs is None else dict(test_kwargs),
        }
        self.common_kwargs = dict(common_kwargs or {})
        self.transforms = transforms
        self.transform_kwargs = transform_kwargs or {}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.sampler = sampler
        self.sampler_kwargs = sampler_kwargs or {}
        self.folds, self.fold, self.fold_seed = folds, fold, fold_seed
        self.seed = seed
        self.sample_note: str | None = None  # the one-line notice when the sample data is used
        self._use_sample_if_no_data()
        for section, kwargs in self._sections():
            _check_data_paths(kwargs, f"data.init_args.{section}")
        self.datasets: dict[str, Dataset] = {}
        self.train_labels: Any = None  # (N, C) multi-hot of the train split, for the sampler
        self._train_loader_obj: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, int] | None = None  # from a checkpoint, not yet used
        self._batch_transforms: dict[str, Any] = {}  # split -> its dataset's batch transform

    def _sections(self) -> list[tuple[str, dict[str, Any]]]:
        """``(config key, keywords)`` of the common and the per-split dataset keywords."""
        sections = [("common_kwargs", self.common_kwargs)]
        for split in ("train", "val", "test"):
            if self.split_kwargs[split] is not None:
                sections.append((f"{split}_kwargs", self.split_kwargs[split]))
        return sections

    def _use_sample_if_no_data(self) -> None:
        """Fill the dataset's path keywords from its shipped sample when none is given."""
        sample = SAMPLES.get(self.dataset_name)
        if sample is None:
            return
        given = {
            key: section
            for section, kwargs in self._sections()
            for key in sample.keys
            if kwargs.get(key) is not None
        }
        if given:
            missing = [key for key in sample.keys if key not in given]
            if missing:
                have = ", ".join(f"data.init_args.{given[k]}.{k}" for k in given)
                raise ValueError(
                    f"{have} is given but data.init_args.common_kwargs.{missing[0]} is not: "
                    f"{self.dataset_name!r} needs {' and '.join(sample.keys)} together (give "
                    "none of them to train on the sample data shipped with smp-imbalance)"
                )
            return
        for _, kwargs in self._sections():
            for key in sample.keys:
                kwargs.pop(key, None)
        self.common_kwargs = {**self.common_kwargs, **sample.kwargs}
        changed = []
        for key, value in sample.limits.items():
            current = getattr(self, key)
            if key == "batch_size":
                value = min(current, value)
            if current != value:
                setattr(self, key, value)
                changed.append(f"{key}={value}")
        keys = " and ".join(f"data.init_args.common_kwargs.{k}" for k in sample.keys)
        self.sample_note = (
            f"data: no {keys} given, so training on the sample data shipped with smp-imbalance: "
            f"{sample.what}"
            + (f" ({', '.join(changed)} for it)" if changed else "")
            + f"; for real data set {keys}"
        )
        rank_zero_info(self.sample_note)

    def _create(self, split: str, kwargs: dict[str, Any]) -> Dataset:
        kwargs = {**self.common_kwargs, **kwargs}
        if "transform" not in kwargs and self.transforms == "default":
            kwargs["transform"] = default_transform(
                self.dataset_name, split, **self.transform_kwargs
            )
        return create_dataset(self.dataset_name, **kwargs)

    def build(self, split: str) -> Dataset:
        """Build (once) the dataset of ``split``."""
        if split in self.datasets:
            return self.datasets[split]
        if self.folds is not None and split in ("train", "val"):
            self._build_folds()
            return self.datasets[split]
        own = self.split_kwargs.get(split)
        if own is None:  # test falls back to the validation split
            return self.build("val")
        self.datasets[split] = self._create(split, own)
        if split == "train":
            self.train_labels = getattr(self.datasets[split], "labels", None)
        return self.datasets[split]

    def _build_folds(self) -> None:
        from smp_imbalance.datasets.sampling import multilabel_kfold

        train_full = self._create("train", self.split_kwargs["train"])
        labels = getattr(train_full, "labels", None)
        if labels is None:
            raise ValueError(
                f"data.folds needs a labelled dataset with a `labels` matrix; "
                f"{self.dataset_name!r} has none"
            )
        val_full = self._create("val", {**self.split_kwargs["train"], **self.split_kwargs["val"]})
        train_idx, val_idx = multilabel_kfold(labels, self.folds, seed=self.fold_seed)[self.fold]
        self.datasets["train"] = Subset(train_full, train_idx.tolist())
        self.datasets["val"] = Subset(val_full, val_idx.tolist())
        self.train_labels = labels[train_idx]

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.build("train")
            self.build("val")
        elif stage == "validate":
            self.build("val")
        elif stage in ("test", "predict"):
            self.build("test")

    def _stage_split(self) -> str:
        trainer = self.trainer  # None outside a Trainer
        if trainer is None or trainer.training:
            return "train"
        if trainer.testing or trainer.predicting:
            return "test"
        return "val"  # validating, sanity checking

    def batch_transform(self, split: str) -> Any:
        """The ``batch_transform()`` of ``split``'s dataset (``Subset``s unwrapped), or ``None``."""
        if split not in self._batch_transforms:
            ds: Any = self.build(split)
            while isinstance(ds, Subset):
                ds = ds.dataset
            factory = getattr(ds, "batch_transform", None)
            self._batch_transforms[split] = factory() if callable(factory) else None
        return self._batch_transforms[split]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        split = self._stage_split()
        transform = self.batch_transform(split)
        if transform is None:
            return batch
        if isinstance(transform, torch.nn.Module):
            transform.to(batch["image"].device)  # a no-op once its buffers are there
        return transform(batch)

    def sample_channels(self) -> int:
        """Channels of the first training (or validation) sample's image."""
        ds = self.datasets.get("train") or self.build("val")
        return int(ds[0]["image"].shape[0])

    def data_seed(self) -> int:
        """``seed``, or the run's seed (``PL_GLOBAL_SEED``, set by ``seed_everything``), or 0."""
        if self.seed is not None:
            return int(self.seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def _common_loader_kwargs(self) -> dict[str, Any]:
        return {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _train_loader(self) -> ResumableDataLoader:
        seed = self.data_seed()
        ds = SeededDraws(self.build("train"), seed)
        # the workers' base seed comes from this generator instead of the global RNG, so that
        # starting an epoch draws nothing from the global stream (see RNGStateCheckpoint)
        common = {**self._common_loader_kwargs(), "generator": torch.Generator().manual_seed(seed)}
        if self.sampler == "minority":
            from smp_imbalance.datasets.sampling import MinorityAwareBatchSampler

            if self.train_labels is None:
                raise ValueError(
                    f"data.sampler='minority' needs a multi-label dataset with a `labels` matrix; "
                    f"{self.dataset_name!r} has none"
                )
            batch_sampler = MinorityAwareBatchSampler(
                self.train_labels, self.batch_size, **{"seed": seed, **self.sampler_kwargs}
            )
            loader = ResumableDataLoader(ds, batch_sampler=DrawBatches(batch_sampler), **common)
        else:
            loader = ResumableDataLoader(
                ds,
                batch_size=self.batch_size,
                sampler=ShuffleShardSampler(ds, seed=seed),
                drop_last=True,
                **common,
            )
        if self._train_loader_state is not None:
            loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        self._train_loader_obj = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The train loader's position (also saved by Lightning, which may drop it on load: see
        :class:`~.resume.ResumableDataLoader`)."""
        if self._train_loader_obj is None:
            return {}
        return {"train_loader": self._train_loader_obj.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Give the saved position to the train loader (the current one and the next built)."""
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self._train_loader_obj is not None:
            self._train_loader_obj.load_state_dict(state)
        else:
            self._train_loader_state = dict(state)

    def _eval_loader(self, split: str) -> DataLoader:
        ds = self.build(split)
        size, rank = world()
        sampler = None
        if size > 1:
            sampler = DistributedSampler(ds, num_replicas=size, rank=rank, shuffle=False)
        return DataLoader(
            ds, batch_size=self.batch_size, sampler=sampler, **self._common_loader_kwargs()
        )

    def train_dataloader(self) -> DataLoader:
        return self._train_loader()

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        # Lightning shards prediction itself, without repeating samples
        return DataLoader(
            self.build("test"), batch_size=self.batch_size, **self._common_loader_kwargs()
        )


def _check_data_paths(kwargs: Mapping[str, Any], where: str) -> None:
    """Raise ``FileNotFoundError`` naming the config key when a data path in ``kwargs`` does not
    exist: ``root`` (a folder), ``csv_file`` (a file), and every source of ``scenes``
    (``inputs`` / ``targets`` / ``mask``: a path, a glob pattern with ``{band}``, or a
    band -> path mapping)."""
    hint = "the recipe's data is missing: point the key at your data on the command line"
    for key, is_dir in (("root", True), ("csv_file", False)):
        value = kwargs.get(key)
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            ok = path.is_dir() if is_dir else path.is_file()
            if not ok:
                kind = "folder" if is_dir else "file"
                raise FileNotFoundError(f"{where}.{key}: no such {kind} {path} ({hint})")
    scenes = kwargs.get("scenes")
    if not isinstance(scenes, (list, tuple)):
        return
    for i, scene in enumerate(scenes):
        if not isinstance(scene, Mapping):
            continue
        for role in ("inputs", "targets", "mask"):
            spec = scene.get(role)
            sources = (
                list(spec.values())
                if isinstance(spec, Mapping)
                else [spec]
                if isinstance(spec, (str, os.PathLike))
                else []
            )
            for source in sources:
                if isinstance(source, (list, tuple)) and source:  # (path, band index or name)
                    source = source[0]
                if not isinstance(source, (str, os.PathLike)):
                    continue
                pattern = str(source).replace("{band}", "*")
                if not glob.glob(pattern):
                    raise FileNotFoundError(
                        f"{where}.scenes[{i}].{role}: no file matches {source} ({hint})"
                    )
