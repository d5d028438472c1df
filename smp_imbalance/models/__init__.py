"""Networks of our own that plug into the tasks beside smp's (built by name through ``arch``)."""

from smp_imbalance.models.classical import NeighbourCountRule, TimeWindowRule
from smp_imbalance.models.hit_graph import HitGraphDenoiser

MODELS = {"HitGraphDenoiser": HitGraphDenoiser}
"""``DenseTask(arch=...)`` names that build one of these instead of an smp model."""

__all__ = ["MODELS", "HitGraphDenoiser", "NeighbourCountRule", "TimeWindowRule"]
