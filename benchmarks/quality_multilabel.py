"""Quality of the multi-label losses under the Human Protein Atlas label imbalance.

    python benchmarks/quality_multilabel.py                  # full run (see the sizing note below)
    python benchmarks/quality_multilabel.py --quick --out D  # smoke run (CI): 1 seed, tiny data
    python benchmarks/quality_multilabel.py --write          # also update BENCHMARKS.md + figure

**Data.** The 31,072 real label vectors of HPA ``train.csv`` (shipped as
``smp_imbalance/sample_data/hpa/hpa_targets.txt.gz``: their co-occurrence and the 1:1171 imbalance between
Nucleoplasm and Rods & rings are the real ones), each rendered as a synthetic four-channel image
(:func:`render_images`): label ``l`` draws a pattern of kind ``l // 4`` (dot, blob, ring, double
ring, ring with a centre dot, concentric texture, puncta; all rotation-invariant, so the
recipe's flips and rotations keep the labels) in channel ``l % 4``, at a random position, scale and
brightness, over a smooth background with noise and unlabelled distractor patterns. All 31,072
vectors are kept (at 32 x 32 pixels) instead of a subset, because a subset small enough to matter
would leave the rarest labels (11 and 21 images) without positives in validation and test. Split
with the package's iterative stratification (``multilabel_kfold``, 5 folds, seed 0): fold 0 is
the test set, fold 1 the validation set, folds 2-4 train; each keeps every label's frequency
(Rods & rings: 2 images in test, 2 in validation, 7 in train).

**Training.** The same timm backbone (``in_chans=4``, ``pretrained=False``), optimiser (AdamW,
linear warm-up then cosine), batch size and number of steps for every configuration: 5 losses
(``bce``, ``timm.asl``, ``smp.focal``, ``crl`` with class-level and with instance-level hard
mining, both with ``alpha = Omega_imb`` of the training counts) x 2 batch samplers (uniform
shuffling, the package's ``MinorityAwareBatchSampler``) x the seeds (model initialisation and
batch order; data and split stay fixed, so configurations are compared on the same images).

**Metrics** (``smp_imbalance.metrics``): per-label thresholds tuned on validation
(``tune_thresholds``), then macro F1 over the 28 labels on the held-out test fold, the mean F1 of
the rare labels (positive in < 1 % of the images: 8, 9, 10, 15, 17, 20, 27), and mAP. The cost
of a training step per loss is timed with interleaved repeats on the same batch and model
(ratio to ``bce``).

**End to end.** A few thousand of the synthetic samples are written in the real HPA file layout
(``{Id}_red|green|blue|yellow.png`` + ``train.csv``) and the package's recipe
``hpa_multilabel`` is run on them through ``smp-imbalance fit`` (overrides only:
data paths, image size, backbone, epochs), reporting its last ``val/f1_macro_tuned``.

**Sizing.** A ``test_byobnet`` step (batch 64, 32 x 32, 2 threads) took 44 ms on this project's
2-core machine with one other process running; 30 runs x 400 steps, their evaluation on 12,508
images, the rendering and the recipe run are meant to fit in 15 minutes there. On a machine
shared with other jobs the wall time grows with the load (the header of the results says it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import machine_line, time_interleaved  # noqa: E402

from smp_imbalance import create_loss  # noqa: E402
from smp_imbalance.datasets.protein import CLASS_NAMES, COLOURS  # noqa: E402
from smp_imbalance.datasets.sampling import (  # noqa: E402
    MinorityAwareBatchSampler,
    multilabel_kfold,
    rare_labels,
)
from smp_imbalance.metrics import MultilabelMAP, multilabel_f1, tune_thresholds  # noqa: E402
from smp_imbalance.sample_data import sample_path  # noqa: E402

TARGETS = sample_path("hpa", "hpa_targets.txt.gz")
BENCHMARKS_MD = REPO / "BENCHMARKS.md"
FIGURE = REPO / "docs" / "images" / "quality_multilabel.png"
RECIPE = "hpa_multilabel"  # a packaged recipe, run by name
BEGIN, END = _report.markers("quality_multilabel")
SECTION_TITLE = "## Quality: multi-label with HPA's imbalance"

NUM_CLASSES = 28
LOSSES = ("bce", "timm.asl", "smp.focal", "crl.class", "crl.instance")
SAMPLERS = ("uniform", "minority")
RARE_THRESHOLD = 0.01
KIND_NAMES = (
    "dot",
    "blob",
    "ring",
    "double ring",
    "ring + dot",
    "concentric texture",
    "puncta",
)


# -- data ---------------------------------------------------------------------------------------


def load_targets(path: Path = TARGETS) -> np.ndarray:
    """The real HPA label vectors: ``(31072, 28)`` uint8 multi-hot, in ``train.csv`` order.

    ``path`` is a gzip text file with one space-separated ``Target`` per line.
    """
    with gzip.open(path, "rt") as fh:
        lines = fh.read().split("\n")
    rows = [line for line in lines if line.strip()]
    labels = np.zeros((len(rows), NUM_CLASSES), dtype=np.uint8)
    for i, row in enumerate(rows):
        labels[i, [int(v) for v in row.split()]] = 1
    return labels


def label_channel(label: int) -> int:
    """The image channel (0 red, 1 green, 2 blue, 3 yellow) that renders ``label``."""
    return label % 4


def label_kind(label: int) -> int:
    """The pattern kind (index into :data:`KIND_NAMES`) that renders ``label``."""
    return label // 4


def _gauss(r2: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-r2 / (2 * sigma * sigma))


def _ring(r: torch.Tensor, radius: float, width: float) -> torch.Tensor:
    return torch.exp(-((r - radius) ** 2) / (2 * width * width))


def _profile(kind: int, dx: torch.Tensor, dy: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Pattern ``kind`` at pixel offsets ``dx, dy`` ``(P, H, W)`` (in 32-pixel units, already
    divided by the pattern's scale); ``offsets`` ``(P, 3, 2)`` place the puncta. Peak ~1."""
    r2 = dx * dx + dy * dy
    r = r2.sqrt()
    if kind == 0:
        return _gauss(r2, 1.2)
    if kind == 1:
        return _gauss(r2, 3.2)
    if kind == 2:
        return _ring(r, 4.0, 0.8)
    if kind == 3:
        return _ring(r, 2.2, 0.6) + _ring(r, 6.0, 0.6)
    if kind == 4:
        return _ring(r, 5.0, 0.7) + _gauss(r2, 1.0)
    if kind == 5:
        return 0.5 * (1 + torch.cos(2 * math.pi * r / 2.5)) * _gauss(r2, 4.5)
    if kind == 6:
        ox = offsets[:, :, 0, None, None]
        oy = offsets[:, :, 1, None, None]
        d2 = (dx[:, None] - ox) ** 2 + (dy[:, None] - oy) ** 2
        return _gauss(d2, 0.9).sum(1)
    if kind == 7:  # distractor: between a dot and a blob
        return _gauss(r2, 2.1)
    if kind == 8:  # distractor: between a ring and a double ring
        return _ring(r, 3.0, 0.7)
    raise ValueError(f"unknown pattern kind {kind}")


