"""Figures that need no trained model (``smp-imbalance plot ...``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from smp_imbalance.losses import ACBMSELoss


def loss_vs_hits(
    shape: tuple[int, int] = (128, 88),
    max_hits: int = 2000,
    step: int = 2,
    recovered: float = 0.5,
    hit_value: float = 0.6,
) -> dict[str, torch.Tensor]:
    """The ACB-MSE seed's experiment: a target frame filled with ``n`` hits (``step`` at a time)
    and a prediction that recovers a fixed fraction of them (the others predicted as 0).

    Returns ``{"hits": (K,), "acb_mse": (K,), "mse": (K,), "mae": (K,)}``. With exact recovery of
    the kept hits, ACB-MSE = ``(1 - recovered) * hit_value**2`` whatever ``n`` is, while MSE and
    MAE grow linearly with ``n`` (the missed hits' share of all pixels).
    """
    pixels = shape[0] * shape[1]
    counts = torch.arange(step, min(max_hits, pixels) + 1, step)
    order = torch.arange(pixels)
    target = (order[None, :] < counts[:, None]).to(torch.float32) * hit_value  # (K, P)
    kept = order[None, :] < (counts[:, None] * recovered).round()
    prediction = torch.where(kept, target, torch.zeros(()))
    acb = ACBMSELoss(pooling="sample", reduction="none", fused=False)
    return {
        "hits": counts,
        "acb_mse": acb(prediction[:, None], target[:, None]),
        "mse": F.mse_loss(prediction, target, reduction="none").mean(1),
        "mae": F.l1_loss(prediction, target, reduction="none").mean(1),
    }


def save_loss_vs_hits(path: Path, **kwargs: float) -> Path:
    """Plot :func:`loss_vs_hits` to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = loss_vs_hits(**kwargs)  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, label in (("acb_mse", "ACB-MSE"), ("mse", "MSE"), ("mae", "MAE")):
        ax.plot(curves["hits"].numpy(), curves[name].numpy(), label=label)
    ax.set_xlabel("hits in the target frame (128 x 88)")
    ax.set_ylabel("loss at 50 % recovery")
    ax.set_title("ACB-MSE is constant in the hit count; MSE and MAE grow")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
