"""The ``smp-imbalance`` command.

``smp-imbalance losses [PATTERN]`` and ``smp-imbalance datasets [PATTERN]`` list the registered
names with a one-line description. ``smp-imbalance preview NAME --kwargs JSON --out PNG`` draws a
grid of samples of a dataset; ``smp-imbalance plot loss-vs-hits --out PNG`` draws the ACB-MSE
seed's figure (the loss against the number of hits at a fixed 50 % recovery). Training subcommands (``fit``, ``validate``, ``test``,
``predict``) are handed to the Lightning CLI in :mod:`smp_imbalance.training`, imported only then.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from smp_imbalance.registry import DATASET_REGISTRY, LOSS_REGISTRY, Registry

TRAINING_COMMANDS = ("fit", "validate", "test", "predict")


def _print_names(registry: Registry, pattern: str) -> int:
    names = registry.names(pattern)
    if not names:
        print(f"no {registry.kind} name matches {pattern!r}", file=sys.stderr)
        return 1
    described = []
    for name in names:
        try:
            described.append((name, registry.describe(name)))
        except ValueError:  # a plugin that failed to load: it has warned, skip it
            continue
    width = max(len(name) for name, _ in described)
    for name, text in described:
        print(f"{name:<{width}}  {text}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in TRAINING_COMMANDS:
        try:
            from smp_imbalance.training.cli import run_cli
        except ImportError as err:
            print(f"training needs the training extras ({err})", file=sys.stderr)
            return 2
        # LightningCLI reads sys.argv itself when the command line is the real one
        run_cli(args if argv is not None else None)
        return 0

    parser = argparse.ArgumentParser(
        prog="smp-imbalance",
        description="Imbalance-aware losses, datasets and recipes for smp / timm.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, what in (("losses", "loss"), ("datasets", "dataset")):
        p = sub.add_parser(command, help=f"list the registered {what} names")
        p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'smp.*'")
    p = sub.add_parser("preview", help="save a grid of samples of a registered dataset")
    p.add_argument("name", help="a registered dataset name")
    p.add_argument("--kwargs", default="{}", help="JSON object of constructor keywords")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("-n", type=int, default=4, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("plot", help="figures that do not need a trained model")
    p.add_argument("figure", choices=["loss-vs-hits"])
    p.add_argument("--out", required=True, help="the PNG to write")
    ns = parser.parse_args(args)
    if ns.command == "preview":
        return _preview(ns.name, ns.kwargs, Path(ns.out), ns.n, ns.seed)
    if ns.command == "plot":
        from smp_imbalance.plots import save_loss_vs_hits

        print(save_loss_vs_hits(Path(ns.out)))
        return 0
    registry = LOSS_REGISTRY if ns.command == "losses" else DATASET_REGISTRY
    return _print_names(registry, ns.pattern)


def _preview(name: str, kwargs_json: str, out: Path, n: int, seed: int) -> int:
    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as err:
        raise SystemExit(f"--kwargs is not valid JSON: {err}") from err
    if not isinstance(kwargs, dict):
        raise SystemExit(f"--kwargs must be a JSON object, got {kwargs_json!r}")
    dataset = DATASET_REGISTRY.create(name, **kwargs)
    module = importlib.import_module(type(dataset).__module__)
    preview = getattr(module, "preview_figure", None)
    if preview is None:
        raise SystemExit(f"dataset {name!r} has no preview_figure")
    figure = preview(dataset, n=n, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100, bbox_inches="tight")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
