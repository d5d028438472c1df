"""The packaged LightningCLI recipes (``smp_imbalance/configs/*.yaml``), found by name.

``smp-imbalance fit --config detector_denoise`` runs the packaged recipe of that name; a value
that names an existing file (or looks like a path: a ``/`` or a ``.yaml`` suffix) is used as a
path. ``smp-imbalance recipes`` lists the names with the first line of each recipe's header.
"""

from __future__ import annotations

import difflib
from pathlib import Path

__all__ = ["RECIPES_DIR", "describe_recipe", "list_recipes", "resolve_recipe"]

RECIPES_DIR = Path(__file__).resolve().parent / "configs"


def list_recipes() -> list[str]:
    """The packaged recipe names, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def describe_recipe(name: str, width: int = 100) -> str:
    """The first sentence of the recipe's header comment, cut to ``width`` characters."""
    header = []
    for line in resolve_recipe(name).read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    text = " ".join(header)
    end = text.find(". ")
    text = text if end < 0 else text[: end + 1]
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".yaml", ".yml", ".json"))


def resolve_recipe(value: str) -> Path:
    """The YAML file that ``--config value`` means: an existing file, else a packaged recipe name.

    Raises:
        FileNotFoundError: ``value`` looks like a path and there is no such file.
        ValueError: ``value`` is no packaged recipe name (the message lists the close matches).
    """
    path = Path(value)
    if path.is_file():
        return path
    names = list_recipes()
    name = path.stem if path.suffix in (".yaml", ".yml") else value
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    if _looks_like_path(value):
        raise FileNotFoundError(
            f"--config {value}: no such file.{hint} Packaged recipes (run by name): "
            f"{', '.join(names)}"
        )
    if value in names:
        return RECIPES_DIR / f"{value}.yaml"
    raise ValueError(f"--config {value}: unknown recipe name.{hint} Recipes: {', '.join(names)}")
