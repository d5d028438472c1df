"""Quality on sparse detector frames: do the imbalance losses beat the standard ones?

    python benchmarks/quality_detector_losses.py                  # full run (see below for its time)
    python benchmarks/quality_detector_losses.py --quick --out D  # smoke run (< 1 min), as CI does
    python benchmarks/quality_detector_losses.py --write          # also BENCHMARKS.md + docs/images

The same smp ``Unet`` as the earlier main job (before the hit-graph denoiser: resnet18 encoder at
depth 3, decoder [32, 16, 8], random init) is trained on simulated frames (about 30 signal and
200 noise hits in 128 x 88) with each contender's loss, for the same steps, batches, optimiser
and schedule, from the same initial weights per seed; each contender is trained once per seed.
Every contender is scored on the same fixed, seeded validation frames (those of the main job).
The defaults (9 contenders x 3 seeds x 64 steps of 16 frames) are sized for about 12 min on a
quiet 2-core machine at the main job's pace (0.38 s a step); on the shared machine under a load
of ~5.6 they took 65 min.

Every contender turns its output into a denoised frame the same way: a keep/drop decision per
input hit, ``denoised = image * keep`` (a kept hit keeps its exact time, empty pixels stay empty),
so the hit metrics compare the decisions the losses taught. The decision per head:

* ``gate`` (the package's denoiser, ``output_activation="gate"``): the output is
  ``image * sigmoid(logits)``; a hit is kept where the gate exceeds 0.5 (``DenseTask`` does this
  itself in eval mode). Losses ``mse``, ``l1``, ``acb_mse`` compare that output with the kept
  signal hits.
* ``mask`` (the segmentation-style baseline): the output is a logit per pixel, trained with
  ``smp.focal`` / ``smp.dice`` against the signal-hit mask; a hit is kept where
  ``sigmoid(logit) > 0.5``.
* ``frame`` (the seed's setup, a network that outputs the frame): a linear output
  (``output_activation="identity"``; a sigmoid output barely moves below 0.05 in this budget,
  its gradient vanishing there) trained to reproduce the kept signal hits' normalised times
  (0 elsewhere); a hit is kept where the output exceeds the hit threshold of
  :mod:`smp_imbalance.metrics` (0.05, half the gap below the earliest time), i.e. where the
  output "lights up", masked onto the input like DeepClean3D's reconstruction. Its raw output
  hits (anywhere, also on empty pixels) go to the JSON too.

A run *collapsed* when its denoised validation frames hold fewer hits per frame than half the
signal hits per frame (fewer than ~15 of the ~230 input hits: an almost all-zero output, the
seed's "local minimum" for MSE; a useful denoiser keeps most of the ~30 signal hits). The
tables list the kept hits per frame of every run, so the cut can be judged.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import machine_line  # noqa: E402

from smp_imbalance import create_dataset  # noqa: E402
from smp_imbalance.metrics import DetectorHitMetrics  # noqa: E402
from smp_imbalance.metrics.functional import DEFAULT_HIT_THRESHOLD  # noqa: E402

NAME = "quality_detector_losses"
BEGIN, END = _report.markers(NAME)
SECTION_TITLE = "## Quality: losses on the UNet (sparse detector frames, the earlier study)"
FIGURE = REPO / "docs" / "images" / f"{NAME}.png"
BENCHMARKS = REPO / "BENCHMARKS.md"

Head = Literal["gate", "mask", "frame"]
HEADS: tuple[str, ...] = ("gate", "mask", "frame")
GATE_THRESHOLD = 0.5  # DenseTask's default gate_threshold; also the mask head's probability cut
COLLAPSE_FRACTION = 0.5  # collapsed: fewer kept hits per frame than this x the signal hits
ANCHOR = {"signal_retention": 0.97, "noise_removal": 0.91}  # DeepClean3D, as the seed reports
RETENTION_ZERO_WEIGHTING = 30.0  # the main job's first weighting: high retention, less removal
BALANCED = "balanced"  # placeholder for the zero weighting derived from the training frames

# the earlier main job's model (before the hit-graph denoiser)
MODEL = {
    "arch": "Unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
    "encoder_weights": None,
    "in_channels": 1,
    "classes": 1,
}
OPTIM = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "scheduler": "cosine"}
METRICS = (
    "signal_retention",
    "noise_removal",
    "false_hits_per_frame",
    "time_recovery",
    "score",
    "hits_per_frame",
)


@dataclass(frozen=True)
class Contender:
    """One loss on one head. ``loss_kwargs`` values equal to :data:`BALANCED` are replaced by
    the zero weighting derived from each seed's training frames."""

    label: str
    head: Head
    loss: str
    loss_kwargs: dict[str, Any] = field(default_factory=dict)


