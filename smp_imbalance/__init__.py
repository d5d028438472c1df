"""smp-imbalance: imbalance-aware losses, dataset adapters and training recipes for
segmentation_models_pytorch, timm and albumentations.

The public face is the two registries::

    from smp_imbalance import create_loss, list_losses
    loss = create_loss("acb_mse")          # or "valid_pixel", "sam_mse", "crl", "smp.dice", ...

Importing this package does not import Lightning (training is optional).
"""

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
