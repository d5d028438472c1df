"""Figures written to the run folder: image panels of validation samples, per-label F1 bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def figure_path(module: Any, stem: str, every: int) -> Path | None:
    """``<run>/figures/<stem>_epochNNN.png`` when ``module`` should draw this validation (rank 0,
    not sanity checking, every ``every`` epochs; 0 = never), else ``None``.

    Call it on every rank: ``trainer.log_dir`` is a collective (a broadcast) under DDP, and
    asking for it on rank 0 alone deadlocks.
    """
    trainer = module.trainer
    log_dir = trainer.log_dir or trainer.default_root_dir
    if not every or trainer.sanity_checking or not trainer.is_global_zero:
        return None
    if module.current_epoch % every:
        return None
    return Path(log_dir) / "figures" / f"{stem}_epoch{module.current_epoch:03d}.png"


def _display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) tensor -> (H, W) or (H, W, 3) array in [0, 1] for imshow (first 3 channels as RGB,
    each stretched between its 2nd and 98th percentile)."""
    x = x.detach().float().cpu()
    if x.shape[0] == 1:
        return x[0].numpy()
    rgb = x[:3].numpy().transpose(1, 2, 0)
    lo, hi = np.nanpercentile(rgb, 2), np.nanpercentile(rgb, 98)
    return np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)


def save_dense_panel(
    batch: dict[str, torch.Tensor], pred: torch.Tensor, path: Path, task: str = "regression"
) -> Path:
    """One row per sample: input | prediction | target (| valid mask when the batch has one).

    Sparse single-channel frames (the detector) are drawn on a black background with hits in
    colour, so that a few lit pixels stay visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, target = batch["image"], batch["target"]
    if task in ("binary", "multilabel"):
        pred = torch.sigmoid(pred)
    elif task == "multiclass":
        pred = pred.argmax(1, keepdim=True).float()
        target = target.unsqueeze(1).float() if target.dim() == 3 else target
    columns = [("input", image), ("prediction", pred), ("target", target)]
    if "valid_mask" in batch:
        columns.append(("invalid (white)", (~batch["valid_mask"][:, :1]).float()))
    rows = image.shape[0]
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(2.6 * len(columns), 2.4 * rows), squeeze=False
    )
    for r in range(rows):
        for c, (title, tensor) in enumerate(columns):
            ax = axes[r, c]
            shown = _display(tensor[r])
            if shown.ndim == 2:
                ax.imshow(
                    np.ma.masked_equal(shown, 0) if tensor.shape[1] == 1 else shown,
                    cmap="viridis",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
                ax.set_facecolor("black")
            else:
                ax.imshow(shown, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# Okabe-Ito colours (distinct under the common colour-vision deficiencies)
HIT_CLASSES = (
    ("noise dropped", "#BBBBBB", 6),
    ("noise kept (false hit)", "#E69F00", 16),
    ("signal dropped (lost)", "#D55E00", 22),
    ("signal kept", "#0072B2", 16),
)


def hit_classes(
    image: torch.Tensor, pred: torch.Tensor, signal_mask: torch.Tensor, noise_mask: torch.Tensor
) -> dict[str, np.ndarray]:
    """The input hits of one ``(1, H, W)`` frame split by truth and decision: a dict from each
    :data:`HIT_CLASSES` label to a bool ``(H, W)`` array (a hit is kept where ``pred > 0``)."""
    kept = (pred[0] > 0).cpu().numpy()
    signal = signal_mask[0].cpu().numpy().astype(bool)
    noise = noise_mask[0].cpu().numpy().astype(bool)
    labels = [label for label, _, _ in HIT_CLASSES]
    masks = (noise & ~kept, noise & kept, signal & ~kept, signal & kept)
    return dict(zip(labels, masks, strict=True))


def save_detector_panel(
    batch: dict[str, torch.Tensor],
    pred: torch.Tensor,
    path: Path,
    max_time: int = 1000,
    gap: float = 0.1,
) -> Path:
    """Denoised detector frames as a physicist reads them, one row per frame.

    Left: the detector plane (column vs row); right: the (column, time) projection, where the
    Cherenkov arcs show. Every input hit is drawn in one of four colours (signal kept, signal
    lost, noise kept, noise dropped) with a legend; the title counts each class.
    ``batch`` needs ``image``, ``signal_mask`` and ``noise_mask`` ``(N, 1, H, W)``; ``pred`` is
    the denoised frame ``(N, 1, H, W)`` (a hit is kept where it is non-zero). Times are decoded
    with ``gap``/``max_time`` (the dataset's normalisation).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = batch["image"].detach().float().cpu()
    rows = image.shape[0]
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.3 * rows), squeeze=False)
    for r in range(rows):
        classes = hit_classes(
            image[r], pred[r].detach(), batch["signal_mask"][r], batch["noise_mask"][r]
        )
        frame = image[r, 0].numpy()
        bins = 1 + (frame - gap) * (max_time - 1) / (1 - gap)
        plane, proj = axes[r]
        for (label, colour, size), mask in zip(HIT_CLASSES, classes.values(), strict=True):
            y, x = np.nonzero(mask)
            name = f"{label}: {mask.sum()}"
            plane.scatter(x, y, s=size, c=colour, label=name, linewidths=0)
            proj.scatter(x, bins[y, x], s=size, c=colour, label=name, linewidths=0)
        plane.set_xlim(-1, frame.shape[1])
        plane.set_ylim(frame.shape[0], -1)
        plane.set_aspect("equal")
        plane.set_xlabel("column (x across the plate)")
        plane.set_ylabel("row (photon angle)")
        proj.set_xlim(-1, frame.shape[1])
        proj.set_ylim(0, max_time + 1)
        proj.set_xlabel("column (x across the plate)")
        proj.set_ylabel("time bin")
        proj.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        if r == 0:
            plane.set_title("detector plane", fontsize=10)
            proj.set_title("(x, time) projection", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save_f1_bars(per_class: torch.Tensor, names: list[str], path: Path) -> Path:
    """Horizontal bars of per-label F1, one row per label, in the given order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = per_class.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (tuned threshold)")
    ax.set_title(f"per-label F1, macro {values.mean():.3f}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
