"""Two-process CPU (gloo) fits of the HPA and Sentinel-2 recipes through the real CLI.

Each run must complete; every rank must have trained on its own shard of the training set (the
minority sampler's per-rank plan for HPA, the shuffled shard of ``ShuffleShardSampler`` for the
satellite recipes) and validated on its own half of the validation set; and the validation
metrics logged by rank 0 must be those of the whole validation set, i.e. equal those of a
one-process ``validate`` of the same weights. (The detector recipe's DDP test is in
``test_training.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TEST_DATA
from test_training import (
    CONFIGS,
    RARE,
    callbacks_arg,
    fake_hpa,
    fake_hpa_args,
    logged_rows,
    run_cli_process,
)

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

DDP = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
SATELLITE = TEST_DATA / "satellite"


def _ddp_fit_then_validate(
    tmp_path: Path, config: str, args: list[str], name: str
) -> tuple[list[dict], dict[str, float], dict[str, float]]:
    """Fit on 2 processes with :class:`RecordBatches`, validate its last checkpoint on one.

    Returns what each rank saw, and the last logged validation values of both runs."""
    record = tmp_path / "record"
    record.mkdir()
    common = ["--config", str(CONFIGS / config), *args]
    recorder = ("test_training.RecordBatches", {"out": str(record)})
    checkpoint = ("lightning.pytorch.callbacks.ModelCheckpoint", {"save_last": True})
    run_cli_process(["fit", *common, *DDP, callbacks_arg(checkpoint, recorder)], tmp_path)
    seen = [json.loads((record / f"rank{r}.json").read_text()) for r in (0, 1)]
    runs = tmp_path / "runs" / name
    last = runs / "version_0" / "checkpoints" / "last.ckpt"
    run_cli_process(["validate", *common, "--trainer.devices=1", f"--ckpt_path={last}"], tmp_path)
    return seen, _last_validation(runs / "version_0"), _last_validation(runs / "version_1")


def _last_validation(run: Path) -> dict[str, float]:
    """The ``val/...`` values of the last row of ``metrics.csv`` that has them."""
    rows = [row for row in logged_rows(run) if row.get("val/loss") or row.get("val/bce")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v != ""}


def _assert_reduced(ddp: dict[str, float], single: dict[str, float], keys: list[str]) -> None:
    assert keys and set(keys) <= set(ddp) & set(single)
    for key in keys:
        assert ddp[key] == pytest.approx(single[key], rel=1e-5, abs=1e-7), key


def _assert_val_split(seen: list[dict], expected: list) -> None:
    """Each rank validated its own half; together the whole validation set, once."""
    assert len(seen[0]["val"]) == len(seen[1]["val"]) == len(expected) // 2
    assert sorted(seen[0]["val"] + seen[1]["val"]) == sorted(expected)


def test_hpa_recipe_ddp_shards_minority_batches_and_reduces_metrics(tmp_path: Path) -> None:
    from smp_imbalance.datasets.sampling import MinorityAwareBatchSampler
    from smp_imbalance.training import RegistryDataModule

    images, csv_file = fake_hpa(tmp_path / "hpa")
    args = [*fake_hpa_args(images, csv_file), "--trainer.max_epochs=2"]
    seen, ddp_val, single = _ddp_fit_then_validate(tmp_path, "hpa_multilabel.yaml", args,
                                                   "hpa_multilabel")  # fmt: skip

    dm = RegistryDataModule(
        "protein_atlas", common_kwargs={"root": str(images), "csv_file": str(csv_file)},
        folds=3, transform_kwargs={"size": 32},
    )  # fmt: skip
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    train_ids = [train.dataset.ids[i] for i in train.indices]
    for rank in (0, 1):
        sampler = MinorityAwareBatchSampler(
            dm.train_labels, 4, rare=list(RARE), labels_per_batch=1, num_replicas=2, rank=rank
        )
        planned = []
        for epoch in (0, 1):  # epoch 1 differs: the sampler got its set_epoch
            sampler.set_epoch(epoch)
            planned += [[train_ids[i] for i in batch] for batch in sampler]
        assert seen[rank]["train"] == planned, rank
    assert seen[0]["train"][0] != seen[1]["train"][0]
    _assert_val_split(seen, [val.dataset.ids[i] for i in val.indices])

    assert {"val/bce", "val/f1_macro", "val/f1_macro_tuned"} <= set(single)
    _assert_reduced(ddp_val, single, sorted(single))


SENTINEL2 = {
    "sentinel2_crossband.yaml": (
        {"inputs": str(SATELLITE / "s2_19UDP_wedge_{band}.tif")},  # 23 train / 8 val patches
        ["--model.init_args.decoder_channels=[16,8,8]"],
    ),
    "sentinel2_l1c_to_l2a.yaml": (  # the same bands as input and target: the wiring is the point
        {"inputs": str(SATELLITE / "T33UUU_{band}.tif"),
         "targets": str(SATELLITE / "T33UUU_{band}.tif")},  # 49 train / 16 val patches
        ["--model.init_args.encoder_name=resnet18", "--model.init_args.decoder_channels=[16,8,8]"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("config", sorted(SENTINEL2))
def test_sentinel2_recipe_ddp_shards_and_reduces_metrics(config: str, tmp_path: Path) -> None:
    from smp_imbalance.training import RegistryDataModule
    from smp_imbalance.training.resume import ShuffleShardSampler

    scene, model_args = SENTINEL2[config]
    args = [
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        f"--data.init_args.common_kwargs.scenes=[{json.dumps(scene)}]",
        "--data.init_args.common_kwargs.patch_size=32",
        "--data.init_args.train_kwargs.stride=16",
        "--data.init_args.val_kwargs.stride=32",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--model.init_args.encoder_depth=3",
        "--model.init_args.plot_every_n_epochs=0",
        *model_args,
    ]
    name = config.removesuffix(".yaml")
    seen, ddp_val, single = _ddp_fit_then_validate(tmp_path, config, args, name)

    # the same patches in this process, untransformed: the fingerprints are flip/rotation-free
    recipe = yaml.safe_load((CONFIGS / config).read_text())["data"]["init_args"]
    common = {**recipe["common_kwargs"], "scenes": [scene], "patch_size": 32}
    dm = RegistryDataModule(
        "masked_bands", common_kwargs=common, train_kwargs={"stride": 16},
        val_kwargs={"stride": 32}, transforms="none",
    )  # fmt: skip
    dm.setup("fit")

    def fingerprint(ds: torch.utils.data.Dataset, i: int) -> float:
        return round(float(ds[i]["image"].double().sum()), 3)

    train = dm.datasets["train"]
    for rank in (0, 1):
        sampler = ShuffleShardSampler(train, seed=0, num_replicas=2, rank=rank)
        order = [draw.index for draw in sampler]
        planned = [[fingerprint(train, i) for i in order[b * 4 : (b + 1) * 4]] for b in (0, 1)]
        assert seen[rank]["train"] == planned, rank
    val = dm.datasets["val"]
    _assert_val_split(seen, [fingerprint(val, i) for i in range(len(val))])

    assert {"val/loss", "val/score"} <= set(single) and any(
        k.startswith("val/ssim") for k in single
    )
    # not val/loss: the mean of per-batch losses, and the valid-pixel weighting normalises over
    # a batch, whose samples differ (a DDP rank's batches hold every other sample)
    _assert_reduced(ddp_val, single, [k for k in sorted(single) if k != "val/loss"])
