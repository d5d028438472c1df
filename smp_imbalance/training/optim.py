"""Optimiser and schedule from timm's factories, in the shape Lightning expects."""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def timm_optimizers(
    module: nn.Module,
    *,
    optimizer: str,
    lr: float,
    weight_decay: float,
    scheduler: str,
    warmup_steps: int,
    total_steps: int,
    min_lr: float,
) -> dict[str, Any]:
    """``configure_optimizers`` output: timm ``create_optimizer_v2`` (weight decay off for norms and
    biases) and a per-step timm schedule (``sched='cosine'`` with linear warmup by default).

    The timm scheduler is stepped on optimizer updates (``step_update``) by the task's
    ``lr_scheduler_step``, so warmup and decay follow the number of steps, not epochs.
    """
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    opt = create_optimizer_v2(module, opt=optimizer, lr=lr, weight_decay=weight_decay)
    if scheduler == "none":
        return {"optimizer": opt}
    sched, _ = create_scheduler_v2(
        opt,
        sched=scheduler,
        num_epochs=max(total_steps, 1),
        warmup_epochs=warmup_steps,
        warmup_lr=lr * 1e-2,
        min_lr=min_lr,
        step_on_epochs=False,
        updates_per_epoch=1,
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TimmOptimMixin:
    """``configure_optimizers`` / ``lr_scheduler_step`` for a LightningModule whose hparams hold
    ``optimizer, lr, weight_decay, scheduler, warmup_steps, min_lr`` and whose network is
    ``self.net`` (EMA copies and loss buffers stay out of the optimiser)."""

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams  # type: ignore[attr-defined]
        total = self.trainer.estimated_stepping_batches  # type: ignore[attr-defined]
        return timm_optimizers(
            self.net,  # type: ignore[attr-defined]
            optimizer=hp.optimizer,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            scheduler=hp.scheduler,
            warmup_steps=hp.warmup_steps,
            total_steps=int(total) if math.isfinite(total) else 1000,
            min_lr=hp.min_lr,
        )

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scheduler.step_update(num_updates=self.global_step)  # type: ignore[attr-defined]
