"""A small name -> factory registry with entry-point discovery, modelled on timm's model registry.

Two registries live here: losses (entry-point group ``smp_imbalance.losses``) and datasets
(``smp_imbalance.datasets``). Names come from two places:

* the ``register_*`` decorators, used by this package's own modules when they are imported;
* entry points declared by any installed distribution, found with :mod:`importlib.metadata`
  (this package declares its own in ``pyproject.toml``; third-party packages add theirs).

Entry points are loaded lazily: listing names imports nothing, ``create_*`` loads one. A plugin
that fails to load warns once and is skipped; it never breaks the other names.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

__all__ = [
    "DATASET_REGISTRY",
    "LOSS_REGISTRY",
    "PluginLoadWarning",
    "Registry",
    "create_dataset",
    "create_loss",
    "is_dataset",
    "is_loss",
    "list_datasets",
    "list_losses",
    "register_dataset",
    "register_loss",
]

F = TypeVar("F", bound=Callable[..., Any])


class PluginLoadWarning(UserWarning):
    """A third-party entry point could not be loaded and was skipped."""


@dataclass
class _Entry:
    name: str
    factory: Callable[..., Any] | None = None
    entry_point: EntryPoint | None = None
    description: str | None = None
    broken: str | None = None  # the load error, once a lazy entry point has failed

    @property
    def origin(self) -> str:
        if self.entry_point is None:
            return "registered in-process"
        dist = getattr(self.entry_point, "dist", None)
        dist_name = getattr(dist, "name", None) or "an unknown distribution"
        return f"entry point {self.entry_point.value!r} of {dist_name}"


def _first_doc_line(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


class Registry:
    """Names mapped to factories (classes or functions returning an object).

    Args:
        kind: what the names stand for, used in messages ("loss", "dataset").
        group: the entry-point group scanned for plugins.
        builtin_modules: modules imported (once, lazily) to run this package's own
            ``register`` decorators before any lookup.
    """

    def __init__(self, kind: str, group: str, builtin_modules: Iterable[str] = ()) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = tuple(builtin_modules)
        self._entries: dict[str, _Entry] = {}
        self._builtins_loaded = False
        self._scanned = False

    # -- registration -------------------------------------------------------------------------
    def register(
        self, fn: F | None = None, *, name: str | None = None, description: str | None = None
    ) -> Any:
        """Register ``fn`` under ``name`` (default: ``fn.__name__``). Usable as a decorator,
        bare (``@register``) or with arguments (``@register(name="x")``)."""

        def decorator(factory: F) -> F:
            if not callable(factory):
                raise TypeError(f"register: {factory!r} is not callable")
            key = name or getattr(factory, "__name__", None)
            if not key or not isinstance(key, str):
                raise ValueError(f"register: no name given for {factory!r}")
            existing = self._entries.get(key)
            if (
                existing is not None
                and existing.factory is not None
                and existing.factory is not factory
            ):
                raise ValueError(
                    f"{self.kind} name {key!r} is already registered to {existing.factory!r}"
                )
            self._entries[key] = _Entry(key, factory=factory, description=description)
            return factory

        if fn is not None:
            return decorator(fn)
        return decorator

    # -- discovery ----------------------------------------------------------------------------
    def _load_builtins(self) -> None:
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)

    def _scan_entry_points(self) -> None:
        if self._scanned:
            return
        self._scanned = True
        for ep in entry_points(group=self.group):
            existing = self._entries.get(ep.name)
            if existing is None:
                self._entries[ep.name] = _Entry(ep.name, entry_point=ep)
                continue
            if existing.factory is not None and ep.value == _qualname(existing.factory):
                continue  # our own pyproject declaring what the decorator already registered
            warnings.warn(
                f"{self.kind} name {ep.name!r} from entry point {ep.value!r} is already taken "
                f"by {existing.origin}; the entry point is ignored",
                PluginLoadWarning,
                stacklevel=3,
            )

    def refresh(self) -> None:
        """Forget discovered entry points and scan again (after installing a plugin at run time)."""
        self._entries = {k: e for k, e in self._entries.items() if e.entry_point is None}
        self._scanned = False

    def _ensure(self) -> None:
        self._load_builtins()
        self._scan_entry_points()

    def _resolve(self, entry: _Entry) -> Callable[..., Any] | None:
        if entry.factory is not None:
            return entry.factory
        if entry.broken is not None:
            return None
        assert entry.entry_point is not None
        try:
            factory = entry.entry_point.load()
            if not callable(factory):
                raise TypeError(f"{factory!r} is not callable")
        except Exception as err:  # a plugin may fail in any way; it must not break the others
            entry.broken = f"{type(err).__name__}: {err}"
            warnings.warn(
                f"skipping {self.kind} {entry.name!r}: {entry.origin} failed to load "
                f"({entry.broken})",
                PluginLoadWarning,
                stacklevel=3,
            )
            return None
        entry.factory = factory
        return factory

    # -- queries ------------------------------------------------------------------------------
    def names(self, pattern: str | Iterable[str] = "*") -> list[str]:
        """Sorted names matching ``pattern`` (fnmatch; several patterns are OR-ed). Plugins that
        failed to load are left out; those not loaded yet are listed without importing them."""
        self._ensure()
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        return sorted(
            name
            for name, entry in self._entries.items()
            if entry.broken is None and any(fnmatch.fnmatchcase(name, p) for p in patterns)
        )

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ensure()
        entry = self._entries.get(name)
        return entry is not None and entry.broken is None

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; ``ValueError`` listing close matches if unknown."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        self._ensure()
        entry = self._entries.get(name)
        factory = self._resolve(entry) if entry is not None else None
        if factory is None:
            raise ValueError(self._unknown_message(name, entry))
        return factory

    def create(self, name: str, **kwargs: Any) -> Any:
        """Build ``name`` with ``kwargs`` passed through to its factory."""
        return self.get(name)(**kwargs)

    def describe(self, name: str) -> str:
        """One line saying what ``name`` is (its declared description or first docstring line)."""
        factory = self.get(name)
        entry = self._entries[name]
        return entry.description or _first_doc_line(factory)

    def _unknown_message(self, name: str, entry: _Entry | None) -> str:
        valid = self.names()
        if entry is not None and entry.broken is not None:
            head = f"{self.kind} {name!r} ({entry.origin}) failed to load: {entry.broken}."
        else:
            head = f"unknown {self.kind} name {name!r}."
        close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        return f"{head}{hint} Valid names: {', '.join(valid)}"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


LOSS_REGISTRY = Registry("loss", "smp_imbalance.losses", builtin_modules=["smp_imbalance.losses"])
DATASET_REGISTRY = Registry(
    "dataset", "smp_imbalance.datasets", builtin_modules=["smp_imbalance.datasets"]
)


def register_loss(
    fn: F | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Decorator registering a loss class or factory under ``name`` (default: its ``__name__``)."""
    return LOSS_REGISTRY.register(fn, name=name, description=description)


