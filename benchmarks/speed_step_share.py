"""A loss's cost as a share of a real training step (CPU by default), in one run.

    python benchmarks/speed_step_share.py                 # prints markdown
    python benchmarks/speed_step_share.py --quick         # a smoke run (CI)
    python benchmarks/speed_step_share.py --device cuda   # on a GPU
    python benchmarks/speed_step_share.py --write         # also replace its BENCHMARKS.md block

Two steps, each timed as forward + loss + backward + optimizer step, interleaved with the loss
alone (forward + backward on the step's own prediction):

* the main job: the detector denoising recipe. The model, loss, loss keywords and batch size are
  read from ``detector_denoise.yaml`` (the packaged recipe when there is one, else
  ``configs/``), and one batch is drawn from the recipe's own dataset, so the figure follows the
  recipe when it changes. The step is :class:`~smp_imbalance.training.DenseTask`'s forward and
  loss call;
* a timm ``resnet18`` at batch 64 (4 channels, 28 labels, HPA-like targets), with the multi-label
  recipe's ``crl`` and with ``timm.db`` (class counts from the batch).

Reported: each loss's default (eager) forward + backward as a share of its step, and the opt-in
fused path (``fused=True``) against eager. Timings on a shared machine are noisy: compare the
ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _report  # noqa: E402
from _timing import (  # noqa: E402
    FIRST_CALLS,
    first_calls_s,
    load_line,
    machine_line,
    time_interleaved,
)

from smp_imbalance import create_dataset, create_loss  # noqa: E402

RECIPE = "detector_denoise.yaml"


def recipe_path() -> Path:
    """The packaged recipe if the package ships one, else the repository's ``configs/``."""
    packaged = ROOT / "smp_imbalance" / "configs" / RECIPE
    return packaged if packaged.exists() else ROOT / "configs" / RECIPE


def detector_batch(data: dict) -> dict[str, torch.Tensor]:
    """One training batch from the recipe's own dataset (its size: the recipe's batch size)."""
    args = data["init_args"]
    kwargs = {**args.get("common_kwargs", {}), **args.get("train_kwargs", {})}
    batch_size = int(args.get("batch_size", 16))
    if "num_frames" in kwargs:
        kwargs["num_frames"] = batch_size
    dataset = create_dataset(args["dataset"], **kwargs)
    samples = [dataset[i] for i in range(batch_size)]
    return {
        k: torch.stack([s[k] for s in samples])
        for k, v in samples[0].items()
        if isinstance(v, torch.Tensor)
    }


def _fwd_bwd(loss: Callable[..., torch.Tensor], pred: torch.Tensor, *args, **kwargs):
    leaf = pred.detach().clone().requires_grad_(True)

    def step() -> None:
        leaf.grad = None
        loss(leaf, *args, **kwargs).backward()

    return step


def _share_rows(label: str, rows, step_label: str) -> list[str]:
    by = {r.label: r.median_s for r in rows}
    step = by[step_label]
    lines = [f"| {label}: {step_label} | {step * 1e3:.1f} ms | 100 % |"]
    lines += [
        f"| {label}: {r.label} | {r.median_s * 1e3:.2f} ms | {100 * r.median_s / step:.2f} % |"
        for r in rows
        if r.label != step_label
    ]
    return lines


