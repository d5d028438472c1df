"""Quality on masked satellite bands: which loss reconstructs bands best around nodata?

    python benchmarks/quality_satellite.py                  # full run (about 10 min on 2 cores)
    python benchmarks/quality_satellite.py --quick --out D  # smoke run (< 1 min), as CI does
    python benchmarks/quality_satellite.py --write          # also BENCHMARKS.md + docs/images

Task: cross-band prediction on the real Sentinel-2 L1C sample of tile 19UDP (2017-07-29,
``smp_imbalance/sample_data/satellite/s2_l1c_19UDP_20170729/preview_B0*.jp2``, shipped with the
package, 687 x 687, DN 0 outside the acquisition strip: a wedge covering 37 % of the scene, plus
a few scattered DN-0 pixels inside it). ``--data tests`` uses the 96 x 96 crops of it in
``tests/data/satellite/`` instead (smaller patches; a smoke-sized benchmark). The
model sees blue and green (B02, B03) and predicts red and near-infrared (B04, B08), the two bands
of NDVI: B04 follows the visible bands almost linearly, B08 needs context.

Data (all through :class:`~smp_imbalance.datasets.MaskedBands`): ``nodata=0``, reflectance
``DN / 10000`` clipped to [0, 1], inputs normalised with the mean/std of the training region's
valid pixels (``band_statistics``), invalid pixels filled after normalisation (inputs: the band
mean; targets: 0) and carried as ``valid_mask`` (a target pixel counts where all four bands are
valid). Patches need ``min_valid_fraction >= 0.05``, so valid fractions span ~5 % to 100 %.
Spatial split: the bottom 35 % of the scene's rows is held out; training patches lie wholly
above it, validation patches wholly inside it (the wedge edge crosses both). Validation windows
are denser (stride 8 vs 16) so that the rare low-valid-fraction patches are numerous enough;
every validation patch below 75 % valid is kept, and every 4th of the others.

Model and budget, the same for every loss: smp ``Unet`` built by
:class:`~smp_imbalance.training.DenseTask` (resnet18 encoder at depth 3, decoder [32, 16, 8],
random init, sigmoid output), AdamW (lr 5e-3, weight decay 1e-4), linear warm-up then cosine
decay, gradient-norm clip 1, batches of 16 patches of 64 x 64 with a random dihedral symmetry,
the same initial weights, batches and symmetries per seed for every loss.

Losses:

* ``mse (all pixels)``: ``torch.nn.MSELoss`` over every pixel, nodata included (target 0 there);
* ``masked mse (pooled)``: squared error summed over the valid pixels of the batch / their number
  (written here); mathematically the same objective as ``valid_pixel`` with ``weight_power=1``
  (the unit tests check it), so the two runs differ by float rounding only: a noise floor;
* ``valid_pixel p=0 / p=0.5 / p=1``: the package's valid-pixel weighted MSE with weight
  ``(valid ratio) ** p`` per (patch, band): equal weight per patch (0), the seed's square root
  (0.5), equal weight per valid pixel (1);
* ``sam_mse``: ``alpha * SAM + beta * valid_pixel(mse)`` (sqrt weighting), ``alpha = 1``,
  ``beta = 1 / (mean target variance of the training region)`` so the MSE term is in units of
  the bands' variance (SAM is in radians; the package leaves the balance to the user).

The package's losses run their eager path (``fused=False``: the same values; compiling each
variant would cost more than it saves at this size).

For scale, the tables add a per-pixel linear least-squares fit of the targets on the normalised
inputs (over the training region's valid pixels): not a contender, and no loss trains it. B04 is
almost a linear function of B02/B03 in this scene, which a Unet trained for this CPU budget does
not learn to that precision; B08 needs context.

Metrics on the held-out patches (``smp_imbalance.metrics``, valid pixels only, data range 1):
PSNR, RMSE and SSIM per band, the spectral angle (SAM, radians) across B04/B08, and the RMSE per
patch (both bands) averaged over the patches of each valid-fraction bin: the fairness the seed
claims for the square-root weighting is about the low-valid-fraction patches.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import machine_line  # noqa: E402

from smp_imbalance import create_loss  # noqa: E402
from smp_imbalance.datasets.satellite import MaskedBands, Scene, band_statistics  # noqa: E402
from smp_imbalance.metrics import (  # noqa: E402
    MaskedPSNR,
    MaskedRMSE,
    MaskedSAM,
    MaskedSSIM,
    band_report,
)
from smp_imbalance.sample_data import sample_path  # noqa: E402

NAME = "quality_satellite"
BEGIN, END = _report.markers(NAME)
SECTION_TITLE = "## Quality: masked satellite bands"
FIGURE = REPO / "docs" / "images" / f"{NAME}.png"
BENCHMARKS = REPO / "BENCHMARKS.md"
DEFAULT_OUT = HERE / "out" / NAME

SCENE = sample_path("satellite", "s2_l1c_19UDP_20170729") / "preview_{band}.jp2"
TEST_SCENE = REPO / "tests" / "data" / "satellite" / "s2_19UDP_wedge_{band}.tif"
INPUT_BANDS = ("B02", "B03")
TARGET_BANDS = ("B04", "B08")
NODATA = 0
MIN_VALID_FRACTION = 0.05
VAL_FRACTION = 0.35  # share of the scene's rows (at the bottom) held out for validation

# Table bins of the valid fraction: [lo, hi), the last one closed.
TABLE_BINS: tuple[tuple[str, float, float], ...] = (
    ("< 25 %", 0.0, 0.25),
    ("25-75 %", 0.25, 0.75),
    (">= 75 %", 0.75, 1.0),
)
FIGURE_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
REFERENCE = "valid_pixel p=0.5 (sqrt)"
LINEAR = "linear fit (reference)"
# Two labels for one objective (see the module docstring): never each other's runner-up.
TWINS = frozenset({"masked mse (pooled)", "valid_pixel p=1"})

MODEL: dict[str, Any] = {
    "arch": "Unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
    "encoder_weights": None,
    "task": "regression",
    "output_activation": "sigmoid",
}


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


class MaskedMSELoss(nn.Module):
    """Mean squared error over the valid pixels of the whole batch, pooled (no weighting).

    ``loss = sum over valid (y_pred - y_true)^2 / number of valid elements``, the mask
    broadcast over the channels. Shapes: ``y_pred``, ``y_true`` (N, C, H, W); ``valid_mask``
    bool (N, 1 or C, H, W). Returns a 0-dim tensor; 0 (attached to the graph) when nothing is
    valid.
    """

    def forward(
        self, y_pred: torch.Tensor, y_true: torch.Tensor, valid_mask: torch.Tensor
    ) -> torch.Tensor:
        mask = valid_mask.expand_as(y_true)
        sq = torch.where(mask, (y_pred - y_true).square(), 0)
        return sq.sum() / mask.sum().clamp_min(1)


@dataclass(frozen=True)
class LossSpec:
    """A contender: a label, a registry name (or ``masked_mse`` for :class:`MaskedMSELoss`) and
    keywords; ``beta="var"`` is replaced by ``1 / mean target variance`` at run time."""

    label: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


# The eager path gives the same values as the fused (compiled) one; at (16, 2, 64, 64) the loss
# is ~1 % of a step, and compiling each weight_power variant would cost more than it saves.
EAGER = {"fused": False}
LOSSES: tuple[LossSpec, ...] = (
    LossSpec("mse (all pixels)", "mse"),
    LossSpec("masked mse (pooled)", "masked_mse"),
    LossSpec("valid_pixel p=0", "valid_pixel", {"base": "mse", "weight_power": 0.0, **EAGER}),
    LossSpec(REFERENCE, "valid_pixel", {"base": "mse", "weight_power": 0.5, **EAGER}),
    LossSpec("valid_pixel p=1", "valid_pixel", {"base": "mse", "weight_power": 1.0, **EAGER}),
    LossSpec("sam_mse", "sam_mse", {"alpha": 1.0, "beta": "var", "weight_power": 0.5, **EAGER}),
)


def build_loss(spec: LossSpec, target_variance: float) -> nn.Module:
    """The loss module of ``spec``; ``beta="var"`` becomes ``1 / target_variance``."""
    if spec.name == "masked_mse":
        return MaskedMSELoss()
    kwargs = {k: (1.0 / target_variance if v == "var" else v) for k, v in spec.kwargs.items()}
    return create_loss(spec.name, **kwargs)


# ----------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# ----------------------------------------------------------------------------------------------


def patch_rmse(pred: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> torch.Tensor:
    """RMSE of each patch over its valid pixels, all bands pooled.

    Shapes: ``pred``, ``target`` (N, C, H, W); ``valid_mask`` bool (N, 1 or C, H, W). Returns
    (N,) float64; NaN for a patch without a valid pixel.
    """
    mask = valid_mask.expand_as(target)
    sq = torch.where(mask, (pred.double() - target.double()).square(), 0)
    count = mask.sum(dim=(1, 2, 3)).double()
    return (sq.sum(dim=(1, 2, 3)) / count).sqrt()


def bin_index(fractions: torch.Tensor, edges: Sequence[float]) -> torch.Tensor:
    """The bin of each valid fraction: ``i`` where ``edges[i] <= f < edges[i + 1]``, the last
    bin closed at ``edges[-1]``; -1 outside ``[edges[0], edges[-1]]``. (N,) -> (N,) int64."""
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"edges must be increasing with at least 2 values, got {edges}")
    f = fractions.double()
    edge = torch.tensor(edges, dtype=torch.float64)
    idx = torch.bucketize(f, edge, right=True) - 1
    idx = torch.where(f == edge[-1], len(edges) - 2, idx)
    outside = (f < edge[0]) | (f > edge[-1])
    return torch.where(outside, -1, idx)


def binned_mean(values: torch.Tensor, bins: torch.Tensor, num_bins: int) -> list[float | None]:
    """Mean of ``values`` in each of ``num_bins`` bins (``bins`` from :func:`bin_index`);
    ``None`` for an empty bin."""
    out: list[float | None] = []
    for i in range(num_bins):
        sel = values[bins == i]
        out.append(float(sel.double().mean()) if sel.numel() else None)
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per loss label (first-seen order): ``{metric: (mean, std)}`` over the runs (seeds) of each
    key of ``run["metrics"]`` (a flat dict of floats; ``None`` values are skipped)."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_label.setdefault(run["loss"], []).append(run)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for label, group in by_label.items():
        keys = list(dict.fromkeys(k for r in group for k in r["metrics"]))
        out[label] = {}
        for key in keys:
            vals = [r["metrics"][key] for r in group if r["metrics"].get(key) is not None]
            if vals:
                out[label][key] = mean_std(vals)
    return out


def paired_change(
    runs: Sequence[dict[str, Any]], reference: str, key: str
) -> dict[str, tuple[float, float]]:
    """Relative change of ``metrics[key]`` against the ``reference`` loss, paired by seed:
    ``100 * (m_loss - m_ref) / m_ref`` per seed, then mean and std over seeds (in %). Seeds
    missing either side are skipped; losses with no paired seed are left out."""
    ref = {r["seed"]: r["metrics"].get(key) for r in runs if r["loss"] == reference}
    changes: dict[str, list[float]] = {}
    for r in runs:
        m, base = r["metrics"].get(key), ref.get(r["seed"])
        if m is None or base is None or base == 0:
            continue
        changes.setdefault(r["loss"], []).append(100.0 * (m - base) / base)
    return {label: mean_std(v) for label, v in changes.items()}


def random_dihedral(
    tensors: Sequence[torch.Tensor], generator: torch.Generator
) -> list[torch.Tensor]:
    """The same random symmetry of the square (rot90 k times, then maybe a transpose) applied to
    each (N, C, H, W) tensor of a batch (square patches)."""
    k = int(torch.randint(4, (1,), generator=generator))
    flip = bool(torch.randint(2, (1,), generator=generator))
    out = []
    for t in tensors:
        t = torch.rot90(t, k, dims=(2, 3))
        out.append(t.transpose(2, 3) if flip else t)
    return [t.contiguous() for t in out]


def lr_factor(step: int, steps: int, warmup: int, floor: float = 0.05) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit_linear(image: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor) -> nn.Conv2d:
    """The per-pixel least-squares affine map from input to target bands over the valid pixels,
    as a 1x1 convolution. ``image`` (N, C_in, H, W), ``target`` (N, C_out, H, W), ``valid_mask``
    bool (N, 1, H, W) (a pixel counts when valid in every target band)."""
    c_in, c_out = image.shape[1], target.shape[1]
    ok = valid_mask.all(dim=1).reshape(-1)
    x = image.permute(0, 2, 3, 1).reshape(-1, c_in)[ok].double()
    y = target.permute(0, 2, 3, 1).reshape(-1, c_out)[ok].double()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    coef = torch.linalg.lstsq(design, y).solution  # (C_in + 1, C_out)
    conv = nn.Conv2d(c_in, c_out, 1)
    with torch.no_grad():
        conv.weight.copy_(coef[:c_in].T.reshape(c_out, c_in, 1, 1))
        conv.bias.copy_(coef[c_in])
    return conv.eval()


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """Everything that sizes a run (the same for every loss)."""

    data: str  # "scene" or "tests"
    pattern: str
    patch: int
    train_stride: int
    val_stride: int
    steps: int
    batch_size: int
    seeds: tuple[int, ...]
    lr: float = 5e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    eval_batch: int = 64
    threads: int = 2
    thin_high: int = 4  # keep every n-th validation patch with valid fraction >= 75 %


def default_settings(data: str, quick: bool) -> Settings:
    """Full or quick settings for the 687 x 687 sample scene or its 96 x 96 crops."""
    pattern = str(SCENE if data == "scene" else TEST_SCENE)
    patch = 64 if data == "scene" else 32
    if quick:
        return Settings(
            data,
            pattern,
            patch,
            train_stride=patch // (2 if data == "scene" else 4),
            val_stride=patch // (2 if data == "scene" else 4),
            steps=3,
            batch_size=4,
            seeds=(0,),
            warmup=1,
        )
    return Settings(
        data,
        pattern,
        patch,
        train_stride=patch // 4,
        val_stride=patch // 8,
        steps=200,
        batch_size=16,
        seeds=(0, 1, 2),
    )


def resolve_data(choice: str) -> str:
    """``auto``: the sample scene shipped with the package."""
    return "scene" if choice == "auto" else choice


def scene_height(pattern: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(pattern.format(band=INPUT_BANDS[0])) as src:
            return src.height


def make_dataset(
    s: Settings, stride: int, keep: Callable[[Window], bool], **kwargs: Any
) -> MaskedBands:
    """``MaskedBands`` over the scene, restricted to the windows ``keep`` accepts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "skipped N patches": expected here
        ds = MaskedBands(
            [Scene(inputs=s.pattern, name=f"S2 L1C 19UDP ({s.data})")],
            input_bands=list(INPUT_BANDS),
            target_bands=list(TARGET_BANDS),
            nodata=NODATA,
            patch_size=s.patch,
            stride=stride,
            min_valid_fraction=MIN_VALID_FRACTION,
            clip=(0.0, 1.0),
            **kwargs,
        )
    # ``patches`` is the dataset's list of (scene, window): keeping a subset restricts it to a
    # region of the scene (band_statistics and __getitem__ both read from it).
    ds.patches = [(i, w) for i, w in ds.patches if keep(w)]
    if not ds.patches:
        raise ValueError(f"no patch of {s.patch} px in the region (stride {stride})")
    return ds


