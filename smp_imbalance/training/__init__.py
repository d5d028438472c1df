"""Training recipes (Lightning). Optional: importing :mod:`smp_imbalance` never imports this.

* :class:`DenseTask` -- an smp model for denoising, band-to-band regression and segmentation;
* :class:`RegistryDataModule` -- any registered dataset by name, with its default recipes;
* ``smp-imbalance fit --config RECIPE`` -- the Lightning CLI (:mod:`.cli`), on a packaged recipe
  (``smp-imbalance recipes``) or a YAML path.

Needs the ``[train]`` extra (``pip install "smp-imbalance[train]"``).
"""

try:  # the [train] extra
    import lightning  # noqa: F401
    import torchmetrics  # noqa: F401
except ModuleNotFoundError as _err:
    from smp_imbalance._extras import missing_extra

    raise missing_extra(_err, "training (smp_imbalance.training)", "train") from _err

from smp_imbalance.training.data import RegistryDataModule
from smp_imbalance.training.dense import DenseTask
from smp_imbalance.training.multilabel import MultiLabelTask

__all__ = ["DenseTask", "MultiLabelTask", "RegistryDataModule"]
