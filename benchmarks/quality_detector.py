"""Quality on sparse detector frames: which denoiser, how far from the ceiling, on which settings.

    python benchmarks/quality_detector.py --part rules       # the oracle ceiling + tuned rules
    python benchmarks/quality_detector.py --part networks    # learned denoisers, 3 seeds each
    python benchmarks/quality_detector.py --part curve       # the main job trained 4x longer
    python benchmarks/quality_detector.py --write            # BENCHMARKS.md from the saved parts
    python benchmarks/quality_detector.py --quick --out D    # smoke run of every part (CI)

Each part saves ``benchmarks/results/quality_detector/<part>.json`` (``--out`` elsewhere);
``--write`` turns the saved parts into the "Quality: sparse detector frames" section of
BENCHMARKS.md. Parts can run on different days; each JSON says when and on what.

Every denoiser is scored the same way: a keep/drop decision per input hit, on fixed, seeded
validation frames (256 per simulator setting; the default setting's are the main job's), with
the main job's score (harmonic mean of signal retention and noise removal).

* **Oracle** (:mod:`smp_imbalance.datasets.detector_oracle`): each hit's odds under the true
  tracks, thresholded at the best cut: the ceiling of any denoiser.
* **Classical rules** (:mod:`smp_imbalance.models.classical`): neighbour count in scaled
  (row, column, time) space (DBSCAN's core-point test) and the frame's time window; their
  parameters are tuned on separate frames (seed 2000) of the same setting, then scored.
* **Networks**: trained from the main job's recipe (``smp_imbalance/configs/detector_denoise.yaml``: model,
  loss, optimiser, schedule, training frames, steps), changing one thing per contender, all with
  the same budget and the same seeds. Scored on every setting without retraining (the recipe is
  tuned on the default setting only).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import machine_line  # noqa: E402

from smp_imbalance.datasets.detector import DetectorFrames  # noqa: E402
from smp_imbalance.datasets.detector_oracle import best_operating_point, oracle_hits  # noqa: E402
from smp_imbalance.models.classical import NeighbourCountRule, TimeWindowRule  # noqa: E402

NAME = "quality_detector"
BEGIN, END = _report.markers(NAME)
SECTION_TITLE = "## Quality: sparse detector frames"
RESULTS = HERE / "results" / NAME
RECIPE = REPO / "smp_imbalance" / "configs" / "detector_denoise.yaml"
ANCHOR = {"signal_retention": 0.97, "noise_removal": 0.91}  # DeepClean3D, as its authors report
GOAL = {"signal_retention": 0.95, "noise_removal": 0.90}

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "noise x2": {"noise_hits": (360, 440)},
    "half signal": {"signal_hits": (12, 18)},
    "jitter": {"position_jitter": 0.5, "time_jitter": 2.0},
    "more tracks": {"tracks": (3, 5)},
}
"""Simulator settings scored: the main job's validation frames, then harder ones."""

VAL_SEED, TUNE_SEED = 1000, 2000


# ----------------------------------------------------------------------------------------------
# Frames and scoring
# ----------------------------------------------------------------------------------------------


def frames(setting: str, seed: int, count: int) -> DetectorFrames:
    """Fixed validation-style frames of a setting (target: the kept signal hits)."""
    return DetectorFrames(
        num_frames=count, seed=seed, train=False, target="kept", **SETTINGS[setting]
    )


def stack(dataset: DetectorFrames) -> dict[str, torch.Tensor]:
    samples = [dataset[i] for i in range(len(dataset))]
    keys = ("image", "target", "signal_mask", "noise_mask")
    return {k: torch.stack([s[k] for s in samples]) for k in keys}


def hit_score(keep: torch.Tensor, signal: torch.Tensor, noise: torch.Tensor) -> dict[str, float]:
    """Retention, removal, false hits per frame and score of a keep decision (bool, like the
    masks ``(N, 1, H, W)``), pooled over the frames."""
    retention = float((keep & signal).sum()) / max(int(signal.sum()), 1)
    removal = 1.0 - float((keep & noise).sum()) / max(int(noise.sum()), 1)
    total = retention + removal
    return {
        "signal_retention": retention,
        "noise_removal": removal,
        "false_hits_per_frame": float((keep & noise).sum()) / keep.shape[0],
        "score": 2 * retention * removal / total if total else 0.0,
    }


def truth(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(signal, noise)`` as the package's metrics count them (``DetectorHitMetrics``, the main
    job's validation): a true hit is a pixel of a kept signal hit (``target > 0``, also when a
    later noise hit overwrote it); noise is a noise hit's pixel with no signal under it."""
    signal = data["target"] > 0
    return signal, data["noise_mask"] & ~signal


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# ----------------------------------------------------------------------------------------------
# Part 1: the oracle and the classical rules
# ----------------------------------------------------------------------------------------------

