"""The ``smp-imbalance`` command.

``smp-imbalance losses [PATTERN]`` and ``smp-imbalance datasets [PATTERN]`` list the registered
names with a one-line description. Training subcommands (``fit``, ``validate``, ``test``,
``predict``) are handed to the Lightning CLI in :mod:`smp_imbalance.training`, imported only then.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
        run_cli(args)
        return 0

    parser = argparse.ArgumentParser(
        prog="smp-imbalance",
        description="Imbalance-aware losses, datasets and recipes for smp / timm.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command, what in (("losses", "loss"), ("datasets", "dataset")):
        p = sub.add_parser(command, help=f"list the registered {what} names")
        p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'smp.*'")
    ns = parser.parse_args(args)
    registry = LOSS_REGISTRY if ns.command == "losses" else DATASET_REGISTRY
    return _print_names(registry, ns.pattern)


if __name__ == "__main__":
    raise SystemExit(main())
