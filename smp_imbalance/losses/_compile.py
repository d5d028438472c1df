"""The fused path of the dense losses: the same pure function, compiled by inductor.

Masked losses written eagerly make one pass over memory per masked op (4-7x the cost of
``F.mse_loss`` on the CPU); inductor fuses forward and backward into about one read of the inputs
and one write of the gradient. :class:`FusedKernel` wraps a pure tensor function so that:

* it is compiled lazily on first use (a one-time cost of seconds) by ``torch.compile``;
* a *hot* call signature on the CPU (the same shapes, strides, dtypes and constants seen
  ``hot_calls`` times under no-grad, as in a training loop) is compiled once more, straight from
  a ``make_fx`` trace with ``torch._inductor.compile``, and from then on called without
  TorchDynamo. Dynamo's per-call
  work (frame evaluation, guards, wrappers) costs 50-100 us on a 2-core CPU, as much as the
  kernel itself at detector-frame sizes; the direct call costs about 10 us. Cold signatures (a
  last partial batch, a validation size) stay on the ``torch.compile`` graph, which goes
  shape-dynamic after its first recompile;
* where compilation is unavailable or fails, it warns once (:class:`FusedFallbackWarning`) and runs
  the eager function from then on -- the results are the same, only slower;
* inside a caller's own ``torch.compile`` region it runs the eager function, which the caller's
  compiler then fuses with the rest of the graph;
* ``enabled=False`` at the call, or ``SMP_IMBALANCE_COMPILE=0`` in the environment, forces eager.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch

__all__ = ["COMPILE_ENV", "FusedFallbackWarning", "FusedKernel", "compile_enabled"]

COMPILE_ENV = "SMP_IMBALANCE_COMPILE"
HOT_CALLS = 3  # calls of one signature before it gets its own dynamo-free compile
MAX_DIRECT = 4  # dynamo-free signatures per kernel (each is a compile of seconds)
_MAX_COUNTED = 64  # signatures counted towards hot_calls before the counts start over


class FusedFallbackWarning(UserWarning):
    """``torch.compile`` was unavailable for a fused loss kernel; a slower path is used."""


def compile_enabled() -> bool:
    """False when the environment variable ``SMP_IMBALANCE_COMPILE`` is ``0``/``false``/``no``."""
    return os.environ.get(COMPILE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


_SEQUENCES = (tuple, list)
_SLOT = object()  # where a result's tensor goes back, in a kernel's recorded result structure
_CONSTANTS = (type(None), bool, int, float, str, torch.dtype)


def _scan(args: Sequence[Any], tensors: list[torch.Tensor], key: list[Any]) -> bool:
    """Append the tensors of ``args`` (depth first, through tuples and lists) to ``tensors`` and
    what a static compile depends on to ``key``: each tensor's shape, strides, dtype and 16-byte
    alignment, each constant's type and value, the nesting. ``False`` where something rules the
    direct path out: a tensor subclass, a constant other than None/bool/int/float/str/dtype, or
    a tensor off the CPU (the direct path is measured on the CPU only; CUDA calls stay on
    ``torch.compile``, as in the CUDA figures of BENCHMARKS.md). A plain loop: it runs on every
    call, and ``torch.utils._pytree``'s flatten alone costs more than the direct call."""
    for obj in args:
        kind = type(obj)
        if kind is torch.Tensor or kind is torch.nn.Parameter:
            if not obj.is_cpu:
                return False
            tensors.append(obj)
            key += (obj.shape, obj.stride(), obj.dtype, obj.data_ptr() % 16 == 0)
        elif kind in _CONSTANTS:
            key += (kind, obj)  # the type too: 1, 1.0 and True are equal keys
        elif kind in _SEQUENCES:
            key += (kind, len(obj))
            if not _scan(obj, tensors, key):
                return False
        else:
            return False
    return True


def _substitute(obj: Any, new: Callable[[Any], Any]) -> Any:
    """``obj`` with each tensor (or :data:`_SLOT`) ``x`` replaced by ``new(x)``, in
    :func:`_scan`'s order."""
    if isinstance(obj, torch.Tensor) or obj is _SLOT:
        return new(obj)
    if type(obj) in _SEQUENCES:
        return type(obj)(_substitute(item, new) for item in obj)
    return obj