@dataclass(frozen=True)
class RenderSpec:
    """How the synthetic images look. Lengths are in pixels of a 32-pixel image (scaled with
    ``size``), intensities on [0, 1] before 8-bit quantisation."""

    base: float = 0.08  # background level
    background: float = 0.15  # amplitude of the smooth background field
    amplitude: tuple[float, float] = (0.4, 1.0)  # uniform range of a pattern's peak
    scale: tuple[float, float] = (0.85, 1.15)  # uniform range of a pattern's size factor
    noise: float = 0.07  # std of the per-pixel Gaussian noise
    distractors: int = 2  # distractor slots per image
    distractor_p: float = 0.3  # probability that a slot holds a distractor


def render_images(
    labels: np.ndarray,
    size: int = 32,
    seed: int = 0,
    spec: RenderSpec = RenderSpec(),
    chunk: int = 2048,
) -> np.ndarray:
    """Synthetic four-channel images for multi-hot ``labels`` ``(N, 28)``: ``(N, 4, size, size)``
    uint8.

    Every random draw (positions, scales, brightness of all 28 potential patterns, background,
    distractors, noise) is made for every image whatever its labels, from a generator seeded with
    ``(seed, chunk index)``: the output is a pure function of ``(labels, size, seed, spec,
    chunk)``, and switching one label of an image changes only that label's channel of that
    image.
    """
    y = np.asarray(labels).astype(bool)
    if y.ndim != 2 or y.shape[1] != NUM_CLASSES:
        raise ValueError(f"labels must have shape (N, {NUM_CLASSES}), got {y.shape}")
    out = np.empty((len(y), 4, size, size), dtype=np.uint8)
    unit = size / 32.0
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / unit  # pixel centres, 32-px units
    kinds = torch.tensor([label_kind(c) for c in range(NUM_CLASSES)])
    channels = torch.tensor([label_channel(c) for c in range(NUM_CLASSES)])
    for start in range(0, len(y), chunk):
        yc = torch.from_numpy(y[start : start + chunk])
        n = len(yc)
        rng = np.random.default_rng([seed, start // chunk])

        def uniform(lo: float, hi: float, shape: tuple[int, ...]) -> torch.Tensor:
            return torch.from_numpy(rng.uniform(lo, hi, shape).astype(np.float32))  # noqa: B023

        # the 28 label patterns, then the distractor slots: centre, scale, peak, puncta
        cx, cy = uniform(7, 25, (n, NUM_CLASSES)), uniform(7, 25, (n, NUM_CLASSES))
        scale = uniform(*spec.scale, (n, NUM_CLASSES))
        amp = uniform(*spec.amplitude, (n, NUM_CLASSES))
        offsets = uniform(-4.5, 4.5, (n, NUM_CLASSES, 3, 2))
        d = spec.distractors
        d_on = torch.from_numpy(rng.random((n, d)) < spec.distractor_p)
        d_channel = torch.from_numpy(rng.integers(0, 4, (n, d)))
        d_kind = torch.from_numpy(rng.integers(7, 9, (n, d)))
        d_cx, d_cy = uniform(7, 25, (n, d)), uniform(7, 25, (n, d))
        d_scale, d_amp = uniform(*spec.scale, (n, d)), uniform(*spec.amplitude, (n, d))
        field_lo = uniform(0, 1, (n, 4, 4, 4))
        noise = torch.from_numpy(rng.standard_normal((n, 4, size, size), dtype=np.float32))

        img = spec.base + spec.background * F.interpolate(
            field_lo, size=(size, size), mode="bicubic", align_corners=False
        )
        flat = img.view(n * 4, size * size)
        # (image, label) pairs to draw, plus the active distractors, as one list of patterns
        pi, pl = yc.nonzero(as_tuple=True)
        di, ds = d_on.nonzero(as_tuple=True)
        p_kind = torch.cat([kinds[pl], d_kind[di, ds]])
        p_target = torch.cat([pi * 4 + channels[pl], di * 4 + d_channel[di, ds]])
        p_cx = torch.cat([cx[pi, pl], d_cx[di, ds]])
        p_cy = torch.cat([cy[pi, pl], d_cy[di, ds]])
        p_scale = torch.cat([scale[pi, pl], d_scale[di, ds]])
        p_amp = torch.cat([amp[pi, pl], d_amp[di, ds]])
        p_off = torch.cat([offsets[pi, pl], torch.zeros(len(di), 3, 2)])
        for kind in range(9):
            sel = (p_kind == kind).nonzero(as_tuple=True)[0]
            if len(sel) == 0:
                continue
            s = p_scale[sel, None, None]
            dx = (coords[None, None, :] - p_cx[sel, None, None]) / s
            dy = (coords[None, :, None] - p_cy[sel, None, None]) / s
            pattern = _profile(kind, dx, dy, p_off[sel]) * p_amp[sel, None, None]
            flat.index_add_(0, p_target[sel], pattern.reshape(len(sel), size * size))
        img = img + spec.noise * noise
        out[start : start + n] = (img.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return out


def stratified_subset(labels: np.ndarray, n_splits: int, seed: int = 0) -> np.ndarray:
    """Indices of one fold of ``multilabel_kfold(labels, n_splits)``: about ``N / n_splits``
    samples with every label's frequency kept (for small smoke runs)."""
    return multilabel_kfold(labels, n_splits, seed=seed)[0][1]


def split_train_val_test(
    labels: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train (folds 2-4), validation (fold 1) and test (fold 0) indices of a 5-fold iterative
    stratification of ``labels`` ``(N, C)``: sorted, disjoint, covering ``range(N)``."""
    folds = multilabel_kfold(labels, 5, seed=seed)
    test, val = folds[0][1], folds[1][1]
    train = np.setdiff1d(np.arange(len(labels)), np.concatenate([test, val]))
    return train, val, test


# -- training -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """One benchmark run's sizes (defaults: the full run)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    subset_splits: int = 0  # 0: all 31,072 vectors; k: one stratified fold of k
    image_size: int = 32
    backbone: str = "test_byobnet"
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps
    eval_batch: int = 1024
    timing_repeats: int = 15
    e2e_images: int = 2000
    e2e_epochs: int = 3
    threads: int = 2
    losses: tuple[str, ...] = LOSSES
    samplers: tuple[str, ...] = SAMPLERS


QUICK = Settings(
    seeds=(0,),
    subset_splits=20,
    steps=8,
    batch_size=32,
    eval_batch=512,
    timing_repeats=3,
    e2e_images=160,
    e2e_epochs=1,
)


@dataclass
class Data:
    """Images ``(N, 4, S, S)`` uint8 and multi-hot labels ``(N, 28)`` float32 as tensors, the
    split indices and the per-channel normalisation of the training images."""

    images: torch.Tensor
    labels: torch.Tensor
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: torch.Tensor = field(default_factory=lambda: torch.zeros(4))
    std: torch.Tensor = field(default_factory=lambda: torch.ones(4))

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images ``(B, 4, S, S)`` and targets ``(B, 28)`` of rows ``idx``."""
        index = torch.from_numpy(np.asarray(idx, dtype=np.int64))
        x = self.images[index].float().div_(255)
        x = (x - self.mean.view(1, 4, 1, 1)) / self.std.view(1, 4, 1, 1)
        return x, self.labels[index]


def build_loss(name: str, train_labels: np.ndarray) -> nn.Module:
    """A configuration's loss by registry name; ``crl.class`` / ``crl.instance`` are ``crl``
    with ``alpha = Omega_imb`` of the training counts and class- / instance-level mining."""
    if name.startswith("crl."):
        return create_loss(
            "crl",
            class_counts=train_labels.sum(0).tolist(),
            num_samples=len(train_labels),
            mining=name.split(".", 1)[1],
        )
    return create_loss(name)


def batch_stream(
    sampler: str, train_labels: np.ndarray, batch_size: int, seed: int
) -> Iterator[np.ndarray]:
    """Endless batches of positions into the training set: ``"uniform"`` (a fresh permutation
    each epoch, last partial batch dropped) or ``"minority"`` (``MinorityAwareBatchSampler``)."""
    n = len(train_labels)
    if sampler == "uniform":
        epoch = 0
        while True:
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            for b in range(n // batch_size):
                yield perm[b * batch_size : (b + 1) * batch_size]
            epoch += 1
    elif sampler == "minority":
        plan = MinorityAwareBatchSampler(train_labels, batch_size, seed=seed)
        epoch = 0
        while True:
            plan.set_epoch(epoch)
            for batch in plan:
                yield np.asarray(batch)
            epoch += 1
    else:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")


def create_model(settings: Settings, seed: int) -> nn.Module:
    """The timm backbone, 4 input channels, 28 outputs, random init from ``seed``."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model(
        settings.backbone, pretrained=False, in_chans=4, num_classes=NUM_CLASSES
    )


def loss_of(model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss of one batch; instance-level CRL gets the pooled pre-logit features
    (as ``MultiLabelTask`` passes them)."""
    if getattr(loss_fn, "mining", None) == "instance":
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        return loss_fn(model.get_classifier()(features), y, features=features)
    return loss_fn(model(x), y)


def _schedule(steps: int, warmup: float) -> Any:
    warm = max(1, round(steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    return factor


@torch.inference_mode()
def predict(model: nn.Module, data: Data, idx: np.ndarray, batch: int) -> torch.Tensor:
    """Sigmoid probabilities ``(len(idx), 28)`` of the rows ``idx``."""
    model.eval()
    out = [
        torch.sigmoid(model(data.batch(idx[s : s + batch])[0])) for s in range(0, len(idx), batch)
    ]
    model.train()
    return torch.cat(out)


def evaluate(
    val_probs: torch.Tensor,
    val_targets: torch.Tensor,
    test_probs: torch.Tensor,
    test_targets: torch.Tensor,
    rare: Sequence[int],
) -> dict[str, Any]:
    """Thresholds tuned per label on validation, then test macro F1, rare-label F1 (mean over
    ``rare``), per-label F1, mAP; plus the (optimistic) validation macro F1 at those thresholds."""
    thresholds = tune_thresholds(val_probs, val_targets)
    per_class = multilabel_f1(test_probs, test_targets, threshold=thresholds, average="none")
    val_f1 = multilabel_f1(val_probs, val_targets, threshold=thresholds, average="macro")
    ap = MultilabelMAP(num_labels=NUM_CLASSES)
    ap.update(test_probs, test_targets.long())
    return {
        "macro_f1": float(per_class.mean()),
        "rare_f1": float(per_class[list(rare)].mean()) if len(rare) else float("nan"),
        "map": float(ap.compute()),
        "val_macro_f1": float(val_f1),
        "macro_f1_at_0.5": float(multilabel_f1(test_probs, test_targets, threshold=0.5)),
        "per_class_f1": [round(float(v), 5) for v in per_class],
        "thresholds": [round(float(v), 3) for v in thresholds],
    }


def train_one(
    data: Data, loss_name: str, sampler: str, seed: int, settings: Settings, rare: Sequence[int]
) -> dict[str, Any]:
    """Train one configuration from scratch for ``settings.steps`` steps and evaluate it."""
    train_labels = data.labels[data.train].numpy().astype(np.uint8)
    loss_fn = build_loss(loss_name, train_labels)
    model = create_model(settings, seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(settings.steps, settings.warmup))
    stream = batch_stream(sampler, train_labels, settings.batch_size, seed)
    step_times = []
    started = time.perf_counter()
    for step in range(settings.steps):
        t0 = time.perf_counter()
        x, y = data.batch(data.train[next(stream)])
        loss = loss_of(model, loss_fn, x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{loss_name}/{sampler}/seed {seed}: loss {loss} at {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step_times.append(time.perf_counter() - t0)
    train_s = time.perf_counter() - started
    val_p = predict(model, data, data.val, settings.eval_batch)
    test_p = predict(model, data, data.test, settings.eval_batch)
    result = evaluate(val_p, data.labels[data.val], test_p, data.labels[data.test], rare)
    return {
        "loss": loss_name,
        "sampler": sampler,
        "seed": seed,
        "final_loss": float(loss.detach()),
        "train_s": round(train_s, 2),
        "eval_s": round(time.perf_counter() - started - train_s, 2),
        "step_ms_median": round(statistics.median(step_times) * 1e3, 2),
        **result,
    }


def time_steps(data: Data, settings: Settings) -> dict[str, dict[str, float]]:
    """Median time of one training step (forward, loss, backward, AdamW step) per loss, on the
    same minority-aware batch (so that CRL has minority groups to mine) and the same model
    initialisation, with interleaved repeats; ``x_bce`` is the ratio to ``bce``."""
    train_labels = data.labels[data.train].numpy().astype(np.uint8)
    idx = next(batch_stream("minority", train_labels, settings.batch_size, 0))
    x, y = data.batch(data.train[idx])
    contenders = []
    for name in settings.losses:
        model = create_model(settings, 0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loss_fn = build_loss(name, train_labels)

        def step(model: nn.Module = model, opt: Any = opt, loss_fn: nn.Module = loss_fn) -> None:
            loss = loss_of(model, loss_fn, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        contenders.append((name, step))
    timings = time_interleaved(contenders, repeats=settings.timing_repeats, warmup=2)
    base = next(t.median_s for t in timings if t.label == "bce")
    return {
        t.label: {
            "median_ms": round(t.median_s * 1e3, 2),
            "iqr_ms": round(t.iqr_s * 1e3, 2),
            "x_bce": round(t.median_s / base, 3),
        }
        for t in timings
    }


def time_sampler(train_labels: np.ndarray, batch_size: int) -> dict[str, float]:
    """Planning time of one epoch of batches, per batch: uniform permutation vs the
    minority-aware sampler (median of 3)."""

    def per_batch(make: Any) -> float:
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            batches = make()
            runs.append((time.perf_counter() - t0) / max(1, len(batches)))
        return round(statistics.median(runs) * 1e3, 4)

    n = len(train_labels)

    def uniform() -> list[np.ndarray]:
        perm = np.random.default_rng(0).permutation(n)
        return [perm[b * batch_size : (b + 1) * batch_size] for b in range(n // batch_size)]

    def minority() -> list[list[int]]:
        return list(MinorityAwareBatchSampler(train_labels, batch_size, seed=0))

    return {
        "uniform_ms_per_batch": per_batch(uniform),
        "minority_ms_per_batch": per_batch(minority),
    }


# -- the recipe, end to end, on the real HPA file layout ------------------------------------------


def write_hpa_layout(
    images: np.ndarray, labels: np.ndarray, ids: Sequence[str], root: Path
) -> Path:
    """Write ``root/train/{Id}_{red,green,blue,yellow}.png`` (8-bit grayscale, channels 0-3 of
    ``images`` ``(N, 4, H, W)`` uint8) and ``root/train.csv`` (``Id,Target``); returns the csv."""
    import cv2

    folder = root / "train"
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["Id,Target"]
    for image, label, image_id in zip(images, labels, ids, strict=True):
        for channel, colour in enumerate(COLOURS):
            if not cv2.imwrite(str(folder / f"{image_id}_{colour}.png"), image[channel]):
                raise OSError(f"could not write {folder / f'{image_id}_{colour}.png'}")
        rows.append(f"{image_id},{' '.join(str(c) for c in np.flatnonzero(label))}")
    csv_file = root / "train.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    return csv_file


def recipe_command(settings: Settings, rare_threshold: float | None) -> list[str]:
    """``smp-imbalance fit`` on the packaged ``hpa_multilabel`` recipe with the overrides of the end-to-end
    run (relative data paths: run it in the folder holding ``train/`` and ``train.csv``)."""
    sampler = {"labels_per_batch": 2, "positives_per_label": 2}
    if rare_threshold is not None:
        sampler["rare_threshold"] = rare_threshold
    return [
        "smp-imbalance",
        "fit",
        "--config",
        RECIPE,
        "--data.init_args.common_kwargs.root=train",
        "--data.init_args.common_kwargs.csv_file=train.csv",
        f"--data.init_args.transform_kwargs.size={settings.image_size}",
        "--data.init_args.num_workers=0",
        f"--data.init_args.sampler_kwargs={json.dumps(sampler)}",
        f"--model.init_args.model_name={settings.backbone}",
        "--model.init_args.warmup_steps=10",
        f"--trainer.max_epochs={settings.e2e_epochs}",
        "--trainer.log_every_n_steps=10",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def run_recipe(data: Data, settings: Settings, out: Path, seed: int = 0) -> dict[str, Any]:
    """Write ``settings.e2e_images`` synthetic samples in the HPA layout under ``out/e2e_hpa``,
    run the recipe on them in a subprocess and return its last validation metrics."""
    root = out / "e2e_hpa"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    n = min(settings.e2e_images, len(data.labels))
    pick = np.sort(np.random.default_rng(seed).choice(len(data.labels), n, replace=False))
    labels = data.labels[pick].numpy().astype(np.uint8)
    ids = [f"synthetic-{i:05d}" for i in pick]  # i: the row of the label vector in train.csv
    write_hpa_layout(data.images[pick].numpy(), labels, ids, root)
    # the recipe's sampler covers labels rarer than 1 % with >= 2 positives in its training fold
    # (5 folds, fold 0, seed 0); a small subset may have none, then widen "rare" to 5 %
    recipe_train = multilabel_kfold(labels, 5, seed=0)[0][0]
    train_counts = labels[recipe_train].sum(0)
    coverable = [c for c in rare_labels(labels[recipe_train]) if train_counts[c] >= 2]
    command = recipe_command(settings, None if coverable else 0.05)
    env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads), "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "smp_imbalance.cli", *command[1:]]
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    (root / "fit.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(
            f"the recipe failed (exit {proc.returncode}); last output:\n{proc.stderr[-3000:]}"
        )
    metrics = sorted((root / "runs" / "hpa_multilabel").glob("version_*/metrics.csv"))[-1]
    history = _column(metrics, "val/f1_macro_tuned")
    if not history:
        raise RuntimeError(f"{metrics} has no val/f1_macro_tuned")
    return {
        "images": n,
        "val_images": int(len(pick) - len(recipe_train)),
        "epochs": settings.e2e_epochs,
        "val_f1_macro_tuned": history[-1],
        "val_f1_macro_tuned_per_epoch": history,
        "val_f1_macro": (_column(metrics, "val/f1_macro") or [float("nan")])[-1],
        "wall_s": round(wall, 1),
        "command": " ".join(_quote(a) for a in command),
        "folder": str(root),
    }


def _column(csv_path: Path, name: str) -> list[float]:
    import csv

    with csv_path.open() as fh:
        return [float(row[name]) for row in csv.DictReader(fh) if row.get(name)]


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(ch in arg for ch in ' {}"') else arg


# -- aggregation and reporting ------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("mean_std of nothing")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


METRICS = ("macro_f1", "rare_f1", "map", "val_macro_f1")


def summarise(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (loss, sampler) present in ``runs``, in ``LOSSES`` x ``SAMPLERS`` order, with
    ``(mean, std)`` over seeds of each metric in :data:`METRICS` and the per-label F1 mean."""
    rows = []
    order = [(loss, s) for loss in LOSSES for s in SAMPLERS]
    order += sorted({(r["loss"], r["sampler"]) for r in runs} - set(order))
    for loss, sampler in order:
        group = [r for r in runs if r["loss"] == loss and r["sampler"] == sampler]
        if not group:
            continue
        row: dict[str, Any] = {"loss": loss, "sampler": sampler, "seeds": len(group)}
        for metric in METRICS:
            row[metric] = mean_std([r[metric] for r in group])
        row["per_class_f1"] = np.mean([r["per_class_f1"] for r in group], axis=0).tolist()
        rows.append(row)
    return rows


def paired_difference(
    runs: Sequence[dict[str, Any]], metric: str, a: tuple[str, str], b: tuple[str, str]
) -> tuple[float, float, int]:
    """``metric`` of configuration ``a`` minus ``b`` (each ``(loss, sampler)``), paired by seed:
    ``(mean, sample std, number of seeds in both)``."""
    va = {r["seed"]: r[metric] for r in runs if (r["loss"], r["sampler"]) == a}
    vb = {r["seed"]: r[metric] for r in runs if (r["loss"], r["sampler"]) == b}
    seeds = sorted(set(va) & set(vb))
    if not seeds:
        raise ValueError(f"no seed has both {a} and {b}")
    mean, std = mean_std([va[s] - vb[s] for s in seeds])
    return mean, std, len(seeds)


def _pm(value: tuple[float, float], digits: int = 3) -> str:
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def findings(
    runs: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], cost: dict[str, Any]
) -> list[str]:
    """Plain statements computed from the runs: the best configurations, the sampler's effect
    per loss and CRL's against BCE (paired by seed), and the step cost."""
    lines = []
    for metric, what in (("macro_f1", "macro F1"), ("rare_f1", "rare-label F1")):
        ranked = sorted(rows, key=lambda r: r[metric][0], reverse=True)
        best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
        text = f"Best {what}: `{best['loss']}` + {best['sampler']} sampler, {_pm(best[metric])}"
        if second is not None:
            text += (
                f"; next `{second['loss']}` + {second['sampler']}, {_pm(second[metric])} "
                f"(gap {best[metric][0] - second[metric][0]:+.3f})"
            )
        base = next((r for r in rows if (r["loss"], r["sampler"]) == ("bce", "uniform")), None)
        if base is not None and base is not best:
            text += f"; plain `bce` + uniform: {_pm(base[metric])}"
        lines.append(text + ".")
    present = {(r["loss"], r["sampler"]) for r in runs}
    effects = []
    for loss in LOSSES:
        if (loss, "minority") in present and (loss, "uniform") in present:
            m, s, _ = paired_difference(runs, "rare_f1", (loss, "minority"), (loss, "uniform"))
            m2, s2, _ = paired_difference(runs, "macro_f1", (loss, "minority"), (loss, "uniform"))
            effects.append(f"`{loss}` {m:+.3f} ± {s:.3f} rare / {m2:+.3f} ± {s2:.3f} macro")
    if effects:
        lines.append(
            "Minority-aware sampler minus uniform (same loss, paired by seed, mean ± std): "
            + "; ".join(effects)
            + "."
        )
    crl = []
    for loss in ("crl.class", "crl.instance"):
        for sampler in SAMPLERS:
            if (loss, sampler) in present and ("bce", sampler) in present:
                m, s, _ = paired_difference(runs, "macro_f1", (loss, sampler), ("bce", sampler))
                r, rs, _ = paired_difference(runs, "rare_f1", (loss, sampler), ("bce", sampler))
                crl.append(
                    f"`{loss}` {sampler}: {m:+.3f} ± {s:.3f} macro, {r:+.3f} ± {rs:.3f} rare"
                )
    if crl:
        lines.append("CRL minus BCE (same sampler, paired by seed): " + "; ".join(crl) + ".")
    if cost:
        lines.append(
            "Step cost relative to `bce`: "
            + ", ".join(f"`{k}` {v['x_bce']:.2f}x" for k, v in cost.items())
            + "."
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The BENCHMARKS.md section body: header, tables, findings, figure."""
    st = result["settings"]
    rows, cost, e2e = result["summary"], result["step_cost"], result.get("e2e")
    data = result["data"]
    lines = [
        f"Measured {result['started']} on {result['machine']}; total wall time "
        f"{result['wall_s'] / 60:.1f} min{'' if not result['load'] else ' (' + result['load'] + ')'}.",
        "",
        f"Command: `{result['command']}`.",
        "",
        f"Data: {data['images']:,} real HPA label vectors rendered as {st['image_size']} x "
        f"{st['image_size']} four-channel images; train / val / test = {data['train']:,} / "
        f"{data['val']:,} / {data['test']:,} (5-fold iterative stratification: test fold 0, "
        f"val fold 1). Imbalance in train: {data['train_max']:,} : {data['train_min']:,} images "
        f"(1:{data['train_max'] / data['train_min']:.0f}). Rare labels (< 1 % of the images): "
        f"{', '.join(str(c) for c in data['rare'])}, with "
        f"{', '.join(str(v) for v in data['rare_test_positives'])} positives in test.",
        "",
        f"Budget, the same for every configuration: timm `{st['backbone']}` (`in_chans=4`, "
        f"random init), {st['steps']} AdamW steps of batch {st['batch_size']} (lr "
        f"{st['lr']:g}, {st['warmup'] * 100:.0f} % warm-up, cosine), seeds "
        f"{', '.join(str(s) for s in st['seeds'])}. Thresholds tuned per label on val; F1 and mAP "
        "on test. ms/step: interleaved medians on one batch (forward + loss + backward + step).",
        "",
        "| loss | sampler | macro F1 (test) | rare-label F1 (test) | mAP (test) "
        "| macro F1 (val, tuned on val) | ms/step | x bce |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        c = cost.get(row["loss"], {})
        lines.append(
            f"| `{row['loss']}` | {row['sampler']} | {_pm(row['macro_f1'])} | "
            f"{_pm(row['rare_f1'])} | {_pm(row['map'])} | {_pm(row['val_macro_f1'])} | "
            f"{c.get('median_ms', float('nan')):.1f} | {c.get('x_bce', float('nan')):.2f} |"
        )
    sampler = result.get("sampler_cost")
    if sampler:
        lines += [
            "",
            f"Batch planning: uniform {sampler['uniform_ms_per_batch']:.3f} ms, minority-aware "
            f"{sampler['minority_ms_per_batch']:.3f} ms per batch.",
        ]
    lines += ["", *[f"- {line}" for line in result["findings"]]]
    if e2e:
        lines += [
            "",
            f"End to end through the real HPA layout: {e2e['images']:,} synthetic samples written "
            f"as `{{Id}}_red|green|blue|yellow.png` + `train.csv`, then (in that folder) "
            f"`{e2e['command']}`: last `val/f1_macro_tuned` = {e2e['val_f1_macro_tuned']:.3f} "
            f"(per epoch: {', '.join(f'{v:.3f}' for v in e2e['val_f1_macro_tuned_per_epoch'])}; "
            f"{e2e['val_images']} validation images), {e2e['wall_s']:.0f} s.",
        ]
    if result.get("figure"):
        lines += ["", f"![quality multi-label]({result['figure']})"]
    return "\n".join(lines)


def save_figure(result: dict[str, Any], path: Path) -> Path:
    """Macro and rare-label F1 per configuration (bars: mean, whiskers: std, dots: seeds), the
    step cost, and per-label test F1 against training frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, rows = result["runs"], result["summary"]
    losses = [loss for loss in LOSSES if any(r["loss"] == loss for r in rows)]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colours = {"uniform": "tab:blue", "minority": "tab:orange"}
    for ax, metric, title in (
        (axes[0, 0], "macro_f1", "macro F1 (test, thresholds tuned on val)"),
        (axes[0, 1], "rare_f1", "rare-label F1 (test; labels < 1 % of images)"),
    ):
        for j, sampler in enumerate(SAMPLERS):
            xs = np.arange(len(losses)) + (j - 0.5) * 0.38
            for x, loss in zip(xs, losses, strict=True):
                row = next((r for r in rows if (r["loss"], r["sampler"]) == (loss, sampler)), None)
                if row is None:
                    continue
                ax.bar(
                    x,
                    row[metric][0],
                    0.36,
                    color=colours[sampler],
                    alpha=0.75,
                    label=f"{sampler} sampler" if x == xs[0] else None,
                )
                ax.errorbar(x, row[metric][0], row[metric][1], color="k", capsize=3)
                vals = [r[metric] for r in runs if (r["loss"], r["sampler"]) == (loss, sampler)]
                ax.scatter([x] * len(vals), vals, s=10, color="k", zorder=3)
        ax.set_xticks(np.arange(len(losses)), losses)
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    cost = result["step_cost"]
    names = [n for n in losses if n in cost]
    ax.bar(names, [cost[n]["x_bce"] for n in names], color="tab:gray")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_title("training-step time relative to bce")
    ax = axes[1, 1]
    freq = np.asarray(result["data"]["train_frequency"])
    best = max(rows, key=lambda r: r["rare_f1"][0])
    shown = [("bce", "uniform"), ("crl.class", "minority"), (best["loss"], best["sampler"])]
    for k, (loss, sampler) in enumerate(dict.fromkeys(shown)):
        row = next((r for r in rows if (r["loss"], r["sampler"]) == (loss, sampler)), None)
        if row is not None:
            ax.scatter(
                freq,
                row["per_class_f1"],
                s=18,
                marker="os^"[k % 3],
                label=f"{loss} + {sampler}",
                alpha=0.8,
            )
    ax.set_xscale("log")
    ax.axvline(RARE_THRESHOLD, color="k", lw=0.8, ls=":")
    ax.set_xlabel("label frequency in train (fraction of images)")
    ax.set_ylabel("test F1 (mean over seeds)")
    ax.set_title("per-label F1 against frequency")
    ax.legend(fontsize=8)
    fig.suptitle(
        f"HPA label imbalance, synthetic 4-channel images: {result['settings']['backbone']}, "
        f"{result['settings']['steps']} steps, {len(result['settings']['seeds'])} seed(s)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_section(body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace this benchmark's section of ``path`` (appended if absent) with ``body``."""
    _report.write_section("quality_multilabel", body, path, SECTION_TITLE)


# -- main ---------------------------------------------------------------------------------------


def prepare(settings: Settings, log: Any = print) -> tuple[Data, list[int], dict[str, Any]]:
    """Load the label vectors, subset them (smoke runs), render, split, normalise."""
    labels = load_targets()
    if settings.subset_splits:
        labels = labels[stratified_subset(labels, settings.subset_splits)]
    t0 = time.perf_counter()
    images = render_images(labels, settings.image_size, seed=0)
    log(f"rendered {len(labels):,} images in {time.perf_counter() - t0:.1f} s")
    train, val, test = split_train_val_test(labels)
    rare = rare_labels(labels, RARE_THRESHOLD)
    sample = torch.from_numpy(images[train[:8192]]).float().div_(255)
    data = Data(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels).float(),
        train=train,
        val=val,
        test=test,
        mean=sample.mean((0, 2, 3)),
        std=sample.std((0, 2, 3)),
    )
    counts = labels[train].sum(0)
    info = {
        "images": len(labels),
        "train": len(train),
        "val": len(val),
        "test": len(test),
        "rare": rare,
        "rare_test_positives": [int(labels[test, c].sum()) for c in rare],
        "rare_val_positives": [int(labels[val, c].sum()) for c in rare],
        "train_counts": counts.tolist(),
        "train_frequency": (counts / len(train)).tolist(),
        "train_max": int(counts.max()),
        "train_min": int(counts[counts > 0].min()),
        "class_names": list(CLASS_NAMES),
    }
    return data, rare, info


def run(settings: Settings, out: Path, command: str, log: Any = print) -> dict[str, Any]:
    """The whole benchmark; writes ``results.json``, ``results.md`` and the figure to ``out``."""
    torch.set_num_threads(settings.threads)
    started_wall = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()[0]]  # sampled after each run: how shared the machine was
    out.mkdir(parents=True, exist_ok=True)
    data, rare, info = prepare(settings, log)
    # the recipe first: a broken recipe fails the run before the long part
    e2e = run_recipe(data, settings, out)
    log(
        f"recipe end to end: val/f1_macro_tuned {e2e['val_f1_macro_tuned']:.3f} ({e2e['wall_s']} s)"
    )
    cost = time_steps(data, settings)
    log("step cost: " + ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in cost.items()))
    train_labels = data.labels[data.train].numpy().astype(np.uint8)
    sampler_cost = time_sampler(train_labels, settings.batch_size)
    runs: list[dict[str, Any]] = []
    for seed in settings.seeds:
        for loss in settings.losses:
            for sampler in settings.samplers:
                r = train_one(data, loss, sampler, seed, settings, rare)
                runs.append(r)
                loads.append(os.getloadavg()[0])
                (out / "runs_partial.json").write_text(json.dumps(runs))
                log(
                    f"{loss:>12} {sampler:>8} seed {seed}: macro F1 {r['macro_f1']:.3f}, rare "
                    f"{r['rare_f1']:.3f}, mAP {r['map']:.3f} ({r['train_s']:.0f} s train, "
                    f"{r['step_ms_median']:.0f} ms/step)"
                )
    rows = summarise(runs)
    result: dict[str, Any] = {
        "started": started,
        "machine": machine_line(),
        "command": command,
        "settings": asdict(settings),
        "data": info,
        "runs": runs,
        "summary": rows,
        "step_cost": cost,
        "sampler_cost": sampler_cost,
        "e2e": e2e,
        "findings": findings(runs, rows, cost),
        "load": (
            f"1-min load average {statistics.fmean(loads):.1f} on {os.cpu_count()} cores, mean of "
            f"{len(loads)} samples (min {min(loads):.1f}, max {max(loads):.1f}); above 2 the "
            "machine was shared and times are inflated"
        ),
    }
    figure = save_figure(result, out / "quality_multilabel.png")
    result["figure"] = str(figure)
    result["wall_s"] = round(time.perf_counter() - started_wall, 1)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(result) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, tiny data")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "quality_multilabel")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md and the figure")
    parser.add_argument("--steps", type=int, help="training steps per configuration")
    parser.add_argument("--seeds", type=int, help="number of seeds (0, 1, ...)")
    parser.add_argument("--threads", type=int, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    overrides: dict[str, Any] = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.seeds is not None:
        overrides["seeds"] = tuple(range(args.seeds))
    if args.threads is not None:
        overrides["threads"] = args.threads
    if overrides:
        settings = Settings(**{**asdict(settings), **overrides})
    flags = ["--quick"] if args.quick else []
    flags += [f"--{k} {v}" for k, v in vars(args).items() if k in ("steps", "seeds", "threads")]
    flags = [f for f in flags if not f.endswith(" None")] + (["--write"] if args.write else [])
    command = " ".join(["python benchmarks/quality_multilabel.py", *flags])
    result = run(settings, args.out, command)
    if args.write:
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result["figure"], FIGURE)
        result["figure"] = str(FIGURE.relative_to(REPO))
        write_section(markdown(result))
    print(markdown(result))
    print(f"\nresults: {args.out / 'results.json'}; total wall time {result['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