def preload(ds: MaskedBands) -> dict[str, torch.Tensor]:
    """Every sample of ``ds`` stacked: ``image`` (N, C_in, P, P), ``target`` (N, C_out, P, P),
    ``valid_mask`` (N, 1, P, P) bool, ``valid_fraction`` (N,)."""
    samples = [ds[i] for i in range(len(ds))]
    return {k: torch.stack([smp[k] for smp in samples]) for k in samples[0]}


def thin_indices(fractions: torch.Tensor, threshold: float, keep_every: int) -> torch.Tensor:
    """Indices of every patch with valid fraction below ``threshold`` and of every
    ``keep_every``-th of the others (the 0th, k-th, ... in index order), ascending. (N,) -> (M,)."""
    low = fractions < threshold
    high_idx = torch.nonzero(~low).flatten()[::keep_every]
    return torch.sort(torch.cat([torch.nonzero(low).flatten(), high_idx])).values


def load_data(s: Settings) -> dict[str, Any]:
    """Training and validation tensors, the input statistics and the target variance."""
    height = scene_height(s.pattern)
    split = round(height * (1 - VAL_FRACTION))

    def in_train(w: Window) -> bool:
        return w.row_off + w.height <= split

    def in_val(w: Window) -> bool:
        return w.row_off >= split

    raw = make_dataset(s, s.train_stride, in_train)
    stats = band_statistics(raw)
    norm = {"mean": stats["image"].mean, "std": stats["image"].std}
    train = preload(make_dataset(s, s.train_stride, in_train, **norm))
    val = preload(make_dataset(s, s.val_stride, in_val, **norm))
    # Dense windows make the rare low-valid patches numerous; the many mostly-valid ones are
    # thinned evenly (they are near-duplicates at this stride and dominate evaluation time).
    keep = thin_indices(val["valid_fraction"], TABLE_BINS[-1][1], s.thin_high)
    val = {k: v[keep] for k, v in val.items()}
    return {
        "train": train,
        "val": val,
        "split_row": split,
        "height": height,
        "input_mean": list(stats["image"].mean),
        "input_std": list(stats["image"].std),
        "target_variance": float(np.mean(np.square(stats["target"].std))),
    }


