"""LossByName: any registered loss as an ``nn.Module`` built from its name, for configs.

A config that expects a module (``class_path``/``init_args`` in LightningCLI and jsonargparse,
``_target_`` in Hydra) cannot call :func:`smp_imbalance.create_loss`, a function; this module is
what it names instead::

    # LightningCLI / jsonargparse (the keywords of a **kwargs go under ``dict_kwargs``)
    loss:
      class_path: smp_imbalance.LossByName
      init_args: {name: smp.dice}
      dict_kwargs: {mode: binary}

    # Hydra
    loss:
      _target_: smp_imbalance.LossByName
      name: smp.dice
      mode: binary
"""

from __future__ import annotations

from typing import Any

from torch import nn

from smp_imbalance.registry import create_loss

__all__ = ["LossByName"]


class LossByName(nn.Module):
    """The registered loss ``name``, built with ``kwargs`` (``create_loss(name, **kwargs)``).

    Calling it calls that loss with the same arguments: a dense loss as
    ``loss(y_pred, y_true, valid_mask=None)``, ``crl`` as ``loss(logits, target, features=None)``.
    The built loss is the submodule ``loss`` (its parameters and buffers move and save with this
    module); ``name`` and ``kwargs`` are kept as given, so a config printed back
    (``--print_config``) reads the same.

    Args:
        name: a registered loss name (``smp_imbalance.list_losses()``), e.g. ``"acb_mse"``,
            ``"smp.dice"``, ``"timm.db"``. Unknown names raise ``ValueError`` listing close ones.
        **kwargs: the keyword arguments of that loss (e.g. ``mode="binary"`` for ``smp.dice``,
            ``class_counts=[...]`` and ``num_samples=N`` for ``timm.db``).
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__()
        if not isinstance(name, str):
            raise TypeError(f"name must be a registered loss name (str), got {type(name).__name__}")
        self.name = name
        self.kwargs = dict(kwargs)
        try:
            self.loss = create_loss(name, **kwargs)
        except TypeError as err:
            raise TypeError(
                f"keyword arguments {sorted(kwargs)} do not fit loss {name!r}: {err}"
            ) from err

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.loss(*args, **kwargs)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"name={self.name!r}" + (f", {args}" if args else "")
