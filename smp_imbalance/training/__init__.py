"""Training recipes (Lightning). Optional: importing :mod:`smp_imbalance` never imports this.

* :class:`DenseTask` -- an smp model for denoising, band-to-band regression and segmentation;
* :class:`RegistryDataModule` -- any registered dataset by name, with its default recipes;
* ``smp-imbalance fit --config configs/<recipe>.yaml`` -- the Lightning CLI (:mod:`.cli`).
"""

from smp_imbalance.training.data import RegistryDataModule
from smp_imbalance.training.dense import DenseTask
from smp_imbalance.training.multilabel import MultiLabelTask

__all__ = ["DenseTask", "MultiLabelTask", "RegistryDataModule"]
