"""smp-imbalance: imbalance-aware losses, dataset adapters and training recipes for
segmentation_models_pytorch, timm and albumentations.

The public face is the two registries::

    from smp_imbalance import create_loss, list_losses
    loss = create_loss("acb_mse")          # or "valid_pixel", "sam_mse", "crl", "smp.dice", ...

In a config that expects a module (LightningCLI ``class_path``, Hydra ``_target_``), name
:class:`smp_imbalance.LossByName` with ``name`` and the loss's keyword arguments.

Importing this package does not import Lightning (training is optional), nor torch until a loss
is built.
"""

from typing import Any

from smp_imbalance.registry import (
    PluginLoadWarning,
    create_dataset,
    create_loss,
    is_dataset,
    is_loss,
    list_datasets,
    list_losses,
    register_dataset,
    register_loss,
)

__version__ = "0.1.0"

__all__ = [
    "LossByName",
    "PluginLoadWarning",
    "__version__",
    "create_dataset",
    "create_loss",
    "is_dataset",
    "is_loss",
    "list_datasets",
    "list_losses",
    "register_dataset",
    "register_loss",
]


def __getattr__(name: str) -> Any:
    # Lazy: LossByName is an nn.Module, and importing this package does not import torch.
    if name == "LossByName":
        from smp_imbalance.losses.by_name import LossByName

        return LossByName
    raise AttributeError(f"module 'smp_imbalance' has no attribute {name!r}")
