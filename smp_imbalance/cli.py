"""The ``smp-imbalance`` command.

``smp-imbalance losses [PATTERN]`` and ``smp-imbalance datasets [PATTERN]`` list the registered
names with a one-line description; ``smp-imbalance recipes`` lists the packaged training recipes.
``smp-imbalance preview NAME --kwargs JSON --out PNG`` draws a grid of samples of a dataset;
``smp-imbalance plot loss-vs-hits --out PNG`` draws the ACB-MSE seed's figure (the loss against
the number of hits at a fixed 50 % recovery). Training subcommands (``fit``, ``validate``,
``test``, ``predict``) are handed to the Lightning CLI in :mod:`smp_imbalance.training`, imported
only then (the ``[train]`` extra); their ``--config`` takes a packaged recipe name or a path.

Errors a user can fix (an unknown name, a missing file or extra, a bad value) end the command
with a few lines and exit status 2; ``SMP_IMBALANCE_TRACEBACK=1`` shows the full traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from smp_imbalance import __version__
from smp_imbalance.recipes import describe_recipe, list_recipes, resolve_recipe
from smp_imbalance.registry import DATASET_REGISTRY, LOSS_REGISTRY, Registry

TRAINING_COMMANDS = {
    "fit": "train a model on a recipe: fit --config RECIPE [--trainer.max_epochs N ...]",
    "validate": "validate a checkpoint: validate --config RECIPE --ckpt_path CKPT",
    "test": "test a checkpoint: test --config RECIPE --ckpt_path CKPT",
    "predict": "predict with a checkpoint: predict --config RECIPE --ckpt_path CKPT",
}
OTHER_COMMANDS = ("losses", "datasets", "recipes", "preview", "plot")
PROG = "smp-imbalance"


class UsageError(Exception):
    """A mistake in the command line or the recipe, reported in a few lines (exit status 2)."""


def _print_names(registry: Registry, pattern: str) -> int:
    names = registry.names(pattern)
    if not names:
        close = difflib.get_close_matches(pattern, registry.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        print(f"no {registry.kind} name matches {pattern!r}{hint}", file=sys.stderr)
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


def _print_recipes() -> int:
    names = list_recipes()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {describe_recipe(name)}")
    print(f"\nrun one with: {PROG} fit --config NAME  (a path to your own YAML works too)")
    return 0


def _resolve_configs(args: list[str]) -> list[str]:
    """``--config NAME`` / ``-c NAME`` / ``--config=NAME`` -> the packaged recipe's path."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg in ("--config", "-c") and i + 1 < len(out):
            out[i + 1] = str(resolve_recipe(out[i + 1]))
        elif arg.startswith("--config="):
            out[i] = "--config=" + str(resolve_recipe(arg.split("=", 1)[1]))
    return out


def _short_message(err: BaseException) -> str:
    """The useful lines of an error: jsonargparse wraps a failed instantiation in "Does not
    validate against any of the Union subtypes" with the real error among its ``- `` lines."""
    text = str(err)
    if "Does not validate against any of the Union subtypes" in text:
        reasons = [
            line.strip()[2:]
            for line in text.splitlines()
            if line.strip().startswith("- ") and "Expected a <class 'NoneType'>" not in line
        ]
        if reasons:
            return "\n".join(reasons)
    return text


def _train(args: list[str], real_argv: bool) -> int:
    args = _resolve_configs(args)
    try:
        from smp_imbalance.training.cli import run_cli
    except ModuleNotFoundError as err:
        from smp_imbalance._extras import missing_extra

        raise missing_extra(err, f"{PROG} {args[0]}", "train") from err
    if real_argv:  # LightningCLI (and a DDP launcher re-running it) read sys.argv themselves
        sys.argv = [sys.argv[0], *args]
    run_cli(None if real_argv else args)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Imbalance-aware losses, datasets and training recipes for smp / timm.",
        epilog=f"'{PROG} fit --help' shows every training option (Lightning CLI).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, text in TRAINING_COMMANDS.items():
        sub.add_parser(command, help=text, add_help=False)  # handed to the Lightning CLI
    for command, what in (("losses", "loss"), ("datasets", "dataset")):
        p = sub.add_parser(command, help=f"list the registered {what} names")
        p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'smp.*'")
    sub.add_parser("recipes", help="list the packaged training recipes (fit --config NAME)")
    p = sub.add_parser("preview", help="save a grid of samples of a registered dataset")
    p.add_argument("name", help="a registered dataset name")
    p.add_argument("--kwargs", default="{}", help="JSON object of constructor keywords")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("-n", type=int, default=4, help="number of samples")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("plot", help="figures that do not need a trained model")
    p.add_argument("figure", choices=["loss-vs-hits"])
    p.add_argument("--out", required=True, help="the PNG to write")
    return parser


def _run(args: list[str], real_argv: bool) -> int:
    if args and args[0] in TRAINING_COMMANDS:
        return _train(args, real_argv)
    commands = [*TRAINING_COMMANDS, *OTHER_COMMANDS]
    if args and not args[0].startswith("-") and args[0] not in commands:
        close = difflib.get_close_matches(args[0], commands, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UsageError(f"unknown command {args[0]!r}.{hint} Commands: {', '.join(commands)}")
    ns = _parser().parse_args(args)
    if ns.command == "recipes":
        return _print_recipes()
    if ns.command == "preview":
        return _preview(ns.name, ns.kwargs, Path(ns.out), ns.n, ns.seed)
    if ns.command == "plot":
        from smp_imbalance.plots import save_loss_vs_hits

        print(save_loss_vs_hits(Path(ns.out)))
        return 0
    registry = LOSS_REGISTRY if ns.command == "losses" else DATASET_REGISTRY
    return _print_names(registry, ns.pattern)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(args, real_argv=argv is None)
    except (UsageError, ValueError, TypeError, FileNotFoundError, ImportError) as err:
        if os.environ.get("SMP_IMBALANCE_TRACEBACK") == "1":
            raise
        command = f"{PROG} {args[0]}" if args and not args[0].startswith("-") else PROG
        kind = "" if isinstance(err, UsageError) else f"{type(err).__name__}: "
        print(f"{command}: error: {kind}{_short_message(err)}", file=sys.stderr)
        print("(SMP_IMBALANCE_TRACEBACK=1 shows the full traceback)", file=sys.stderr)
        return 2


def _preview(name: str, kwargs_json: str, out: Path, n: int, seed: int) -> int:
    try:
        kwargs = json.loads(kwargs_json)
    except json.JSONDecodeError as err:
        raise UsageError(f"--kwargs is not valid JSON: {err}") from err
    if not isinstance(kwargs, dict):
        raise UsageError(f"--kwargs must be a JSON object, got {kwargs_json!r}")
    dataset = DATASET_REGISTRY.create(name, **kwargs)
    module = importlib.import_module(type(dataset).__module__)
    preview = getattr(module, "preview_figure", None)
    if preview is None:
        raise UsageError(f"dataset {name!r} has no preview_figure")
    figure = preview(dataset, n=n, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100, bbox_inches="tight")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
