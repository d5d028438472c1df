"""Classical denoisers of sparse hit frames: neighbour counts in (row, column, time), no training.

Two rules that any learned denoiser must beat clearly to have a reason to exist:

* :class:`NeighbourCountRule`: keep a hit when at least ``min_neighbours`` other hits of its
  frame lie within ``radius`` in ``(row, column, time_scale * time bin)`` space: DBSCAN's
  core-point test (DBSCAN with ``eps = radius`` and ``min_samples = min_neighbours + 1`` keeps
  these points, plus the border points within reach of one).
* :class:`TimeWindowRule`: keep a hit when at least ``min_hits`` other hits of its frame arrive
  within ``half_width`` time bins, anywhere on the detector: the frame's track time window.

Both return the ``(N, 1, H, W)`` logits of a gate, ``count - threshold + 0.5`` at hits (positive
exactly where the rule keeps the hit) and ``empty_logit`` elsewhere, so they run through
``DenseTask(output_activation="gate")`` and its metrics like the networks, and have no
parameters to train. Tune them on frames apart from the ones they are scored on.
"""

from __future__ import annotations

import torch
from torch import nn

from smp_imbalance.models.hits import HitList, hit_list

__all__ = ["NeighbourCountRule", "TimeWindowRule"]

_TOLERANCE = 1e-4  # float32 rounding of a distance or time difference exactly at the boundary


class _CountRule(nn.Module):
    """A rule ``keep = count >= threshold`` on a per-hit count (subclasses give the count)."""

    def __init__(self, threshold: int, gap: float, max_time: int, empty_logit: float) -> None:
        super().__init__()
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 0:
            raise ValueError(f"the count threshold must be an int >= 0, got {threshold!r}")
        if not 0.0 < gap < 1.0:
            raise ValueError(f"gap must be in (0, 1), got {gap!r}")
        if not isinstance(max_time, int) or isinstance(max_time, bool) or max_time < 2:
            raise ValueError(f"max_time must be an int >= 2, got {max_time!r}")
        self.threshold = threshold
        self.gap = gap
        self.max_time = max_time
        self.empty_logit = empty_logit

    def counts(self, hits: HitList) -> torch.Tensor:  # (N, P)
        raise NotImplementedError

    def hits(self, x: torch.Tensor) -> HitList:
        """The hits of ``x`` with whole time bins (frames hold whole bins: decoding them exactly
        keeps a hit exactly at a boundary inside it)."""
        hits = hit_list(x, self.gap, self.max_time)
        hits.time_bin = hits.time_bin.round()
        return hits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hits = self.hits(x)
        logits = self.counts(hits).to(x.dtype) - self.threshold + 0.5
        return hits.to_frame(logits, self.empty_logit)


class NeighbourCountRule(_CountRule):
    """Keep a hit with at least ``min_neighbours`` other hits within ``radius`` (pixels) in
    ``(row, column, time_scale * time bin)`` space. ``x`` ``(N, 1, H, W)`` normalised frames
    (``gap``/``max_time`` as the dataset's) -> ``(N, 1, H, W)`` gate logits."""

    def __init__(
        self,
        radius: float = 28.0,
        time_scale: float = 1.2,
        min_neighbours: int = 3,
        gap: float = 0.1,
        max_time: int = 1000,
        empty_logit: float = -20.0,
    ) -> None:
        super().__init__(min_neighbours, gap, max_time, empty_logit)
        if not radius > 0 or not time_scale > 0:
            raise ValueError(f"radius and time_scale must be > 0, got {radius}, {time_scale}")
        self.radius = float(radius)
        self.time_scale = float(time_scale)

    def counts(self, hits: HitList) -> torch.Tensor:
        distance = hits.pair_distances(hits.scaled_coords(self.radius, self.time_scale))
        return (distance <= 1.0 + _TOLERANCE).sum(2)


class TimeWindowRule(_CountRule):
    """Keep a hit with at least ``min_hits`` other hits of its frame within ``half_width`` time
    bins, wherever they are. Shapes as :class:`NeighbourCountRule`."""

    def __init__(
        self,
        half_width: float = 20.0,
        min_hits: int = 12,
        gap: float = 0.1,
        max_time: int = 1000,
        empty_logit: float = -20.0,
    ) -> None:
        super().__init__(min_hits, gap, max_time, empty_logit)
        if not half_width > 0:
            raise ValueError(f"half_width must be > 0, got {half_width!r}")
        self.half_width = float(half_width)

    def counts(self, hits: HitList) -> torch.Tensor:
        return (hits.time_gaps() <= self.half_width + _TOLERANCE).sum(2)