# acb_mse runs its eager path (fused=False): the same values, without the one-time compile that
# would bill only the acb_mse runs' wall time
CONTENDERS: tuple[Contender, ...] = (
    Contender("mse", "gate", "mse"),
    Contender("l1", "gate", "l1"),
    Contender("acb_mse 1:1", "gate", "acb_mse", {"fused": False}),
    Contender(
        "acb_mse 30:1",
        "gate",
        "acb_mse",
        {"zero_weighting": RETENTION_ZERO_WEIGHTING, "fused": False},
    ),
    Contender("acb_mse balanced", "gate", "acb_mse", {"zero_weighting": BALANCED, "fused": False}),
    Contender("smp.focal", "mask", "smp.focal"),
    Contender("smp.dice", "mask", "smp.dice"),
    Contender("mse (frame out)", "frame", "mse"),
    Contender("acb_mse 1:1 (frame out)", "frame", "acb_mse", {"fused": False}),
)


@dataclass(frozen=True)
class Settings:
    """Budget and data of one benchmark run (identical for every contender)."""

    steps: int = 64
    batch_size: int = 16
    seeds: tuple[int, ...] = (0, 1, 2)
    val_frames: int = 256
    val_seed: int = 1000
    warmup_steps: int = 8
    grad_clip: float = 1.0
    threads: int = 2


QUICK = Settings(steps=3, batch_size=4, seeds=(0,), val_frames=8, warmup_steps=1)


# ----------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# ----------------------------------------------------------------------------------------------