def detector_part(repeats: int, device: str) -> tuple[list[str], list[str]]:
    from smp_imbalance.training import DenseTask

    config = yaml.safe_load(recipe_path().read_text())
    init = dict(config["model"]["init_args"])
    init.update(metrics="none", plot_every_n_epochs=0)
    task = DenseTask(**init).to(device)
    task.train()
    batch = {k: v.to(device) for k, v in detector_batch(config["data"]).items()}
    mask = next((batch[k] for k in ("valid_mask", "mask") if k in batch), None)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    name, kwargs = init["loss"], dict(init.get("loss_kwargs") or {})
    eager = create_loss(name, **kwargs)
    fused = create_loss(name, **kwargs, fused=True)

    def step() -> None:
        opt.zero_grad()
        task._loss(task(batch["image"]), batch).backward()
        opt.step()

    with torch.no_grad():
        pred = task(batch["image"])
    extra = {} if mask is None else {"valid_mask": mask}
    compile_s = first_calls_s(_fwd_bwd(fused, pred, batch["target"], **extra))
    rows = time_interleaved(
        [
            ("training step", step),
            (f"{name} eager (default)", _fwd_bwd(eager, pred, batch["target"], **extra)),
            (f"{name} fused=True", _fwd_bwd(fused, pred, batch["target"], **extra)),
            ("F.mse_loss", _fwd_bwd(F.mse_loss, pred, batch["target"])),
        ],
        repeats=repeats,
        warmup=2,
    )
    shape = "x".join(map(str, batch["image"].shape))
    model = init["arch"] + (f" {init['encoder_name']}" if "encoder_name" in init else "")
    head = f"detector recipe ({recipe_path().relative_to(ROOT)}: {model}, batch {shape})"
    notes = [f"{name} fused=True one-time compile (first {FIRST_CALLS} calls): {compile_s:.1f} s"]
    return _share_rows(head, rows, "training step"), notes


def resnet_part(repeats: int, device: str, size: int) -> tuple[list[str], list[str]]:
    import timm

    n, c = 64, 28
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=c, in_chans=4).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(n, 4, size, size, device=device)
    prevalence = torch.linspace(0.02, 0.5, c)
    target = (torch.rand(n, c) < prevalence).float().to(device)
    crl = create_loss("crl", alpha=0.5)
    crl_fused = create_loss("crl", alpha=0.5, fused=True)
    db = create_loss("timm.db", class_counts=target.sum(0).tolist(), num_samples=n)

    def step() -> None:
        opt.zero_grad()
        crl(model(x), target).backward()
        opt.step()

    with torch.no_grad():
        logits = model(x)
    compile_s = first_calls_s(_fwd_bwd(crl_fused, logits, target))
    rows = time_interleaved(
        [
            ("training step", step),
            ("crl eager (default)", _fwd_bwd(crl, logits, target)),
            ("crl fused=True", _fwd_bwd(crl_fused, logits, target)),
            ("timm.db", _fwd_bwd(db, logits, target)),
            ("bce", _fwd_bwd(F.binary_cross_entropy_with_logits, logits, target)),
        ],
        repeats=repeats,
        warmup=1,
    )
    head = f"timm resnet18 ({n}x4x{size}x{size}, {c} labels)"
    notes = [f"crl fused=True one-time compile (first {FIRST_CALLS} calls): {compile_s:.1f} s"]
    return _share_rows(head, rows, "training step"), notes


def run(quick: bool = False, device: str = "cpu") -> str:
    torch.set_num_threads(2)
    load = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    repeats = 3 if quick else 11
    det_rows, det_notes = detector_part(repeats, device)
    res_rows, res_notes = resnet_part(3 if quick else 7, device, 64 if quick else 128)
    flags = (" --quick" if quick else "") + (f" --device {device}" if device != "cpu" else "")
    return "\n".join(
        [
            "### Loss cost as a share of a training step",
            "",
            f"Measured {started} on {machine_line(device)}.",
            "",
            load_line(load),
            "",
            f"Command: `python benchmarks/speed_step_share.py{flags}`. Medians of interleaved "
            "rounds; loss rows are forward + backward on the step's own prediction.",
            "",
            "| step / loss | median | share of step |",
            "|---|---:|---:|",
            *det_rows,
            *res_rows,
            "",
            *[f"- {line}" for line in det_notes + res_notes],
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small images")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    markdown = run(quick=args.quick, device=args.device)
    print(markdown)
    if args.write:
        _report.write_section("step_share", markdown)


if __name__ == "__main__":
    main()