def bin_counts(fractions: torch.Tensor) -> dict[str, int]:
    idx = bin_index(fractions, [TABLE_BINS[0][1]] + [hi for _, _, hi in TABLE_BINS])
    return {label: int((idx == i).sum()) for i, (label, _, _) in enumerate(TABLE_BINS)}


# ----------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------


def train_one(
    spec: LossSpec, seed: int, s: Settings, data: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Train one model with ``spec``'s loss; the init, batches and symmetries depend only on
    ``seed``. Returns the task (eval mode) and training facts."""
    from smp_imbalance.training import DenseTask

    loss = build_loss(spec, data["target_variance"])
    torch.manual_seed(seed)
    task = DenseTask(
        **MODEL,
        in_channels=len(INPUT_BANDS),
        classes=len(TARGET_BANDS),
        loss=loss,
        metrics="none",
        plot_every_n_epochs=0,
    )
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, s.steps, min(s.warmup, s.steps))
    )
    train = data["train"]
    n = train["image"].shape[0]
    batch = min(s.batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    cursor, losses = 0, []
    task.train()
    start = time.perf_counter()
    for step in range(s.steps):
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        x, y, m = random_dihedral(
            [train["image"][idx], train["target"][idx], train["valid_mask"][idx]], gen
        )
        pred = task(x)
        value = task.loss_fn(pred, y, valid_mask=m)  # every dense loss takes valid_mask
        if not torch.isfinite(value):
            raise FloatingPointError(f"{spec.label}, seed {seed}: loss {value.item()} at {step}")
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(value.item())
    train_s = time.perf_counter() - start
    task.eval()
    tail = losses[-max(1, len(losses) // 10) :]
    return task, {"train_s": train_s, "final_train_loss": statistics.fmean(tail)}


@torch.no_grad()
def evaluate(task: Any, s: Settings, val: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Masked metrics of ``task`` on the validation patches: a flat ``metrics`` dict and the
    per-patch RMSE (N,) and predictions (N, C_out, P, P)."""
    n_bands = len(TARGET_BANDS)
    metrics = {
        "psnr": MaskedPSNR(data_range=1.0, num_bands=n_bands, per_band=True),
        "rmse": MaskedRMSE(num_bands=n_bands, per_band=True),
        "ssim": MaskedSSIM(data_range=1.0, num_bands=n_bands, per_band=True),
        "sam": MaskedSAM(num_bands=n_bands),
    }
    preds = []
    for i in range(0, val["image"].shape[0], s.eval_batch):
        pred = task(val["image"][i : i + s.eval_batch])
        target, valid = val["target"][i : i + s.eval_batch], val["valid_mask"][i : i + s.eval_batch]
        for metric in metrics.values():
            metric.update(pred, target, valid)
        preds.append(pred)
    pred = torch.cat(preds)
    report = band_report({k: m.compute() for k, m in metrics.items()}, list(TARGET_BANDS))
    flat: dict[str, float | None] = {}
    for band in TARGET_BANDS:
        for key in ("psnr", "rmse", "ssim"):
            flat[f"{band} {key}"] = report[band][key]
    flat["sam"] = report[TARGET_BANDS[0]]["sam"]
    rmse = patch_rmse(pred, val["target"], val["valid_mask"])
    edges = [TABLE_BINS[0][1]] + [hi for _, _, hi in TABLE_BINS]
    for (label, _, _), value in zip(
        TABLE_BINS,
        binned_mean(rmse, bin_index(val["valid_fraction"], edges), len(TABLE_BINS)),
        strict=True,
    ):
        flat[f"rmse {label}"] = value
    fig_bins = binned_mean(
        rmse, bin_index(val["valid_fraction"], FIGURE_EDGES), len(FIGURE_EDGES) - 1
    )
    for i, value in enumerate(fig_bins):
        flat[f"fig bin {i}"] = value
    return {"metrics": flat, "patch_rmse": rmse, "pred": pred}


def example_index(fractions: torch.Tensor, target: float = 0.25) -> int:
    """The validation patch whose valid fraction is closest to ``target`` (first on ties)."""
    return int(torch.argmin((fractions.double() - target).abs()))


def run(s: Settings, command: str) -> dict[str, Any]:
    """Every loss x seed; returns the JSON-ready result (plus ``_examples`` for the figure)."""
    torch.set_num_threads(s.threads)
    load_before = os.getloadavg()[0]
    wall0 = time.perf_counter()
    data = load_data(s)
    data_s = time.perf_counter() - wall0
    val = data["val"]
    ex = example_index(val["valid_fraction"])
    runs, examples = [], {}
    total = len(LOSSES) * len(s.seeds)
    print(
        f"data ({data_s:.1f} s): {len(data['train']['image'])} training patches "
        f"{bin_counts(data['train']['valid_fraction'])}, {len(val['image'])} validation patches "
        f"{bin_counts(val['valid_fraction'])}",
        flush=True,
    )
    train = data["train"]
    linear = fit_linear(train["image"], train["target"], train["valid_mask"])
    ref_eval = evaluate(linear, s, val)
    reference = {"loss": LINEAR, "seed": None, "metrics": ref_eval["metrics"]}
    examples[LINEAR] = ref_eval["pred"][ex].clone()
    for seed in s.seeds:
        for spec in LOSSES:
            task, facts = train_one(spec, seed, s, data)
            t0 = time.perf_counter()
            result = evaluate(task, s, val)
            facts["eval_s"] = time.perf_counter() - t0
            runs.append({"loss": spec.label, "seed": seed, **facts, "metrics": result["metrics"]})
            if seed == s.seeds[0]:
                examples[spec.label] = result["pred"][ex].clone()
            m = result["metrics"]
            print(
                f"[{len(runs)}/{total}] {spec.label}, seed {seed}: train {facts['train_s']:.1f} s, "
                f"B04 PSNR {m['B04 psnr']:.2f}, B08 PSNR {m['B08 psnr']:.2f}, "
                f"SAM {m['sam']:.4f}, RMSE <25 % {_fmt(m['rmse < 25 %'], 4)}, "
                f">=75 % {_fmt(m['rmse >= 75 %'], 4)}",
                flush=True,
            )
    wall = time.perf_counter() - wall0
    return {
        "benchmark": NAME,
        "command": command,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_line(),
        "load_average": [load_before, os.getloadavg()[0]],
        "wall_s": wall,
        "data_s": data_s,
        "settings": asdict(s),
        "model": MODEL,
        "losses": [asdict(spec) for spec in LOSSES],
        "data": {
            "input_bands": list(INPUT_BANDS),
            "target_bands": list(TARGET_BANDS),
            "scene_rows": data["height"],
            "split_row": data["split_row"],
            "train_patches": bin_counts(data["train"]["valid_fraction"]),
            "val_patches": bin_counts(val["valid_fraction"]),
            "input_mean": data["input_mean"],
            "input_std": data["input_std"],
            "target_variance": data["target_variance"],
            "sam_mse_beta": 1.0 / data["target_variance"],
        },
        "runs": runs,
        "reference": reference,
        "summary": aggregate([*runs, reference]),
        "_examples": {
            "index": ex,
            "image": val["image"][ex],
            "target": val["target"][ex],
            "valid_mask": val["valid_mask"][ex],
            "valid_fraction": float(val["valid_fraction"][ex]),
            "preds": examples,
        },
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pm(value: tuple[float, float] | None, digits: int) -> str:
    return "n/a" if value is None else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def band_table(summary: dict[str, dict[str, tuple[float, float]]]) -> str:
    """Per-band PSNR/RMSE/SSIM and the cross-band SAM, mean ± std over seeds, one row a loss."""
    head = ["loss"]
    align = ["---"]
    for band in TARGET_BANDS:
        head += [f"{band} PSNR dB", f"{band} RMSE", f"{band} SSIM"]
        align += ["---:"] * 3
    head.append(f"SAM rad ({'/'.join(TARGET_BANDS)})")
    align.append("---:")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for label, m in summary.items():
        cells = [label]
        for band in TARGET_BANDS:
            cells += [
                _pm(m.get(f"{band} psnr"), 2),
                _pm(m.get(f"{band} rmse"), 4),
                _pm(m.get(f"{band} ssim"), 3),
            ]
        cells.append(_pm(m.get("sam"), 4))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fairness_table(
    runs: Sequence[dict[str, Any]],
    summary: dict[str, dict[str, tuple[float, float]]],
    val_counts: dict[str, int],
) -> str:
    """Mean per-patch RMSE by valid-fraction bin (mean ± std over seeds), the low/high ratio,
    and the change of the low and high bins against :data:`REFERENCE`, paired by seed."""
    low, high = TABLE_BINS[0][0], TABLE_BINS[-1][0]
    d_low = paired_change(runs, REFERENCE, f"rmse {low}")
    d_high = paired_change(runs, REFERENCE, f"rmse {high}")
    ratio: dict[str, tuple[float, float]] = {}
    for label in summary:
        pairs = [
            r["metrics"][f"rmse {low}"] / r["metrics"][f"rmse {high}"]
            for r in runs
            if r["loss"] == label
            and r["metrics"].get(f"rmse {low}") is not None
            and r["metrics"].get(f"rmse {high}")
        ]
        if pairs:
            ratio[label] = mean_std(pairs)
    head = ["loss"] + [f"RMSE, valid {lab} ({val_counts[lab]} patches)" for lab, _, _ in TABLE_BINS]
    head += ["low / high", "low vs sqrt, paired (%)", "high vs sqrt, paired (%)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, m in summary.items():
        cells = [label] + [_pm(m.get(f"rmse {lab}"), 4) for lab, _, _ in TABLE_BINS]
        cells.append(_pm(ratio.get(label), 2))
        for d in (d_low, d_high):
            cells.append("--" if label == REFERENCE else _pm(d.get(label), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(runs: Sequence[dict[str, Any]], summary: dict[str, dict[str, Any]]) -> list[str]:
    """Facts read off the summary: the best loss on each headline metric and its margin over
    the runner-up (not its twin objective, :data:`TWINS`), compared with the larger of their
    spreads over seeds."""
    keys = [
        (f"{TARGET_BANDS[0]} psnr", "higher", 2, "dB"),
        (f"{TARGET_BANDS[1]} psnr", "higher", 2, "dB"),
        ("sam", "lower", 4, "rad"),
        (f"rmse {TABLE_BINS[0][0]}", "lower", 4, ""),
        (f"rmse {TABLE_BINS[-1][0]}", "lower", 4, ""),
    ]
    out = []
    for key, better, digits, unit in keys:
        scored = [(lab, m[key]) for lab, m in summary.items() if key in m and lab != LINEAR]
        if len(scored) < 2:
            continue
        scored.sort(key=lambda t: t[1][0], reverse=better == "higher")
        best, (mb, sb) = scored[0]
        rivals = [t for t in scored[1:] if not {best, t[0]} <= TWINS]
        if not rivals:
            continue
        second, (m2, s2) = rivals[0]
        gap = abs(mb - m2)
        verdict = "more than" if gap > max(sb, s2) else "within"
        name = key.replace("rmse ", "patch RMSE, valid ").replace(" psnr", " PSNR")
        name = name.replace("sam", "SAM")
        out.append(
            f"- {name} ({better} is better): best `{best}` {mb:.{digits}f} {unit}, then "
            f"`{second}` {m2:.{digits}f}; the gap {gap:.{digits}f} is {verdict} the larger "
            f"spread over seeds ({max(sb, s2):.{digits}f})."
        )
    return out


def report_markdown(result: dict[str, Any], figure_rel: str | None) -> str:
    s, d = result["settings"], result["data"]
    load = result["load_average"]
    cores = os.cpu_count()
    busy = "; shared with other jobs" if max(load) > 0.75 * (cores or 2) + 1 else ""
    lines = [
        f"Measured {result['measured']} on {result['machine']}; wall time "
        f"{result['wall_s'] / 60:.1f} min (data {result['data_s']:.0f} s), load average "
        f"{load[0]:.1f} before and {load[1]:.1f} after ({cores} cores{busy}).",
        "",
        f"Command: `{result['command']}`.",
        "",
        f"Scene: `{os.path.relpath(s['pattern'], REPO)}` ({d['scene_rows']} rows; rows >= "
        f"{d['split_row']} held out). "
        f"{', '.join(d['input_bands'])} -> {', '.join(d['target_bands'])}; patches "
        f"{s['patch']} x {s['patch']}, training stride {s['train_stride']} "
        f"({sum(d['train_patches'].values())} patches: "
        + ", ".join(f"{v} valid {k}" for k, v in d["train_patches"].items())
        + f"), validation stride {s['val_stride']} ({sum(d['val_patches'].values())} patches: "
        f"all below 75 % valid, every {s['thin_high']}th of the others). "
        f"{s['steps']} steps of {s['batch_size']} patches per run, seeds "
        f"{', '.join(map(str, s['seeds']))}; `sam_mse` beta = {d['sam_mse_beta']:.1f}. "
        f"Mean ± std over seeds (sample std).",
        "",
        "**Per band, held-out patches (valid pixels only; data range 1)**",
        "",
        band_table(result["summary"]),
        "",
        "**Mean per-patch RMSE (B04 and B08 pooled) by the patch's valid fraction; changes "
        f"against `{REFERENCE}` paired by seed (same init and batches; negative = lower error)**",
        "",
        fairness_table([*result["runs"], result["reference"]], result["summary"], d["val_patches"]),
        "",
        *findings(result["runs"], result["summary"]),
    ]
    times = [r["train_s"] / s["steps"] for r in result["runs"]]
    lines += [
        "",
        f"Training: {statistics.median(times) * 1e3:.0f} ms a step (median over runs).",
    ]
    if figure_rel:
        lines += ["", f"![masked satellite bands quality]({figure_rel})"]
    return "\n".join(lines)


def write_section(markdown: str, path: Path = BENCHMARKS) -> None:
    """Replace this benchmark's section of ``path`` (appended if absent) with ``markdown``."""
    _report.write_section(NAME, markdown, path, SECTION_TITLE)


def _display_range(x: np.ndarray, ok: np.ndarray) -> tuple[float, float]:
    vals = x[ok] if ok.any() else x.ravel()
    lo, hi = np.percentile(vals, [2, 98])
    return float(lo), float(max(hi, lo + 1e-6))


def save_figure(result: dict[str, Any], path: Path) -> None:
    """RMSE by valid-fraction bin per loss (mean ± std over seeds), PSNR per band, and one
    low-valid held-out patch: input, targets, invalid mask and each loss's B08 prediction."""
    from matplotlib.figure import Figure

    summary, ex = result["summary"], result["_examples"]
    labels = list(summary)
    fig = Figure(figsize=(16, 10), layout="constrained")
    grid = fig.add_gridspec(3, 6, height_ratios=[1.3, 1, 1])
    ax = fig.add_subplot(grid[0, :3])
    centres = [(a + b) / 2 for a, b in itertools.pairwise(FIGURE_EDGES)]
    width = (FIGURE_EDGES[1] - FIGURE_EDGES[0]) * 0.6
    for j, label in enumerate(labels):
        xs, ys, es = [], [], []
        for i, c in enumerate(centres):
            v = summary[label].get(f"fig bin {i}")
            if v is not None:
                xs.append(c + (j - (len(labels) - 1) / 2) * width / len(labels))
                ys.append(v[0])
                es.append(v[1])
        style = {"linestyle": "--", "color": "black"} if label == LINEAR else {}
        ax.errorbar(xs, ys, yerr=es, marker="o", ms=4, capsize=3, label=label, **style)
    ax.set_xticks(FIGURE_EDGES)
    ax.set_xticklabels([f"{e:.0%}" for e in FIGURE_EDGES])
    ax.set_xlabel("valid fraction of the held-out patch (bins)")
    ax.set_ylabel("mean per-patch RMSE (B04, B08)")
    n_seeds = len(result["settings"]["seeds"])
    ax.set_title(f"error by valid fraction (mean ± std over {n_seeds} seed(s))", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(grid[0, 3:])
    x = np.arange(len(labels))
    w = 0.8 / len(TARGET_BANDS)
    for b, band in enumerate(TARGET_BANDS):
        means = [summary[lab][f"{band} psnr"][0] for lab in labels]
        stds = [summary[lab][f"{band} psnr"][1] for lab in labels]
        ax.bar(x + (b - 0.5) * w, means, w, yerr=stds, capsize=3, label=band)
    lo = min(summary[lab][f"{band} psnr"][0] for lab in labels for band in TARGET_BANDS)
    hi = max(summary[lab][f"{band} psnr"][0] for lab in labels for band in TARGET_BANDS)
    ax.set_ylim(lo - 2, hi + 1)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("masked PSNR (dB), held-out patches")
    ax.set_title("PSNR per band", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")

    valid = ex["valid_mask"][0].numpy()
    image, target = ex["image"].numpy(), ex["target"].numpy()
    b08 = TARGET_BANDS.index("B08")
    lo08, hi08 = _display_range(target[b08], valid)
    panels: list[tuple[np.ndarray, str, tuple[float, float]]] = [
        (image[-1], f"input {INPUT_BANDS[-1]} (normalised; fill = mean)", (-2.0, 2.0)),
        (target[0], f"target {TARGET_BANDS[0]}", _display_range(target[0], valid)),
        (target[b08], "target B08", (lo08, hi08)),
        (~valid, f"invalid ({1 - ex['valid_fraction']:.0%} of the patch)", (0.0, 1.0)),
    ]
    for label in labels:
        p = ex["preds"][label].numpy()
        err = float(np.sqrt(np.mean((p - target)[:, valid] ** 2))) if valid.any() else math.nan
        panels.append((p[b08], f"{label}\nB08, patch RMSE {err:.4f}", (lo08, hi08)))
    for k, (img, title, (vmin, vmax)) in enumerate(panels[:12]):
        a = fig.add_subplot(grid[1 + k // 6, k % 6])
        a.imshow(img.astype(np.float32), cmap="gray", vmin=vmin, vmax=vmax)
        if k != 3 and valid.any() and not valid.all():
            a.contour(valid.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        a.set_title(title, fontsize=8)
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(
        "Masked satellite bands: B02, B03 -> B04, B08 on Sentinel-2 L1C 19UDP; "
        "red line = edge of the valid pixels (predictions shown everywhere)",
        fontsize=11,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _json_ready(result: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in result.items() if not k.startswith("_")}
    out["summary"] = {
        lab: {k: {"mean": v[0], "std": v[1]} for k, v in m.items()}
        for lab, m in result["summary"].items()
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, one seed (smoke test)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for JSON/md/png")
    parser.add_argument(
        "--write", action="store_true", help="also update BENCHMARKS.md and docs/images"
    )
    parser.add_argument(
        "--data",
        choices=("auto", "scene", "tests"),
        default="auto",
        help="the 687 x 687 sample scene (auto), or its 96 x 96 crops in tests/data",
    )
    parser.add_argument("--steps", type=int, help="training steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (one run per loss each)")
    parser.add_argument("--threads", type=int, help="torch threads (default 2)")
    args = parser.parse_args(argv)

    s = default_settings(resolve_data(args.data), args.quick)
    if args.steps is not None:
        s = replace(s, steps=args.steps)
    if args.seeds:
        s = replace(s, seeds=tuple(args.seeds))
    if args.threads is not None:
        s = replace(s, threads=args.threads)
    given = list(sys.argv[1:] if argv is None else argv)
    # OpenMP's wait policy changes only the speed (passive helps a lot on a busy machine).
    policy = os.environ.get("OMP_WAIT_POLICY")
    prefix = [f"OMP_WAIT_POLICY={policy}"] if policy else []
    command = " ".join([*prefix, "python benchmarks/quality_satellite.py", *given])

    result = run(s, command)
    args.out.mkdir(parents=True, exist_ok=True)
    # Results first: a figure problem must not lose a long run.
    (args.out / f"{NAME}.json").write_text(json.dumps(_json_ready(result), indent=1) + "\n")
    fig_path = args.out / f"{NAME}.png"
    figure_rel = FIGURE.relative_to(REPO).as_posix() if args.write else fig_path.name
    markdown = report_markdown(result, figure_rel)
    (args.out / f"{NAME}.md").write_text(markdown + "\n")
    print(markdown)
    print(f"\nwall time {result['wall_s']:.1f} s; results in {args.out}")
    save_figure(result, fig_path)
    if args.write:
        FIGURE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fig_path, FIGURE)
        write_section(markdown)
        print(f"updated {BENCHMARKS.name} and {FIGURE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
