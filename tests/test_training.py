"""The training recipes end to end on tiny models and data: the CLI, the tasks, and users' own code."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from conftest import HPA_SAMPLE
from torch import nn

import smp_imbalance
from smp_imbalance.recipes import RECIPES_DIR
from smp_imbalance.training.cli import format_metrics, run_cli

pytestmark = pytest.mark.slow

CONFIGS = RECIPES_DIR
TINY_DENSE = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.encoder_name=tu-mobilenetv3_small_050",
    "--model.init_args.decoder_channels=[16,8,8]",
    "--data.init_args.train_kwargs.num_frames=8",
    "--data.init_args.val_kwargs.num_frames=4",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
]
HPA = HPA_SAMPLE
TINY_HPA = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
    "--model.init_args.model_name=resnet10t",
    f"--data.init_args.common_kwargs.root={HPA / 'images'}",
    f"--data.init_args.common_kwargs.csv_file={HPA / 'train.csv'}",
    "--data.init_args.folds=null",
    "--data.init_args.sampler=random",
    "--data.init_args.batch_size=2",
    "--data.init_args.num_workers=0",
    "--data.init_args.transform_kwargs.size=64",
]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fit(config: str, extra: list[str]) -> L.Trainer:
    cli = run_cli(["fit", "--config", str(CONFIGS / config), *extra])
    return cli.trainer


def test_detector_recipe_fits_and_reports(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainer = _fit("detector_denoise.yaml", TINY_DENSE)
    out = capsys.readouterr().out
    assert "final metrics" in out and "val/signal_retention" in out and "val/noise_removal" in out
    run = Path(trainer.log_dir)
    assert f"run folder: {trainer.log_dir}" in out
    assert (run / "config.yaml").exists()
    assert (run / "metrics.csv").exists()
    assert list((run / "figures").glob("val_epoch000.png"))
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    assert list((in_tmp / "runs" / "detector_denoise_tb").rglob("events.out.tfevents*"))
    for key in ("val/score", "val/loss", "train/loss"):
        assert torch.isfinite(trainer.callback_metrics[key])


def test_resume_from_last_continues(in_tmp: Path) -> None:
    first = _fit("detector_denoise.yaml", TINY_DENSE)
    last = Path(first.log_dir) / "checkpoints" / "last.ckpt"
    resumed = _fit(
        "detector_denoise.yaml",
        [*TINY_DENSE, "--trainer.max_epochs=2", f"--ckpt_path={last}"],
    )
    assert resumed.current_epoch == 2
    assert resumed.global_step == 4  # 2 steps restored + 2 new ones


def test_loss_by_name_and_by_class_path(in_tmp: Path) -> None:
    no_kwargs = "--model.init_args.loss_kwargs={}"
    trainer = _fit("detector_denoise.yaml", [*TINY_DENSE, "--model.init_args.loss=mse", no_kwargs])
    assert isinstance(trainer.lightning_module.loss_fn, nn.MSELoss)
    with pytest.raises(
        (TypeError, ValueError), match=r"loss_kwargs .*zero_weighting.* do not fit loss .l1."
    ):
        _fit("detector_denoise.yaml", [*TINY_DENSE, "--model.init_args.loss=l1"])
    class_path = (
        '--model.init_args.loss={"class_path": "smp_imbalance.losses.ACBMSELoss", '
        '"init_args": {"nonzero_weighting": 3.0}}'
    )
    trainer = _fit("detector_denoise.yaml", [*TINY_DENSE, class_path, no_kwargs])
    loss_fn = trainer.lightning_module.loss_fn
    assert type(loss_fn).__name__ == "ACBMSELoss"
    with pytest.raises(ValueError, match="loss_kwargs apply to a loss given by name"):
        _fit("detector_denoise.yaml", [*TINY_DENSE, class_path])


def test_unknown_loss_lists_valid_names(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown loss name 'acb_mes'.*acb_mse"):
        _fit("detector_denoise.yaml", [*TINY_DENSE, "--model.init_args.loss=acb_mes"])


def test_unknown_config_key_fails_before_training(in_tmp: Path) -> None:
    with pytest.raises(SystemExit):
        _fit("detector_denoise.yaml", [*TINY_DENSE, "--model.init_args.not_a_key=1"])
    assert not (in_tmp / "runs").exists()


def test_channel_mismatch_fails_before_first_step(in_tmp: Path) -> None:
    # an smp UNet (which takes any channel count) given 3 channels on the 1-channel frames
    unet = ["--model.init_args.arch=Unet", "--model.init_args.encoder_depth=3"]
    unet.append("--model.init_args.model_kwargs={}")
    with pytest.raises(ValueError, match=r"model.in_channels=3 but .* 1 channels"):
        _fit(
            "detector_denoise.yaml",
            [*TINY_DENSE, *unet, "--model.init_args.in_channels=3", "--model.init_args.classes=3"],
        )


def test_hit_graph_rejects_more_than_one_channel_at_construction(in_tmp: Path) -> None:
    with pytest.raises(ValueError, match=r"in_channels and classes must be 1, got 3 and 3"):
        _fit(
            "detector_denoise.yaml",
            [*TINY_DENSE, "--model.init_args.in_channels=3", "--model.init_args.classes=3"],
        )


def test_nan_loss_stops_naming_step_and_batch(in_tmp: Path) -> None:
    nan_loss = '--model.init_args.loss={"class_path": "test_training.NaNLoss"}'
    with pytest.raises(FloatingPointError, match=r"global step 0, epoch 0, batch 0"):
        _fit("detector_denoise.yaml", [*TINY_DENSE, nan_loss, "--model.init_args.loss_kwargs={}"])


class NaNLoss(nn.Module):
    """A loss that returns NaN, to check that training stops."""

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return (y_pred * float("nan")).mean()


def test_print_config(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "--config", str(CONFIGS / "detector_denoise.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["init_args"]["loss"] == "acb_mse"
    assert config["data"]["init_args"]["dataset"] == "detector_frames"


def test_hpa_recipe_fits_on_real_layout(in_tmp: Path) -> None:
    trainer = _fit("hpa_multilabel.yaml", TINY_HPA)
    task = trainer.lightning_module
    assert type(task.loss_fn).__name__ == "ClassRectificationLoss"
    assert torch.isfinite(trainer.callback_metrics["val/f1_macro_tuned"])
    ckpt = torch.load(Path(trainer.log_dir) / "checkpoints" / "last.ckpt", weights_only=False)
    thresholds = ckpt["state_dict"]["thresholds"]
    assert thresholds.shape == (28,)
    assert torch.equal(thresholds, task.thresholds.cpu())  # tuned thresholds travel with the ckpt
    assert list((Path(trainer.log_dir) / "figures").glob("f1_epoch*.png"))


def test_multilabel_task_passes_features_for_instance_mining() -> None:
    from smp_imbalance.training import MultiLabelTask

    task = MultiLabelTask(
        model_name="resnet10t", in_chans=4, num_classes=5, loss="crl",
        loss_kwargs={"alpha": 0.5, "mining": "instance", "k": 2},
    )  # fmt: skip
    assert task.wants_features
    seen = {}
    original = task.loss_fn.forward

    def spy(logits: torch.Tensor, target: torch.Tensor, features: torch.Tensor | None = None):
        seen["features"] = features
        return original(logits, target, features=features)

    task.loss_fn.forward = spy  # type: ignore[method-assign]
    batch = {"image": torch.rand(8, 4, 32, 32), "target": (torch.rand(8, 5) > 0.5).float()}
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)
    assert seen["features"].shape == (8, task.net.num_features)


# -- in users' existing code ---------------------------------------------------------------------


class ExistingSmpModule(L.LightningModule):
    """What an smp user already has: a Lightning module around an smp model and an smp loss."""

    def __init__(self, loss_fn: nn.Module) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        self.model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3,
                              decoder_channels=(16, 8, 8), in_channels=1, classes=1)  # fmt: skip
        self.loss_fn = loss_fn

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        image, mask = batch
        loss = self.loss_fn(self.model(image), mask)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


@pytest.mark.parametrize("loss_name", ["smp.dice", "acb_mse"])
def test_swap_smp_dice_for_acb_mse_in_existing_module(loss_name: str, tmp_path: Path) -> None:
    images = torch.rand(8, 1, 32, 32)
    masks = (torch.rand(8, 1, 32, 32) > 0.97).float()
    loader = torch.utils.data.DataLoader(list(zip(images, masks, strict=True)), batch_size=4)
    module = ExistingSmpModule(smp_imbalance.create_loss(loss_name))
    before = [p.detach().clone() for p in module.parameters()]
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, loader)
    assert torch.isfinite(trainer.callback_metrics["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_hydra_target_configs_build_our_losses() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "by_class": {"_target_": "smp_imbalance.losses.ACBMSELoss", "nonzero_weighting": 2.0},
            "by_name": {"_target_": "smp_imbalance.create_loss", "name": "valid_pixel"},
            "crl": {"_target_": "smp_imbalance.create_loss", "name": "crl", "alpha": 0.3},
        }
    )
    losses = instantiate(config)
    assert type(losses.by_class).__name__ == "ACBMSELoss"
    assert type(losses.by_name).__name__ == "ValidPixelWeightedLoss"
    assert type(losses.crl).__name__ == "ClassRectificationLoss"
    x, y = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    assert torch.isfinite(losses.by_class(x, y))


def test_format_metrics_table() -> None:
    table = format_metrics(
        {"b": torch.tensor(0.5), "a": 1, "vec": torch.ones(3), "n": float("nan")}
    )
    lines = table.splitlines()
    assert lines[0] == "metrics"
    assert [line.split()[0] for line in lines[2:-1]] == ["a", "b", "n"]
    assert "nan" in table


@pytest.mark.distributed
def test_ddp_two_processes_reduce_metrics(tmp_path: Path) -> None:
    """A 2-process CPU (gloo) fit; the validation metrics logged by rank 0 must be those of the
    whole validation set (reduced over both ranks), i.e. equal a 1-process validation of the same
    weights."""
    exe = Path(sys.executable).parent / "smp-imbalance"
    common = [
        "--config", str(CONFIGS / "detector_denoise.yaml"), *TINY_DENSE,
        "--data.init_args.val_kwargs.num_frames=8", "--trainer.limit_val_batches=1.0",
        "--data.init_args.batch_size=2",
    ]  # fmt: skip
    env = {**os.environ, "SMP_IMBALANCE_COMPILE": "0"}
    subprocess.run(
        [str(exe), "fit", *common, "--trainer.accelerator=cpu", "--trainer.devices=2",
         "--trainer.strategy=ddp"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    run = tmp_path / "runs" / "detector_denoise" / "version_0"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    ddp_val = [r for r in rows if r.get("val/mse_hit")][-1]
    single = subprocess.run(
        [str(exe), "validate", *common, "--trainer.devices=1",
         f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    one = {}
    for line in single.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("val/"):
            one[parts[0]] = float(parts[1])
    for key in ("val/mse_hit", "val/mse_nohit", "val/signal_retention", "val/noise_removal"):
        assert float(ddp_val[key]) == pytest.approx(one[key], rel=1e-3, abs=1e-4), key


def test_gate_output_keeps_or_drops_input_pixels() -> None:
    from smp_imbalance.training import DenseTask

    task = DenseTask(encoder_name="resnet18", encoder_depth=3, decoder_channels=[8, 8, 8],
                     output_activation="gate", metrics="none")  # fmt: skip
    image = torch.zeros(2, 1, 32, 32)
    image[:, :, 5, 7] = 0.4
    out = task(image)  # training: a soft gate
    assert torch.equal(out[image == 0], torch.zeros_like(out[image == 0]))
    assert ((out[image > 0] > 0) & (out[image > 0] < 0.4)).all()
    task.eval()  # decisions: each hit kept whole or dropped
    with torch.no_grad():
        logits = task.net(image)
        out = task(image)
    kept = torch.sigmoid(logits) > 0.5
    assert torch.equal(out, torch.where(kept, image, torch.zeros(())))
    with pytest.raises(ValueError, match="classes == in_channels"):
        DenseTask(encoder_depth=3, output_activation="gate", classes=2, metrics="none")


def test_dense_task_rejects_bad_arguments() -> None:
    from smp_imbalance.training import DenseTask

    with pytest.raises(ValueError, match=r"model\.task"):
        DenseTask(task="denoise")
    with pytest.raises(ValueError, match=r"model\.output_activation"):
        DenseTask(output_activation="relu")
    with pytest.raises(ValueError, match=r"model\.metrics"):
        DenseTask(metrics="psnr")


@pytest.mark.parametrize("output", ["scaled", "dn"])
def test_sentinel2_crossband_recipe_on_real_samples(output: str, tmp_path: Path) -> None:
    """The recipe as shipped (on the Sentinel-2 sample shipped with the package), and with
    raw-DN samples scaled by the data module per batch."""
    trainer = _fit(
        "sentinel2_crossband.yaml",
        [
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--model.init_args.encoder_depth=3",
            "--model.init_args.decoder_channels=[16,8,8]",
            "--data.init_args.batch_size=2",
            f"--data.init_args.common_kwargs.output={output}",
        ],
    )
    assert trainer.datamodule.datasets["train"].output == output
    assert "sample data shipped with smp-imbalance" in trainer.datamodule.sample_note
    metrics = trainer.callback_metrics
    for key in ("val/psnr_B08", "val/rmse_B08", "val/ssim_B08", "val/loss"):
        assert torch.isfinite(metrics[key]), key
    assert list((Path(trainer.log_dir) / "figures").glob("val_epoch000.png"))


# -- shared by test_training_resume.py and test_training_ddp.py ------------------------------------
#
# The subprocess runs below load the callbacks by class path ("test_training.KillAtStep"): they
# run with the tests folder on PYTHONPATH, one thread each, so that every run computes alike.

SUBPROCESS_ENV = {
    **os.environ,
    "SMP_IMBALANCE_COMPILE": "0",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p
    ),
}
CLI = Path(sys.executable).parent / "smp-imbalance"
RARE = (8, 27)  # the rare labels of fake_hpa()


def fake_hpa(root: Path, n: int = 24, size: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """A small HPA-layout dataset (random 8-bit planes): ``n`` Ids with label 0 or 25, and the
    "rare" labels 8 and 27 on every fourth Id each. Returns (images folder, csv file)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(n):
        labels = {0 if i % 2 else 25} | {1: {8}, 2: {27}}.get(i % 4, set())
        for colour in ("red", "green", "blue", "yellow"):
            plane = rng.integers(0, 256, (size, size), dtype=np.uint8)
            cv2.imwrite(str(images / f"id{i:02d}_{colour}.png"), plane)
        rows.append(f"id{i:02d},{' '.join(str(c) for c in sorted(labels))}")
    csv_file = root / "train.csv"
    csv_file.write_text("Id,Target\n" + "\n".join(rows) + "\n")
    return images, csv_file