class _DirectKernel:
    """``fn`` traced by ``make_fx`` for one call signature and compiled by
    ``torch._inductor.compile``: called with the tensors of a matching call, it runs the
    compiled code with no dynamo frame and no guard (the caller checked the signature)."""

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        from torch.fx.experimental.proxy_tensor import make_fx

        example: list[torch.Tensor] = []
        _scan(args, example, [])
        example = [t.detach() for t in example]
        results: list[Any] = []

        def flat_fn(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
            it = iter(flat)
            result = fn(*_substitute(args, lambda _: next(it)))
            tensors: list[torch.Tensor] = []
            if not _scan(result if type(result) is tuple else (result,), tensors, []):
                raise TypeError("a fused kernel must return CPU tensors (in tuples or lists)")
            results.append(result)
            return tuple(tensors)

        # The kernels compute in float32 explicitly: trace the maths, not an autocast region.
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            graph = make_fx(flat_fn)(*example)
            self.compiled = torch._inductor.compile(graph, example)
        self.structure = _substitute(results[-1], lambda _: _SLOT)
        self.flat = type(self.structure) is tuple and all(s is _SLOT for s in self.structure)

    def __call__(self, tensors: list[torch.Tensor]) -> Any:
        outputs = self.compiled(*tensors)
        if self.flat:  # the common case, without the walk
            return tuple(outputs)
        it = iter(outputs)
        return _substitute(self.structure, lambda _: next(it))


class FusedKernel:
    """A pure tensor function with a lazily compiled twin. Call it like the function.

    Args:
        fn: the eager function; tensors and hashable Python constants as arguments, tensors as
            results. Only positional tensors and None/bool/int/float/str/dtype constants, nested
            in tuples or lists, are eligible for the direct path; other calls (keyword
            arguments, dicts) always go through ``torch.compile``.
        name: used in the fallback warning.
        dynamic: passed to ``torch.compile`` (``None`` = recompile once, then go dynamic).
        hot_calls: calls of one signature, under no-grad, after which that signature is compiled
            for a dynamo-free call (0 turns the direct path off).
        max_direct: how many signatures get a direct compile; the others stay on
            ``torch.compile``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        dynamic: bool | None = None,
        hot_calls: int = HOT_CALLS,
        max_direct: int = MAX_DIRECT,
    ) -> None:
        self.fn = fn
        self.name = name
        self.dynamic = dynamic
        self.hot_calls = hot_calls
        self.max_direct = max_direct
        self._compiled: Callable[..., Any] | None = None
        self._failed: str | None = None
        self._direct_failed: str | None = None
        self._direct: dict[Hashable, _DirectKernel] = {}
        self._calls: Counter[Hashable] = Counter()

    @property
    def failed(self) -> str | None:
        """Why compilation failed (the kernel then runs eagerly), or ``None``."""
        return self._failed

    @property
    def direct_failed(self) -> str | None:
        """Why the dynamo-free path failed (every call then goes through ``torch.compile``)."""
        return self._direct_failed

    @property
    def direct_signatures(self) -> int:
        """How many call signatures have a dynamo-free compiled kernel."""
        return len(self._direct)

    def reset(self) -> None:
        """Forget every compiled kernel and failure (as ``torch._dynamo.reset`` does for dynamo)."""
        self._compiled, self._failed, self._direct_failed = None, None, None
        self._direct.clear()
        self._calls.clear()

    def __call__(self, *args: Any, enabled: bool = True, **kwargs: Any) -> Any:
        if (
            not enabled
            or self._failed is not None
            or not compile_enabled()
            or torch.compiler.is_compiling()
        ):
            return self.fn(*args, **kwargs)
        if self.hot_calls > 0 and self._direct_failed is None and not torch.is_grad_enabled():
            out = self._call_direct(args, kwargs)
            if out is not None:
                return out
        return self._call_compiled(args, kwargs)

    def _call_direct(self, args: tuple, kwargs: dict) -> Any | None:
        """The direct kernel's result for a hot signature, else ``None`` (counting the call)."""
        tensors: list[torch.Tensor] = []
        parts: list[Any] = [torch.get_num_threads()]  # baked into the CPU code
        if kwargs or not _scan(args, tensors, parts):
            return None
        key = tuple(parts)
        kernel = self._direct.get(key)
        if kernel is None:
            if len(self._direct) >= self.max_direct:
                return None
            if len(self._calls) >= _MAX_COUNTED:  # shapes that never repeat: start over
                self._calls.clear()
            self._calls[key] += 1
            if self._calls[key] < self.hot_calls:
                return None
            try:
                kernel = _DirectKernel(self.fn, args)
            except Exception as err:  # inductor raises many types; the dynamo path still works
                self._direct_failed = _first_line(err)
                warnings.warn(
                    f"{self.name}: the dynamo-free compile failed ({self._direct_failed}); "
                    "staying on torch.compile (same results, more per-call overhead).",
                    FusedFallbackWarning,
                    stacklevel=3,
                )
                return None
            self._direct[key] = kernel
            del self._calls[key]
        try:
            return kernel(tensors)
        except Exception as err:  # a signature this key missed; the dynamo path guards fully
            self._direct_failed = _first_line(err)
            self._direct.clear()
            warnings.warn(
                f"{self.name}: the dynamo-free kernel failed ({self._direct_failed}); staying on "
                "torch.compile from now on.",
                FusedFallbackWarning,
                stacklevel=3,
            )
            return None

    def _call_compiled(self, args: tuple, kwargs: dict) -> Any:
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=self.dynamic, fullgraph=True)
        try:
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