def create_loss(name: str, **kwargs: Any) -> Any:
    """Build the loss registered as ``name``; ``kwargs`` go to its constructor.

    >>> loss = create_loss("acb_mse", nonzero_weighting=2.0)
    """
    return LOSS_REGISTRY.create(name, **kwargs)


def list_losses(pattern: str | Iterable[str] = "*") -> list[str]:
    """Sorted loss names matching the fnmatch ``pattern`` (e.g. ``"smp.*"``)."""
    return LOSS_REGISTRY.names(pattern)


def is_loss(name: str) -> bool:
    """Whether ``name`` is a loadable loss name."""
    return name in LOSS_REGISTRY


def register_dataset(
    fn: F | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Decorator registering a dataset class or factory under ``name``."""
    return DATASET_REGISTRY.register(fn, name=name, description=description)


def create_dataset(name: str, **kwargs: Any) -> Any:
    """Build the dataset registered as ``name``; ``kwargs`` go to its constructor."""
    return DATASET_REGISTRY.create(name, **kwargs)


def list_datasets(pattern: str | Iterable[str] = "*") -> list[str]:
    """Sorted dataset names matching the fnmatch ``pattern``."""
    return DATASET_REGISTRY.names(pattern)


def is_dataset(name: str) -> bool:
    """Whether ``name`` is a loadable dataset name."""
    return name in DATASET_REGISTRY
