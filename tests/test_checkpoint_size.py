"""Checkpoints hold what the model uses: smp's never-run encoder stages are left out (DenseTask)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from smp_imbalance.training import DenseTask, RegistryDataModule

pytestmark = pytest.mark.slow

MAIN_JOB = {  # the earlier main job: an smp UNet cut at depth 3 (its unused stages are dropped)
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
    "output_activation": "gate",
    "metrics": "none",
}


def _state_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@pytest.mark.parametrize(("depth", "dropped"), [(3, ["encoder.layer3", "encoder.layer4"]), (5, [])])
def test_unused_encoder_stages_are_left_out(depth: int, dropped: list[str]) -> None:
    decoder = [32, 16, 8, 8, 8][:depth]
    task = DenseTask(**{**MAIN_JOB, "encoder_depth": depth, "decoder_channels": decoder})
    assert task.dropped_unused == dropped
    assert all(p.requires_grad for p in task.parameters())
    trained = sum(p.numel() for p in task.parameters())
    if depth == 3:
        assert trained < 800_000  # 759 K: the main job's trained parameters, nothing more
        assert _state_bytes(task) < 1.05 * 4 * trained  # + BatchNorm running stats
    out = task(torch.rand(2, 1, 32, 24))
    assert out.shape == (2, 1, 32, 24)


def test_checkpoint_is_the_size_of_the_model_and_loads(tmp_path: Path) -> None:
    L.seed_everything(0)
    task = DenseTask(**MAIN_JOB, plot_every_n_epochs=0)
    data = RegistryDataModule(
        "detector_frames",
        common_kwargs={"target": "kept"},
        train_kwargs={"num_frames": 4, "seed": 0, "train": True},
        val_kwargs={"num_frames": 2, "seed": 1, "train": False},
        batch_size=2,
    )
    trainer = L.Trainer(
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=data)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    trained_bytes = 4 * sum(p.numel() for p in task.parameters())
    # weights + the two AdamW moments + small state: ~3x the model, was 51 MB
    assert ckpt.stat().st_size < 3.5 * trained_bytes + 1_000_000
    loaded = DenseTask.load_from_checkpoint(ckpt).eval()
    task.eval()
    frame = torch.rand(1, 1, 128, 88) * (torch.rand(1, 1, 128, 88) > 0.98)
    with torch.no_grad():
        assert torch.equal(loaded(frame), task(frame))


def test_checkpoints_with_the_unused_stages_still_load() -> None:
    """A checkpoint written before the stages were left out carries their (unused) weights."""
    task = DenseTask(**MAIN_JOB)
    old = {"state_dict": {**task.state_dict(), "net.encoder.layer4.0.conv1.weight": torch.ones(1)}}
    fresh = DenseTask(**MAIN_JOB)
    fresh.on_load_checkpoint(old)
    fresh.load_state_dict(old["state_dict"])  # strict
    assert "net.encoder.layer4.0.conv1.weight" not in old["state_dict"]
