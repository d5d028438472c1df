"""``smp-imbalance fit|validate|test|predict --config configs/<recipe>.yaml`` (LightningCLI).

Models and data modules are given by ``class_path``/``init_args`` like any Lightning recipe, every
option can be overridden on the command line (``--model.init_args.lr 3e-4`` or the short
``--model.lr 3e-4``), and ``--print_config`` shows the resolved configuration. After ``fit``,
``validate`` and ``test`` the final metrics are printed as a table with the run folder's path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI


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

    def after_fit(self) -> None:
        self._report("final metrics (last validation)")

    def after_validate(self) -> None:
        self._report("validation metrics")

    def after_test(self) -> None:
        self._report("test metrics")


def run_cli(args: Sequence[str] | None = None) -> SmpImbalanceCLI:
    """Run the CLI on ``args`` (``["fit", "--config", ...]``)."""
    return SmpImbalanceCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=list(args) if args is not None else None,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )
