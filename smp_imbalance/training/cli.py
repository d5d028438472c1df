"""``smp-imbalance fit|validate|test|predict --config RECIPE`` (LightningCLI; RECIPE: a packaged name or a YAML path).

Models and data modules are given by ``class_path``/``init_args`` like any Lightning recipe, every
option can be overridden on the command line (``--model.init_args.lr 3e-4`` or the short
``--model.lr 3e-4``), and ``--print_config`` shows the resolved configuration. After ``fit``,
``validate`` and ``test`` the final metrics are printed as a table with the run folder's path.

``fit --ckpt_path last`` resumes from the newest ``last*.ckpt`` of the experiment (every
``<save_dir>/<name>/*/checkpoints`` folder of the first logger), not only of the new run's own
folder: a versioned logger gives the resumed run a new ``version_N`` folder, where Lightning's
own ``"last"`` lookup would find nothing and silently start from scratch. The resumed run logs
into that new folder (a CSV logger would delete the old run's ``metrics.csv`` if pointed at it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info


def format_metrics(metrics: Mapping[str, Any], title: str = "metrics") -> str:
    """A two-column text table of scalar metrics, sorted by name."""
    rows = []
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            rows.append((name, "nan" if math.isnan(value) else f"{value:.4f}"))
    if not rows:
        return f"{title}: (none)"
    width = max(len(n) for n, _ in rows)
    line = "-" * (width + 14)
    body = "\n".join(f"{n:<{width}}  {v:>12}" for n, v in rows)
    return f"{title}\n{line}\n{body}\n{line}"


def find_last_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest ``last*.ckpt`` under ``<save_dir>/<name>/*/checkpoints`` of the trainer's first
    logger, or None (also when a ``ModelCheckpoint`` has an explicit ``dirpath`` or there is no
    logger: the checkpoint folder is then fixed and Lightning's own ``"last"`` lookup finds it).
    """
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    if not trainer.loggers or any(cb.dirpath is not None for cb in callbacks):
        return None
    logger = trainer.loggers[0]
    root = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)
    found = [p for p in root.glob("*/checkpoints/last*.ckpt") if p.is_file()]
    if not found:
        return None
    return str(max(found, key=lambda p: p.stat().st_mtime_ns))


class SmpImbalanceCLI(LightningCLI):
    """LightningCLI that prints a metrics table and the run folder after each subcommand."""

    def _report(self, title: str) -> None:
        trainer = self.trainer
        log_dir = trainer.log_dir  # a collective under DDP: every rank must ask for it
        if not trainer.is_global_zero:
            return
        print()
        print(format_metrics(trainer.callback_metrics, title=title))
        print(f"run folder: {log_dir}")
        ckpt = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if ckpt:
            print(f"best checkpoint: {ckpt}")

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            found = find_last_checkpoint(self.trainer)
            if found is not None:
                rank_zero_info(f"--ckpt_path last: resuming from {found}")
                config["ckpt_path"] = found

    def after_fit(self) -> None:
        self._report("final metrics (last validation)")

    def after_validate(self) -> None:
        self._report("validation metrics")

    def after_test(self) -> None:
        self._report("test metrics")


def run_cli(args: Sequence[str] | None = None) -> SmpImbalanceCLI:
    """Run the CLI on ``args`` (``["fit", "--config", ...]``)."""
    cli = SmpImbalanceCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )
    # Lightning leaves a DDP run's process group alive; a gloo group torn down by the
    # interpreter's exit instead aborted a process now and then ("terminate called without an
    # active exception", exit status -6) after a successful fit.
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return cli
