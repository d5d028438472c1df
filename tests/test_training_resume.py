"""A run killed mid-epoch and resumed with ``--ckpt_path last`` ends exactly where the same run
without the interruption ends: same weights, optimizer state and logged metrics.

Each recipe is trained three times in subprocesses through the real CLI, with checkpoints every 3
training steps: once uninterrupted, once SIGKILLed when global step 7 starts (mid-epoch: the last
checkpoint is the one of step 6, also mid-epoch), then that run resumed with ``--ckpt_path last``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from test_training import (
    CLI,
    CONFIGS,
    RARE,
    SUBPROCESS_ENV,
    callbacks_arg,
    fake_hpa,
    fake_hpa_args,
    logged_rows,
    run_cli_process,
)
from torch.utils.data import DataLoader

from smp_imbalance.training import RegistryDataModule

pytestmark = pytest.mark.slow

SAVE_EVERY, KILL_AT = 3, 7
DETECTOR = [
    "--trainer.max_epochs=3",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
    "--model.init_args.encoder_name=tu-mobilenetv3_small_050",
    "--model.init_args.decoder_channels=[16,8,8]",
    "--model.init_args.plot_every_n_epochs=0",
    "--data.init_args.train_kwargs.num_frames=16",  # 4 batches an epoch
    "--data.init_args.val_kwargs.num_frames=4",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=1",  # persistent worker: the epoch travels with each index
]


def _checkpointing(monitor: str, kill: bool) -> str:
    checkpoint = ("lightning.pytorch.callbacks.ModelCheckpoint", {
        "monitor": monitor, "mode": "max", "save_last": True, "save_top_k": 1,
        "every_n_train_steps": SAVE_EVERY, "filename": "best-{step}",
    })  # fmt: skip
    kill_cb = [("test_training.KillAtStep", {"step": KILL_AT})] if kill else []
    return callbacks_arg(checkpoint, *kill_cb)


def _values(rows: list[dict[str, str]]) -> dict[tuple[int, str], float]:
    """``(step, name) -> value`` of every logged value."""
    return {
        (int(row["step"]), key): float(value)
        for row in rows
        for key, value in row.items()
        if value != "" and key not in ("step", "epoch")
    }


def _kill_and_resume(tmp_path: Path, config: str, args: list[str], monitor: str, name: str) -> None:
    fit = ["fit", "--config", str(CONFIGS / config), *args]
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full_dir.mkdir()
    killed_dir.mkdir()
    # the uninterrupted run and the one to be killed run side by side (one thread each)
    procs = [
        subprocess.Popen(
            [str(CLI), *fit, _checkpointing(monitor, kill)],
            cwd=cwd,
            env=SUBPROCESS_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cwd, kill in ((full_dir, False), (killed_dir, True))
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert procs[0].returncode == 0, outputs[0][1][-6000:]
    assert procs[1].returncode == -9, outputs[1][1][-6000:]  # SIGKILL: nothing ran after it

    killed_run = killed_dir / "runs" / name / "version_0"
    saved = torch.load(killed_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == KILL_AT - 1
    loader_state = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state[0]["batches"] > 0  # saved mid-epoch: the loader's position travels

    run_cli_process([*fit, _checkpointing(monitor, False), "--ckpt_path=last"], killed_dir)
    resumed_run = killed_dir / "runs" / name / "version_1"  # the resumed run logs anew
    full_run = full_dir / "runs" / name / "version_0"

    want = torch.load(full_run / "checkpoints" / "last.ckpt", weights_only=False)
    got = torch.load(resumed_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert got["global_step"] == want["global_step"] > KILL_AT
    for key, tensor in want["state_dict"].items():
        torch.testing.assert_close(got["state_dict"][key], tensor, rtol=0, atol=1e-6, msg=key)
    for want_opt, got_opt in zip(want["optimizer_states"], got["optimizer_states"], strict=True):
        for index, state in want_opt["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(got_opt["state"][index][key], value, rtol=0, atol=1e-6)

    full_values = _values(logged_rows(full_run))
    resumed_values = _values(logged_rows(resumed_run))
    assert min(step for step, _ in resumed_values) >= KILL_AT - 1  # resumed, not restarted
    after_kill = {k for k in full_values if k[0] >= KILL_AT}
    assert after_kill <= set(resumed_values)  # every step's loss and every validation since
    assert any(key == monitor for _, key in after_kill)
    for key, value in resumed_values.items():
        assert value == pytest.approx(full_values[key], abs=1e-6), key


def test_detector_run_killed_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    _kill_and_resume(tmp_path, "detector_denoise.yaml", DETECTOR, "val/score", "detector_denoise")


def test_hpa_run_killed_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    """The minority sampler's batches, the random augmentations and dropout (drop_rate, drawn
    from the global RNG in the training step) all continue as in the uninterrupted run."""
    images, csv_file = fake_hpa(tmp_path / "hpa")
    args = [
        *fake_hpa_args(images, csv_file),
        "--trainer.max_epochs=3",  # 16 train Ids, 2 fill + 2 rare slots a batch: 8 batches
        "--trainer.limit_train_batches=4",
        "--model.init_args.drop_rate=0.5",
    ]
    _kill_and_resume(tmp_path, "hpa_multilabel.yaml", args, "val/f1_macro_tuned", "hpa_multilabel")


def _detector_data(num_workers: int) -> RegistryDataModule:
    dm = RegistryDataModule(
        "detector_frames", common_kwargs={"target": "kept"},
        train_kwargs={"num_frames": 16, "seed": 0}, val_kwargs={"num_frames": 4, "train": False},
        batch_size=4, num_workers=num_workers, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def _set_epoch(loader: DataLoader, epoch: int) -> DataLoader:
    for obj in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)  # where Lightning calls it
    return loader


def _epoch(loader: DataLoader, epoch: int) -> list[dict[str, torch.Tensor]]:
    return list(_set_epoch(loader, epoch))


def _assert_same_batches(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        for key, value in b.items():
            assert (
                torch.equal(a[key], value) if isinstance(value, torch.Tensor) else a[key] == value
            )


def test_train_loader_resumes_mid_epoch_with_the_same_samples() -> None:
    """In process: the loader's state skips the batches already trained on; the samples
    (degradations, flips) depend on the epoch and position only, not on the worker count,
    the batches drawn before, or an epoch of another seed."""
    dm = _detector_data(num_workers=0)
    epoch0, epoch1 = _epoch(dm.train_dataloader(), 0), _epoch(dm.train_dataloader(), 1)
    assert len(epoch1) == 4
    assert not torch.equal(epoch0[0]["image"], epoch1[0]["image"])
    _assert_same_batches(_epoch(_detector_data(num_workers=1).train_dataloader(), 1), epoch1)

    loader = dm.train_dataloader()
    next(iter(_set_epoch(loader, 1)))
    assert loader.state_dict() == {"epoch": 1, "batches": 1}
    resumed = _detector_data(num_workers=0)
    resumed.load_state_dict({"train_loader": {"epoch": 1, "batches": 3}})  # before the loader
    loader = resumed.train_dataloader()
    _assert_same_batches(_epoch(loader, 1), epoch1[3:])
    assert loader.state_dict() == {"epoch": 1, "batches": 4}
    _assert_same_batches(_epoch(loader, 1), epoch1)  # the skip applies once
    loader.load_state_dict({"epoch": 0, "batches": 2})  # a position in another epoch: dropped
    _assert_same_batches(_epoch(loader, 1), epoch1)


def test_minority_batches_resume_mid_epoch(tmp_path: Path) -> None:
    images, csv_file = fake_hpa(tmp_path)
    dm = RegistryDataModule(
        "protein_atlas", common_kwargs={"root": str(images), "csv_file": str(csv_file)},
        folds=3, sampler="minority", batch_size=4, transform_kwargs={"size": 32},
        sampler_kwargs={"rare": list(RARE), "labels_per_batch": 1}, seed=0,
    )  # fmt: skip
    dm.setup("fit")
    full = _epoch(dm.train_dataloader(), 2)
    assert len(full) == 8
    loader = dm.train_dataloader()
    loader.load_state_dict({"epoch": 2, "batches": 5})
    _assert_same_batches(_epoch(loader, 2), full[5:])
    assert _epoch(loader, 3)[0]["id"] != full[0]["id"]  # new epoch, new plan