def fake_hpa_args(images: Path, csv_file: Path) -> list[str]:
    """The HPA recipe on :func:`fake_hpa` data: fold 0 of 3 (16 train / 8 val Ids), the minority
    sampler covering one rare label per batch of 4, a tiny timm model."""
    return [
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--model.init_args.model_name=resnet10t",
        "--model.init_args.plot_every_n_epochs=0",
        f"--data.init_args.common_kwargs.root={images}",
        f"--data.init_args.common_kwargs.csv_file={csv_file}",
        "--data.init_args.folds=3",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--data.init_args.transform_kwargs.size=32",
        '--data.init_args.sampler_kwargs={"rare": [8, 27], "labels_per_batch": 1}',
    ]


def callbacks_arg(*callbacks: tuple[str, dict]) -> str:
    """``--trainer.callbacks=[...]`` replacing the recipe's list by ``(class_path, init_args)``s."""
    import json

    listed = [{"class_path": path, "init_args": args} for path, args in callbacks]
    return f"--trainer.callbacks={json.dumps(listed)}"


def run_cli_process(args: list[str], cwd: Path, timeout: float = 300) -> str:
    """``smp-imbalance *args`` in ``cwd``; its stdout (the stderr too when it fails)."""
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(CLI), *args], cwd=cwd, env=SUBPROCESS_ENV, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


def logged_rows(run: Path) -> list[dict[str, str]]:
    """The rows of ``<run>/metrics.csv`` (CSVLogger)."""
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


class KillAtStep(L.Callback):
    """SIGKILLs its own process when the training batch at global step ``step`` starts: no
    checkpoint, no cleanup, like a node lost mid-epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class RecordBatches(L.Callback):
    """Writes what each rank trained and validated on to ``<out>/rank<r>.json``: per training
    batch the sample Ids (``id`` key) or a fingerprint of each image (its sum, invariant under
    flips and rotations), and the same for the samples of the last validation."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.train: list[list[Any]] = []
        self.val: list[Any] = []

    @staticmethod
    def _keys(batch: dict[str, Any]) -> list[Any]:
        if "id" in batch:
            return list(batch["id"])
        return [round(float(x.double().sum()), 3) for x in batch["image"]]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.train.append(self._keys(batch))

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        if not trainer.sanity_checking:
            self.val.extend(self._keys(batch))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val = []  # the last validation only

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import json

        path = Path(self.out) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"train": self.train, "val": self.val}))
