"""The opt-in fused path of the dense losses: the same pure function, through ``torch.compile``.

Every loss is eager by default (``fused=False``): no compilation, no compile workers, its first
call costs what a later one does. Masked losses written eagerly make one pass over memory per
masked op; with ``fused=True`` inductor fuses forward and backward into about one read of the
inputs and one write of the gradient (measured in BENCHMARKS.md). :class:`FusedKernel` wraps a
pure tensor function so that, on the opt-in path:

* it is compiled lazily on first use (a one-time cost of seconds) by the public
  ``torch.compile(fullgraph=True)``, guards and recompiles included;
* where compilation is unavailable or fails, it warns once (:class:`FusedFallbackWarning`) and runs
  the eager function from then on -- the results are the same, only slower;
* inside a caller's own ``torch.compile`` region it runs the eager function, which the caller's
  compiler then fuses with the rest of the graph;
* ``enabled=False`` at the call, or ``SMP_IMBALANCE_COMPILE=0`` in the environment, forces eager.

Only public torch APIs are used here (``torch.compile``, ``torch.compiler.is_compiling``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["COMPILE_ENV", "FusedFallbackWarning", "FusedKernel", "compile_enabled"]

COMPILE_ENV = "SMP_IMBALANCE_COMPILE"


class FusedFallbackWarning(UserWarning):
    """``torch.compile`` was unavailable for a fused loss kernel; a slower path is used."""


def compile_enabled() -> bool:
    """False when the environment variable ``SMP_IMBALANCE_COMPILE`` is ``0``/``false``/``no``."""
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


class FusedKernel:
    """A pure tensor function with a lazily compiled twin. Call it like the function.

    Args:
        fn: the eager function; tensors and Python constants as arguments, tensors as results.
        name: used in the fallback warning.
        dynamic: passed to ``torch.compile`` (``None`` = recompile once, then go dynamic).
        options: passed to ``torch.compile`` (its public ``options=`` dict of backend settings).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        dynamic: bool | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.dynamic = dynamic
        self.options = options
        self._compiled: Callable[..., Any] | None = None
        self._failed: str | None = None

    @property
    def failed(self) -> str | None:
        """Why compilation failed (the kernel then runs eagerly), or ``None``."""
        return self._failed

    def reset(self) -> None:
        """Forget the compiled function and any failure (the next call compiles again)."""
        self._compiled, self._failed = None, None

    def __call__(self, *args: Any, enabled: bool = True, **kwargs: Any) -> Any:
        if (
            not enabled
            or self._failed is not None
            or not compile_enabled()
            or torch.compiler.is_compiling()
        ):
            return self.fn(*args, **kwargs)
        try:
            if self._compiled is None:  # inside the try: an option a torch version lacks raises
                self._compiled = torch.compile(
                    self.fn, dynamic=self.dynamic, fullgraph=True, options=self.options
                )
            return self._compiled(*args, **kwargs)
        except Exception as err:  # inductor/dynamo raise many types; eager gives the same result
            self._failed = _first_line(err)
            warnings.warn(
                f"{self.name}: torch.compile is unavailable here ({self._failed}); using the "
                "eager implementation from now on (same results, slower). Pass fused=False or "
                f"set {COMPILE_ENV}=0 to silence this.",
                FusedFallbackWarning,
                stacklevel=3,
            )
            return self.fn(*args, **kwargs)