def keep_decision(head: str, output: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Which input hits a head keeps: bool ``(N, 1, H, W)``, False wherever ``image == 0``.

    ``output`` is what ``DenseTask`` returns, ``(N, 1, H, W)``: for ``gate`` the gated frame
    ``image * g`` (soft ``g`` in train mode, ``g`` in {0, 1} in eval mode; kept where
    ``g > 0.5``), for ``mask`` logits (kept where ``sigmoid > 0.5``, i.e. ``logit > 0``), for
    ``frame`` the linear output (kept where it exceeds the metrics' hit threshold, 0.05).
    """
    hit = image > 0
    if head == "gate":
        return hit & (output > GATE_THRESHOLD * image)
    if head == "mask":
        return hit & (output > math.log(GATE_THRESHOLD / (1.0 - GATE_THRESHOLD)))
    if head == "frame":
        return hit & (output > DEFAULT_HIT_THRESHOLD)
    raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")


def denoise(head: str, output: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The denoised frame ``image * keep`` (``(N, 1, H, W)`` float): kept hits keep their exact
    input time, everything else is 0."""
    return image * keep_decision(head, output, image).to(image.dtype)


def balanced_zero_weighting(target: torch.Tensor, noise_mask: torch.Tensor) -> float:
    """``acb_mse`` zero weighting that gives the noise hits as much total weight as the signal
    hits on a gate output: (no-hit pixels) / (noise hits), counted over the given frames.

    On a gate output only input hits can carry an error, so the no-hit class mean spreads the
    noise hits' error over every empty pixel too; ``w0 = N_nohit / N_noise`` undoes that dilution
    (with ``nonzero_weighting = 1`` each class then weighs the same in total).
    """
    noise = int(noise_mask.sum())
    if noise == 0:
        raise ValueError("no noise hits in the frames: the balanced weighting is undefined")
    return int((target == 0).sum()) / noise


def is_collapsed(hits_per_frame: float, signal_per_frame: float) -> bool:
    """A run collapsed when it keeps fewer than ``COLLAPSE_FRACTION`` x the signal hits per
    frame (an almost all-zero output)."""
    return hits_per_frame < COLLAPSE_FRACTION * signal_per_frame


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contender label (in first-seen order): mean and std over seeds of each metric in
    :data:`METRICS`, the number of runs and of collapsed runs, each run's kept hits per frame."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_label.setdefault(run["label"], []).append(run)
    out: dict[str, dict[str, Any]] = {}
    for label, group in by_label.items():
        entry: dict[str, Any] = {
            "head": group[0]["head"],
            "runs": len(group),
            "collapsed": sum(bool(r["collapsed"]) for r in group),
            "hits_per_seed": [r["metrics"]["hits_per_frame"] for r in group],
        }
        for metric in METRICS:
            entry[metric] = mean_std([r["metrics"][metric] for r in group])
        out[label] = entry
    return out


def sparse_hits(frame: torch.Tensor) -> list[list[float]]:
    """A (H, W) frame as ``[row, col, value]`` triples of its non-zero pixels (row-major)."""
    rows, cols = torch.nonzero(frame, as_tuple=True)
    return [[int(r), int(c), float(frame[r, c])] for r, c in zip(rows, cols, strict=True)]


def dense_frame(hits: Sequence[Sequence[float]], shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`sparse_hits`: a float64 (H, W) array."""
    frame = np.zeros(tuple(shape))
    for r, c, v in hits:
        frame[int(r), int(c)] = v
    return frame


def _pm(value: tuple[float, float], scale: float = 100.0, digits: int = 1) -> str:
    mean, std = value
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    """Mean ± std over seeds per contender, one row each."""
    lines = [
        "| loss | head | signal retention % | noise removal % | false hits / frame "
        "| exact-time recovery % | score | collapsed runs | kept hits / frame, per seed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, s in summary.items():
        lines.append(
            f"| {label} | {s['head']} | {_pm(s['signal_retention'])} | {_pm(s['noise_removal'])} "
            f"| {_pm(s['false_hits_per_frame'], 1.0)} | {_pm(s['time_recovery'])} "
            f"| {_pm(s['score'], 1.0, 3)} | {s['collapsed']} / {s['runs']} "
            f"| {', '.join(f'{h:.1f}' for h in s['hits_per_seed'])} |"
        )
    return "\n".join(lines)


def write_section(markdown: str, path: Path = BENCHMARKS) -> None:
    """Replace this benchmark's section of ``path`` (appended if absent) with ``markdown``."""
    _report.write_section(NAME, markdown, path, SECTION_TITLE)


# ----------------------------------------------------------------------------------------------
# Data, training, validation
# ----------------------------------------------------------------------------------------------


def load_frames(num_frames: int, seed: int) -> dict[str, torch.Tensor]:
    """``num_frames`` simulated frames with a degradation fixed by ``(seed, index)``, stacked:
    ``image``/``target`` (N, 1, 128, 88) float32 (target = the kept signal hits),
    ``signal_mask``/``noise_mask`` (N, 1, 128, 88) bool."""
    ds = create_dataset(
        "detector_frames", num_frames=num_frames, seed=seed, train=False, target="kept"
    )
    samples = [ds[i] for i in range(len(ds))]
    keys = ("image", "target", "signal_mask", "noise_mask")
    return {k: torch.stack([s[k] for s in samples]) for k in keys}


def _resolve_kwargs(contender: Contender, balanced: float) -> dict[str, Any]:
    return {k: (balanced if v == BALANCED else v) for k, v in contender.loss_kwargs.items()}


def _build_task(contender: Contender, loss_kwargs: dict[str, Any]) -> Any:
    from smp_imbalance.training.dense import DenseTask

    if contender.head == "mask":
        head_kwargs = {"task": "binary", "output_activation": "sigmoid"}
    else:
        activation = "gate" if contender.head == "gate" else "identity"
        head_kwargs = {"task": "regression", "output_activation": activation}
    return DenseTask(
        **MODEL,
        **head_kwargs,
        gate_threshold=GATE_THRESHOLD,
        loss=contender.loss,
        loss_kwargs=loss_kwargs,
        metrics="none",
        plot_every_n_epochs=0,
    )


def _loss_target(head: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["signal_mask"].float() if head == "mask" else batch["target"]


def train_one(
    contender: Contender,
    seed: int,
    train: dict[str, torch.Tensor],
    settings: Settings,
    balanced: float,
) -> tuple[Any, dict[str, list[float]]]:
    """Train one contender from the seed's initial weights on the seed's frames, in order.

    Returns the task and per-step curves on the training batches: ``loss``, ``retention`` (kept
    signal hits / signal hits) and ``removal`` (dropped noise hits / noise hits), with the
    eval-mode decision rule applied to the train-mode output.
    """
    from smp_imbalance.training.optim import timm_optimizers

    torch.manual_seed(seed)  # same initial weights for every contender of this seed
    task = _build_task(contender, _resolve_kwargs(contender, balanced))
    opt = timm_optimizers(
        task.net,
        **OPTIM,
        warmup_steps=settings.warmup_steps,
        total_steps=settings.steps,
        min_lr=1e-6,
    )
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    params = [p for p in task.net.parameters() if p.requires_grad]
    curves: dict[str, list[float]] = {"loss": [], "retention": [], "removal": []}
    task.train()
    bs = settings.batch_size
    for step in range(settings.steps):
        batch = {k: v[step * bs : (step + 1) * bs] for k, v in train.items()}
        output = task(batch["image"])
        loss = task.loss_fn(output, _loss_target(contender.head, batch))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{contender.label}, seed {seed}: loss {loss} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step_update(num_updates=step + 1)
        with torch.no_grad():
            keep = keep_decision(contender.head, output.detach(), batch["image"])
            signal, noise = batch["signal_mask"], batch["noise_mask"]
            curves["loss"].append(float(loss))
            curves["retention"].append(float((keep & signal).sum() / signal.sum().clamp_min(1)))
            curves["removal"].append(float((~keep & noise).sum() / noise.sum().clamp_min(1)))
    return task, curves


@torch.no_grad()
def evaluate(
    task: Any, head: str, val: dict[str, torch.Tensor], chunk: int = 64
) -> tuple[dict[str, float], torch.Tensor]:
    """Hit metrics of the denoised validation frames (``DetectorHitMetrics`` against the kept
    signal hits) plus ``score`` (harmonic mean of retention and removal, as the main job logs),
    ``hits_per_frame`` (kept hits), ``signal_per_frame`` and, for the ``frame`` head,
    ``raw_hits_per_frame`` (output > hit threshold anywhere). Also returns the denoised frames."""
    task.eval()
    metric = DetectorHitMetrics()
    denoised, raw_hits = [], 0
    for start in range(0, len(val["image"]), chunk):
        batch = {k: v[start : start + chunk] for k, v in val.items()}
        output = task(batch["image"])
        frames = denoise(head, output, batch["image"])
        metric.update(
            frames,
            batch["target"],
            noise_mask=batch["noise_mask"],
            signal_mask=batch["signal_mask"],
        )
        if head == "frame":
            raw_hits += int((output > DEFAULT_HIT_THRESHOLD).sum())
        denoised.append(frames)
    values = {k: float(v) for k, v in metric.compute().items()}
    r, n = values["signal_retention"], values["noise_removal"]
    values["score"] = 2 * r * n / (r + n) if r + n > 0 else 0.0
    out = torch.cat(denoised)
    frames_count = len(out)
    values["hits_per_frame"] = float((out > 0).sum()) / frames_count
    values["signal_per_frame"] = float((val["target"] > 0).sum()) / frames_count
    if head == "frame":
        values["raw_hits_per_frame"] = raw_hits / frames_count
    return values, out


def run(
    settings: Settings, contenders: Sequence[Contender] = CONTENDERS, log: Any = print
) -> dict[str, Any]:
    """Train and validate every contender for every seed; the results as a JSON-able dict
    (settings, per-run metrics, curves, the example frame's outputs)."""
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    val = load_frames(settings.val_frames, settings.val_seed)
    example = int(
        torch.argmax((val["target"] > 0).flatten(1).sum(1)[: min(16, settings.val_frames)])
    )
    runs: list[dict[str, Any]] = []
    examples: dict[str, list[list[float]]] = {}
    for seed in settings.seeds:
        train = load_frames(settings.steps * settings.batch_size, seed)
        balanced = balanced_zero_weighting(train["target"], train["noise_mask"])
        for contender in contenders:
            t0 = time.perf_counter()
            task, curves = train_one(contender, seed, train, settings, balanced)
            t1 = time.perf_counter()
            metrics, denoised = evaluate(task, contender.head, val)
            wall = time.perf_counter() - t0
            collapsed = is_collapsed(metrics["hits_per_frame"], metrics["signal_per_frame"])
            runs.append(
                {
                    "label": contender.label,
                    "head": contender.head,
                    "loss": contender.loss,
                    "loss_kwargs": _resolve_kwargs(contender, balanced),
                    "seed": seed,
                    "metrics": metrics,
                    "collapsed": collapsed,
                    "wall_s": wall,
                    "train_s": t1 - t0,
                    "curves": curves,
                }
            )
            if seed == settings.seeds[0]:
                examples[contender.label] = sparse_hits(denoised[example, 0])
            log(
                f"seed {seed} | {contender.label:<24} | retention "
                f"{metrics['signal_retention']:.3f} removal {metrics['noise_removal']:.3f} "
                f"false/frame {metrics['false_hits_per_frame']:.1f} "
                f"kept/frame {metrics['hits_per_frame']:.1f}"
                f"{' COLLAPSED' if collapsed else ''} | {wall:.1f} s"
            )
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "settings": asdict(settings),
        "model": MODEL,
        "optim": {**OPTIM, "warmup_steps": settings.warmup_steps, "grad_clip": settings.grad_clip},
        "machine": machine_line(),
        "cpus": os.cpu_count(),
        "load_average_1min": [load_before, load_after],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": runs,
        "example": {
            "index": example,
            "shape": list(val["image"].shape[-2:]),
            **{k: sparse_hits(val[k][example, 0]) for k in val},
            "outputs": examples,
        },
        "wall_s": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------------------------------
# Report: findings, markdown, figure
# ----------------------------------------------------------------------------------------------


def findings(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Plain statements read off the summary: the winner per metric with its margin over the
    runner-up (in the metric's unit, with both spreads), collapses, and the anchor."""
    lines = []
    specs = (
        ("score", "best score (harmonic mean of retention and removal)", True, 1.0, "", 3),
        ("signal_retention", "highest signal retention", True, 100.0, " pp", 1),
        ("noise_removal", "highest noise removal", True, 100.0, " pp", 1),
        ("false_hits_per_frame", "fewest false hits per frame", False, 1.0, "", 1),
    )
    for metric, text, higher, scale, unit, digits in specs:
        ranked = sorted(summary, key=lambda k: summary[k][metric][0], reverse=higher)
        if len(ranked) < 2:
            continue
        first, second = ranked[0], ranked[1]
        (m1, s1), (m2, s2) = summary[first][metric], summary[second][metric]
        lines.append(
            f"{text}: **{first}** ({m1 * scale:.{digits}f} ± {s1 * scale:.{digits}f}), ahead of "
            f"{second} ({m2 * scale:.{digits}f} ± {s2 * scale:.{digits}f}) by "
            f"{abs(m1 - m2) * scale:.{digits}f}{unit}."
        )
    collapsed = [
        f"{k} ({s['collapsed']}/{s['runs']})" for k, s in summary.items() if s["collapsed"]
    ]
    lines.append(
        "runs collapsed to an (almost) all-zero output: "
        + (", ".join(collapsed) if collapsed else "none")
        + "."
    )
    reached = [k for k, s in summary.items() if all(s[m][0] >= v for m, v in ANCHOR.items())]
    lines.append(
        "DeepClean3D's anchor (97 % retention with 91 % removal) reached by: "
        + (", ".join(reached) if reached else "no contender")
        + "."
    )
    return lines


def report_markdown(result: dict[str, Any], command: str, figure_rel: str | None) -> str:
    """The BENCHMARKS.md section body: when/where, settings, table, findings, figure."""
    s = result["settings"]
    summary = aggregate(result["runs"])
    balanced = sorted(
        {
            r["loss_kwargs"].get("zero_weighting")
            for r in result["runs"]
            if r["label"] == "acb_mse balanced"
        }
        - {None}
    )
    load = result["load_average_1min"]
    per_run = [r["wall_s"] for r in result["runs"]]
    step_s = [r["train_s"] / s["steps"] for r in result["runs"]]
    parts = [
        f"Measured {result['date']} on {result['machine']}, {result.get('cpus', '?')} CPUs; "
        f"1-min load average {load[0]:.1f} before and {load[1]:.1f} after (this run alone "
        f"adds about {s['threads']}; more means other jobs shared the cores).",
        f"Command: `{command}`. Total wall time {result['wall_s'] / 60:.1f} min "
        f"({len(per_run)} runs, {statistics.median(per_run):.0f} s median per run, "
        f"{statistics.median(step_s):.2f} s median per training step).",
        f"Every contender: the main job's smp `Unet` (resnet18 encoder, depth 3, decoder "
        f"[32, 16, 8], random init, the same initial weights per seed), AdamW lr 2e-3, weight "
        f"decay 1e-4, cosine schedule with {s['warmup_steps']} warmup steps, gradient clipping "
        f"{s['grad_clip']}, {s['steps']} steps of batch {s['batch_size']} "
        f"({s['steps'] * s['batch_size']} fresh simulated frames per seed, the same frames in "
        f"the same order for every contender), seeds {', '.join(map(str, s['seeds']))}. "
        f"Validation: the main job's {s['val_frames']} frames (`detector_frames`, seed "
        f"{s['val_seed']}, fixed degradation), scored against the kept signal hits.",
        "Output to hits, the same for all: each input hit is kept or dropped, "
        "`denoised = image * keep`, so kept hits keep their exact time. `gate`: the package's "
        "gate output (`image * sigmoid(logits)`, kept where the gate > 0.5); `mask`: a logit "
        "per pixel trained on the signal-hit mask, kept where sigmoid > 0.5; `frame`: a linear "
        "output trained to reproduce the kept hits' times (0 elsewhere), kept where it exceeds "
        "0.05 (the metrics' hit threshold; the seed's setup). Collapsed: fewer hits kept per "
        "frame than half the signal hits per frame (an almost all-zero output)."
        + (
            f" `acb_mse balanced`: zero weighting = no-hit pixels / noise hits of the seed's "
            f"training frames ({', '.join(f'{b:.1f}' for b in balanced)}), so that signal and "
            f"noise hits weigh the same in total on a gate output."
            if balanced
            else ""
        ),
        "Mean ± standard deviation over seeds:",
        markdown_table(summary),
        "Read off the table (computed by the script):",
        "\n".join(f"- {line}" for line in findings(summary)),
    ]
    if figure_rel:
        parts.append(f"![quality on sparse detector frames]({figure_rel})")
    return "\n\n".join(parts)


def _moving_average(values: Sequence[float], width: int) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    width = max(1, min(width, len(x)))
    return np.convolve(x, np.ones(width) / width, mode="valid")


def save_figure(result: dict[str, Any], path: Path) -> None:
    """Bars of validation retention / removal per contender (mean, std over seeds, each seed a
    dot, the DeepClean3D anchor dashed), training-batch curves, and one validation frame:
    noisy input, kept signal hits, and each contender's output (seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = aggregate(result["runs"])
    labels = list(summary)
    colors = plt.get_cmap("tab10")(np.arange(len(labels)) % 10)
    fig = plt.figure(figsize=(16, 8.2), layout="constrained")
    outer = fig.add_gridspec(2, 1, height_ratios=[1.0, 0.72])
    top = outer[0].subgridspec(1, 3, width_ratios=[2.0, 1.0, 1.0])

    ax = fig.add_subplot(top[0])
    x = np.arange(len(labels))
    for offset, metric, name, hatch in (
        (-0.2, "signal_retention", "signal retention", ""),
        (0.2, "noise_removal", "noise removal", "//"),
    ):
        means = [summary[k][metric][0] * 100 for k in labels]
        stds = [summary[k][metric][1] * 100 for k in labels]
        ax.bar(
            x + offset,
            means,
            0.38,
            yerr=stds,
            capsize=3,
            color=colors,
            alpha=0.75,
            hatch=hatch,
            edgecolor="black",
            linewidth=0.5,
            label=name,
        )
        for i, k in enumerate(labels):
            vals = [r["metrics"][metric] * 100 for r in result["runs"] if r["label"] == k]
            ax.plot(np.full(len(vals), x[i] + offset), vals, "k.", markersize=4)
        ax.axhline(
            ANCHOR[metric] * 100, color="gray", linestyle="--" if hatch else ":", linewidth=1
        )
    for i, k in enumerate(labels):
        if summary[k]["collapsed"]:
            ax.text(
                x[i],
                2,
                f"collapsed\n{summary[k]['collapsed']}/{summary[k]['runs']}",
                ha="center",
                va="bottom",
                fontsize=7,
                color="darkred",
            )
    ax.set_xticks(
        x, [f"{k}\n[{summary[k]['head']}]" for k in labels], fontsize=7, rotation=30, ha="right"
    )
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of input hits (validation)")
    ax.set_title(
        "Retention (plain) and noise removal (hatched); DeepClean3D 97 % / 91 % in gray", fontsize=9
    )

    steps = result["settings"]["steps"]
    width = max(1, steps // 10)
    for j, (metric, title) in enumerate(
        (("retention", "signal retention"), ("removal", "noise removal"))
    ):
        axc = fig.add_subplot(top[1 + j])
        for i, k in enumerate(labels):
            curves = [r["curves"][metric] for r in result["runs"] if r["label"] == k]
            mean = np.mean([_moving_average(c, width) for c in curves], axis=0) * 100
            axc.plot(np.arange(len(mean)) + width, mean, color=colors[i], linewidth=1.2, label=k)
        axc.set_ylim(-2, 102)
        axc.set_xlabel("training step")
        axc.set_title(
            f"{title} on training batches\n(mean over seeds, moving average {width})", fontsize=9
        )
        if j == 0:
            axc.legend(fontsize=6, loc="best")

    ex = result["example"]
    image, target = (dense_frame(ex[k], ex["shape"]) for k in ("image", "target"))
    signal, noise = (dense_frame(ex[k], ex["shape"]) > 0 for k in ("signal_mask", "noise_mask"))
    panels = ["noisy input", "kept signal (target)", *ex["outputs"]]
    bottom = outer[1].subgridspec(1, len(panels))
    height, width_px = image.shape
    for i, title in enumerate(panels):
        axi = fig.add_subplot(bottom[i])
        if i < 2:
            frame = image if i == 0 else target
            r, c = np.nonzero(frame)
            axi.scatter(c, r, c=frame[r, c], s=3, cmap="viridis", vmin=0, vmax=1)
            n_sig, n_noise = int(signal.sum()), int(noise.sum())
            sub = f"{n_sig} signal, {n_noise} noise" if i == 0 else f"{int((frame > 0).sum())} hits"
        else:
            out = dense_frame(ex["outputs"][title], ex["shape"]) > 0
            for mask, color, size in (
                (signal & ~out, "0.8", 3),
                (noise & out, "tab:red", 4),
                (signal & out, "tab:green", 4),
            ):
                r, c = np.nonzero(mask)
                axi.scatter(c, r, s=size, color=color)
            sub = f"{int((signal & out).sum())} signal, {int((noise & out).sum())} noise kept"
        axi.set_xlim(-1, width_px)
        axi.set_ylim(height, -1)
        axi.set_aspect("equal")
        axi.set_xticks([])
        axi.set_yticks([])
        axi.set_title(f"{title}\n{sub}", fontsize=6.5)
    fig.suptitle(
        f"Sparse detector frames: one UNet, one budget, {len(labels)} losses/heads "
        "(bottom: validation frame, seed 0; green = signal kept, red = noise kept, "
        "gray = signal dropped)",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, one seed (smoke test)")
    parser.add_argument(
        "--write",
        action="store_true",
        help="update BENCHMARKS.md and docs/images/quality_detector_losses.png",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "out" / NAME,
        help="folder for results.json, table.md and the figure",
    )
    parser.add_argument("--steps", type=int, help="training steps per run")
    parser.add_argument("--batch-size", type=int, help="frames per training step")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (one run per contender each)")
    parser.add_argument("--val-frames", type=int, help="validation frames")
    parser.add_argument("--threads", type=int, help="torch threads (default 2)")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="LABEL",
        help="run only these contenders (labels as in the table)",
    )
    parser.add_argument(
        "--replot",
        type=Path,
        metavar="RESULTS_JSON",
        help="no training: redraw the figure and tables from a results.json of an earlier run",
    )
    args = parser.parse_args(argv)

    if args.replot is not None:
        result = json.loads(args.replot.read_text())
        for r in result["runs"]:  # a derived flag: recomputed with the current criterion
            r["collapsed"] = is_collapsed(
                r["metrics"]["hits_per_frame"], r["metrics"]["signal_per_frame"]
            )
    else:
        base = QUICK if args.quick else Settings()
        overrides = {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seeds": tuple(args.seeds) if args.seeds else None,
            "val_frames": args.val_frames,
            "threads": args.threads,
        }
        given = {k: v for k, v in overrides.items() if v is not None}
        settings = Settings(**{**asdict(base), **given})
        if min(settings.steps, settings.batch_size, settings.val_frames, settings.threads) < 1:
            parser.error("--steps, --batch-size, --val-frames and --threads must be positive")
        warmup = min(settings.warmup_steps, settings.steps - 1)
        settings = Settings(**{**asdict(settings), "warmup_steps": warmup})
        contenders = CONTENDERS
        if args.only:
            unknown = set(args.only) - {c.label for c in CONTENDERS}
            if unknown:
                parser.error(
                    f"unknown contenders {sorted(unknown)}; known: {[c.label for c in CONTENDERS]}"
                )
            contenders = tuple(c for c in CONTENDERS if c.label in args.only)
        words = list(sys.argv[1:] if argv is None else argv)
        result = run(settings, contenders)
        result["command"] = " ".join(["python benchmarks/quality_detector_losses.py", *words])

    command = result.get("command", "python benchmarks/quality_detector_losses.py")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    save_figure(result, args.out / f"{NAME}.png")
    markdown = report_markdown(result, command, f"{NAME}.png")
    (args.out / "table.md").write_text(markdown + "\n")
    print(markdown)
    if args.write:
        save_figure(result, FIGURE)
        write_section(report_markdown(result, command, FIGURE.relative_to(REPO).as_posix()))
        print(f"wrote {BENCHMARKS} and {FIGURE}")
    print(f"results in {args.out}; total wall time {result['wall_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
