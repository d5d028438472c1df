"""Optimiser and schedule from timm's factories, in the shape Lightning expects."""

from __future__ import annotations

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