NEIGHBOUR_GRID = {
    "radius": (14.0, 20.0, 28.0, 40.0, 56.0, 80.0),
    "time_scale": (0.6, 1.2, 2.4, 4.8),
}
TIME_GRID = {"half_width": (10.0, 20.0, 30.0, 40.0, 60.0, 80.0)}
MAX_COUNT = 100  # count thresholds tried: 0..MAX_COUNT (none of the tuned ones near it)


def tune_rule(
    make: Callable[..., Any], grid: dict[str, Sequence[float]], data: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The grid point and count threshold with the best score on ``data``: the rule's per-hit
    counts are computed once per grid point, then every threshold is tried on them."""
    hits = make().hits(data["image"])
    signal, noise = (m.flatten(1).gather(1, hits.index) & hits.valid for m in truth(data))
    best: dict[str, Any] = {"score": -1.0}
    keys = list(grid)
    for values in np.array(np.meshgrid(*grid.values())).T.reshape(-1, len(keys)):
        params = {k: float(v) for k, v in zip(keys, values, strict=True)}
        counts = make(**params).counts(hits)
        for threshold in range(MAX_COUNT + 1):
            keep = counts >= threshold
            s = hit_score(keep, signal, noise)
            if s["score"] > best["score"]:
                best = {**s, "params": {**params, "threshold": threshold}}
    return best


def score_rule(rule: torch.nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
    with torch.no_grad():
        keep = (rule(data["image"]) > 0) & (data["image"] > 0)
    return hit_score(keep, *truth(data))


def oracle(setting: str, count: int, samples: int) -> dict[str, float]:
    """The oracle's best operating point on the setting's validation frames."""
    ds = frames(setting, VAL_SEED, count)
    hits = [oracle_hits(ds, i, samples) for i in range(len(ds))]
    return best_operating_point(
        *(np.concatenate([getattr(h, k) for h in hits]) for k in ("odds", "signal", "noise"))
    )


def run_rules(count: int, samples: int, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for setting in SETTINGS:
        tune, val = (
            stack(frames(setting, TUNE_SEED, count)),
            stack(frames(setting, VAL_SEED, count)),
        )
        row: dict[str, Any] = {"oracle": oracle(setting, count, samples)}
        for label, make, grid, key in (
            ("neighbour rule", NeighbourCountRule, NEIGHBOUR_GRID, "min_neighbours"),
            ("time-window rule", TimeWindowRule, TIME_GRID, "min_hits"),
        ):
            tuned = tune_rule(make, grid, tune)
            params = {**tuned["params"]}
            params[key] = int(params.pop("threshold"))
            row[label] = {
                **score_rule(make(**params), val),
                "params": params,
                "tuning_score": tuned["score"],
            }
        out[setting] = row
        log(f"{setting}: " + ", ".join(f"{k} {v['score']:.3f}" for k, v in row.items()))
    return out


# ----------------------------------------------------------------------------------------------
# Part 2: networks trained from the recipe
# ----------------------------------------------------------------------------------------------


def load_recipe(path: Path = RECIPE) -> dict[str, Any]:
    """The main job's model, data and trainer settings, as the YAML gives them."""
    config = yaml.safe_load(path.read_text())
    model = config["model"]["init_args"]
    data = config["data"]["init_args"]
    return {
        "model": model,
        "data": data,
        "max_epochs": config["trainer"]["max_epochs"],
        "clip": config["trainer"].get("gradient_clip_val"),
    }


UNET = {
    "arch": "Unet",
    "encoder_name": "resnet18",
    "encoder_depth": 3,
    "decoder_channels": [32, 16, 8],
    "model_kwargs": {},
}
"""The earlier main job's network (an smp UNet on the time-as-value frames)."""


def contenders(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> changes to the recipe's model arguments (``loss="balanced_bce"`` is computed
    here on the gate's logits: per-frame mean BCE over signal hits plus over noise hits)."""
    return {
        "hit graph + acb_mse (main job)": {},
        "hit graph + balanced BCE": {"loss": "balanced_bce", "loss_kwargs": {}},
        "UNet + acb_mse (earlier main job)": dict(UNET),
    }


def balanced_bce(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    signal, noise = batch["signal_mask"].float(), batch["noise_mask"].float()
    bce = F.binary_cross_entropy_with_logits(logits, signal, reduction="none")
    return (bce * signal).sum() / signal.sum().clamp_min(1) + (
        bce * noise
    ).sum() / noise.sum().clamp_min(1)


def build_task(model_args: dict[str, Any]) -> Any:
    from smp_imbalance.training.dense import DenseTask

    args = dict(model_args)
    if args.get("loss") == "balanced_bce":
        args["loss"] = "mse"  # placeholder: the loop computes the balanced BCE itself
    return DenseTask(**args, plot_every_n_epochs=0)


def train_and_score(
    label: str,
    model_args: dict[str, Any],
    recipe: dict[str, Any],
    seed: int,
    steps: int,
    eval_every: int,
    vals: dict[str, dict[str, torch.Tensor]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train one contender for ``steps`` batches of the recipe's training frames (seeded), log the
    default setting's score every ``eval_every`` steps (the learning curve), score every setting
    at the end."""
    from smp_imbalance.training.optim import timm_optimizers

    torch.manual_seed(seed)
    task = build_task(model_args)
    data = recipe["data"]
    train_kwargs = {**data.get("common_kwargs", {}), **data.get("train_kwargs", {})}
    train_kwargs.update(seed=seed, train=True, num_frames=steps * data["batch_size"])
    dataset = DetectorFrames(**train_kwargs)
    loader = torch.utils.data.DataLoader(dataset, batch_size=data["batch_size"], shuffle=False)
    m = model_args
    opt = timm_optimizers(
        task.net,
        optimizer=m["optimizer"],
        lr=m["lr"],
        weight_decay=m["weight_decay"],
        scheduler=m["scheduler"],
        warmup_steps=m["warmup_steps"],
        total_steps=steps,
        min_lr=1e-6,
    )
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    params = [p for p in task.net.parameters() if p.requires_grad]
    curve, started = [], time.perf_counter()
    task.train()
    for step, batch in enumerate(loader, start=1):
        if model_args.get("loss") == "balanced_bce":
            loss = balanced_bce(task.net(batch["image"]), batch)
        else:
            loss = task.loss_fn(task(batch["image"]), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe["clip"]:
            torch.nn.utils.clip_grad_norm_(params, recipe["clip"])
        optimizer.step()
        scheduler.step_update(num_updates=step)
        if step % eval_every == 0 or step == steps:
            s = score_task(task, vals["default"])
            curve.append({"step": step, "seconds": time.perf_counter() - started, **s})
            log(
                f"  {label} seed {seed} step {step}: score {s['score']:.3f} "
                f"({s['signal_retention']:.3f} / {s['noise_removal']:.3f})"
            )
    train_s = time.perf_counter() - started
    scores = {setting: score_task(task, val) for setting, val in vals.items()}
    return {
        "label": label,
        "seed": seed,
        "steps": steps,
        "train_s": train_s,
        "s_per_step": train_s / steps,
        "curve": curve,
        "scores": scores,
    }


@torch.no_grad()
def score_task(task: Any, val: dict[str, torch.Tensor], chunk: int = 64) -> dict[str, float]:
    """The eval-mode decision (a hit is kept where the task's denoised output is non-zero)."""
    was_training = task.training
    task.eval()
    keep = torch.cat(
        [task(val["image"][i : i + chunk]) > 0 for i in range(0, len(val["image"]), chunk)]
    )
    task.train(was_training)
    return hit_score(keep, *truth(val))


def run_networks(
    seeds: Sequence[int],
    steps: int | None,
    count: int,
    only: Sequence[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    recipe = load_recipe()
    steps = steps or recipe_steps(recipe)
    vals = {setting: stack(frames(setting, VAL_SEED, count)) for setting in SETTINGS}
    runs = []
    for label, change in contenders(recipe).items():
        if only and not any(o in label for o in only):
            continue
        model_args = {**copy.deepcopy(recipe["model"]), **change}
        for seed in seeds:
            runs.append(
                train_and_score(
                    label, model_args, recipe, seed, steps, max(steps // 8, 1), vals, log
                )
            )
    return {"steps": steps, "runs": runs}


def recipe_steps(recipe: dict[str, Any]) -> int:
    data = recipe["data"]
    frames_per_epoch = {**data.get("common_kwargs", {}), **data.get("train_kwargs", {})}[
        "num_frames"
    ]
    return recipe["max_epochs"] * frames_per_epoch // data["batch_size"]


def run_checkpoint(
    path: Path, count: int, log: Callable[[str], None], figure: Path | None = None
) -> dict[str, Any]:
    """Score a trained main-job checkpoint (``make demo``'s ``best``/``last.ckpt``) on every
    setting, and draw its hardest default-setting frames (see :func:`save_hard_frames`)."""
    from smp_imbalance.training.dense import DenseTask

    task = DenseTask.load_from_checkpoint(path, map_location="cpu")
    scores = {}
    for setting in SETTINGS:
        scores[setting] = score_task(task, stack(frames(setting, VAL_SEED, count)))
        log(f"checkpoint on {setting}: {scores[setting]['score']:.3f}")
    if figure is not None:
        save_hard_frames(task, figure)
    return {"checkpoint": str(path), "scores": scores}


def save_hard_frames(task: Any, out: Path, count: int = 64, rows: int = 3) -> Path:
    """The figure of the README: the ``rows`` default-setting validation frames (of the first
    ``count``) where the checkpoint errs most (lost signal + kept noise hits), drawn by the
    same four-colour panel the recipe writes each validation."""
    from smp_imbalance.training.plots import save_detector_panel

    task.eval()
    ds = frames("default", VAL_SEED, count)
    batch = {
        k: torch.stack([ds[i][k] for i in range(count)])
        for k in ("image", "signal_mask", "noise_mask")
    }
    with torch.no_grad():
        pred = task(batch["image"])
    kept = pred > 0
    errors = ((batch["signal_mask"] & ~kept) | (batch["noise_mask"] & kept)).flatten(1).sum(1)
    hard = torch.argsort(errors, descending=True, stable=True)[:rows]
    return save_detector_panel({k: v[hard] for k, v in batch.items()}, pred[hard], out)


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _pm(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def _row(label: str, s: dict[str, float]) -> str:
    false_hits = s.get("false_hits_per_frame")
    shown = "–" if false_hits is None else f"{false_hits:.1f}"
    return (
        f"| {label} | {s['signal_retention'] * 100:.1f} | {s['noise_removal'] * 100:.1f} "
        f"| {shown} | {s['score']:.3f} |"
    )


def report(parts: dict[str, dict[str, Any]]) -> str:
    """The BENCHMARKS.md section from the saved parts."""
    lines: list[str] = []
    for part, result in parts.items():
        lines.append(
            f"- part `{part}`: {result['date']}, {result['machine']}; load "
            f"{result['load'][0]:.1f} before, {result['load'][1]:.1f} after; "
            f"{result['wall_s'] / 60:.1f} min; command `{result['command']}`"
        )
    lines.append("")
    rules = parts.get("rules", {}).get("results", {})
    networks = parts.get("networks", {}).get("results", {})
    runs = networks.get("runs", [])
    labels = list(dict.fromkeys(r["label"] for r in runs))
    settings = list(SETTINGS)
    header = "| denoiser | " + " | ".join(settings) + " |"
    lines += [
        "### Score on each simulator setting (mean ± std over seeds for the networks)",
        "",
        "Settings: "
        + "; ".join(
            f"**{k}**: "
            + (", ".join(f"{a}={b}" for a, b in v.items()) or "the main job's validation frames")
            for k, v in SETTINGS.items()
        ),
        "",
        header,
        "|---|" + "---:|" * len(settings),
    ]
    checkpoint = parts.get("checkpoint", {}).get("results")
    if checkpoint:
        lines.append(
            "| **the main job's checkpoint** (`make demo`, 1 run) | "
            + " | ".join(f"**{checkpoint['scores'][s]['score']:.3f}**" for s in settings)
            + " |"
        )
    for label in ("oracle", "neighbour rule", "time-window rule"):
        if rules:
            lines.append(
                f"| {label} | "
                + " | ".join(f"{rules[s][label]['score']:.3f}" for s in settings)
                + " |"
            )
    for label in labels:
        group = [r for r in runs if r["label"] == label]
        lines.append(
            f"| {label} | "
            + " | ".join(_pm([r["scores"][s]["score"] for r in group]) for s in settings)
            + " |"
        )
    if runs:
        lines += [
            "",
            "### Default setting in detail (the main job's validation frames)",
            "",
            "| denoiser | signal retention % | noise removal % | false hits / frame | score |",
            "|---|---:|---:|---:|---:|",
        ]
        lines.append(
            f"| DeepClean3D, as its authors report (their frames) | {ANCHOR['signal_retention'] * 100:.0f} | {ANCHOR['noise_removal'] * 100:.0f} | – | {2 * 0.97 * 0.91 / 1.88:.3f} |"
        )
        if rules:
            for label in ("oracle", "neighbour rule", "time-window rule"):
                lines.append(_row(label, rules["default"][label]))
        for label in labels:
            group = [r["scores"]["default"] for r in runs if r["label"] == label]
            lines.append(
                f"| {label} ({len(group)} seeds) | {_pm([g['signal_retention'] for g in group], 100, 1)} "
                f"| {_pm([g['noise_removal'] for g in group], 100, 1)} "
                f"| {_pm([g['false_hits_per_frame'] for g in group], 1, 1)} | {_pm([g['score'] for g in group])} |"
            )
        lines += [
            "",
            f"Budget: {networks['steps']} steps of the recipe's batches for every network; "
            "seconds per training step (median over seeds): "
            + ", ".join(
                f"{lab} {statistics.median(r['s_per_step'] for r in runs if r['label'] == lab):.2f} s"
                for lab in labels
            )
            + ".",
        ]
        lines += [
            "",
            "Learning curves (default setting, score at each eighth of the budget, mean over seeds):",
            "",
            "| denoiser | " + " | ".join(str(c["step"]) for c in runs[0]["curve"]) + " |",
            "|---|" + "---:|" * len(runs[0]["curve"]),
        ]
        for label in labels:
            group = [r["curve"] for r in runs if r["label"] == label]
            means = [statistics.fmean(c[i]["score"] for c in group) for i in range(len(group[0]))]
            lines.append(f"| {label} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    curve = parts.get("curve", {}).get("results")
    if curve:
        run = curve["runs"][0]
        lines += [
            "",
            f"The main job's recipe trained {curve['steps']} steps (seed {run['seed']}; "
            "the cosine schedule stretched to the longer budget):",
            "",
            "| step | " + " | ".join(str(c["step"]) for c in run["curve"]) + " |",
            "|---|" + "---:|" * len(run["curve"]),
            "| score | " + " | ".join(f"{c['score']:.3f}" for c in run["curve"]) + " |",
        ]
    if rules:
        lines += [
            "",
            "Tuned rule parameters per setting (tuned on seed-2000 frames, scored on the validation frames):",
            "",
        ]
        for s in settings:
            lines.append(
                f"- {s}: neighbour rule {rules[s]['neighbour rule']['params']}, "
                f"time-window rule {rules[s]['time-window rule']['params']}"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--part", choices=("rules", "networks", "curve", "checkpoint"), action="append"
    )
    parser.add_argument("--ckpt", type=Path, help="the checkpoint of --part checkpoint")
    parser.add_argument(
        "--figure", type=Path, help="with --ckpt: write the hard-frames figure here"
    )
    parser.add_argument(
        "--only", action="append", default=[], help="networks whose label contains this"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--quick", action="store_true", help="a smoke run of every part (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--write", action="store_true", help="BENCHMARKS.md from the saved parts")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    parts = args.part or ([] if args.write and not args.quick else ["rules", "networks", "curve"])
    count, samples = (8, 20_000) if args.quick else (256, 200_000)
    seeds = args.seeds[:1] if args.quick else args.seeds
    args.out.mkdir(parents=True, exist_ok=True)
    for part in parts:
        started, load = time.perf_counter(), [_load()]
        if part == "rules":
            results = run_rules(count, samples, print)
        elif part == "networks":
            results = run_networks(seeds, 4 if args.quick else args.steps, count, args.only, print)
        elif part == "checkpoint":
            if args.ckpt is None:
                parser.error("--part checkpoint needs --ckpt PATH")
            results = run_checkpoint(args.ckpt, count, print, args.figure)
        else:
            recipe = load_recipe()
            steps = 4 if args.quick else (args.steps or 4 * recipe_steps(recipe))
            results = run_networks(seeds[:1], steps, count, ["(main job)"], print)
        load.append(_load())
        record = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine_line(),
            "load": load,
            "wall_s": time.perf_counter() - started,
            "command": " ".join(["python benchmarks/quality_detector.py", *(argv or sys.argv[1:])]),
            "results": results,
        }
        (args.out / f"{part}.json").write_text(json.dumps(record, indent=1))
        print(f"{part}: {record['wall_s'] / 60:.1f} min -> {args.out / f'{part}.json'}")
    saved = {
        p: json.loads((args.out / f"{p}.json").read_text())
        for p in ("rules", "checkpoint", "networks", "curve")
        if (args.out / f"{p}.json").exists()
    }
    markdown = report(saved)
    (args.out / "report.md").write_text(markdown)
    if args.write:
        write_section(markdown)


def write_section(markdown: str, path: Path = _report.BENCHMARKS_MD) -> None:
    """Replace this benchmark's section of ``path`` (appended if absent) with ``markdown``."""
    _report.write_section(NAME, markdown, path, SECTION_TITLE)


def _load() -> float:
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


if __name__ == "__main__":
    main()
