"""HitGraphDenoiser: keep/drop logits for the hits of sparse frames, from a graph over the hits.

A sparse detector frame (``(N, 1, H, W)``, pixel value = normalised time of arrival, 0 = no hit)
holds a few hundred hits in ten thousand pixels. Signal hits lie on thin sheets in
``(row, column, time)`` (the Cherenkov arcs); noise hits are uniform. A convolution over the
image sees two hits close in the image but far apart in time as alike, and a small UNet sees
only a local window. This model instead treats the hits as a point cloud in
``(row, column, time)`` space, the space where the classical neighbour-count rule works:

1. The hits of each frame are gathered into a list ``(N, P, 3)`` of (row, column, time bin),
   ``P`` = the largest hit count in the batch (shorter frames are padded and masked). Each hit
   starts from its position, its time, how busy its frame is (log of the hit count) and the
   classical rules' statistics: its neighbour counts within 0.5, 1 and 2 radii, and the frame's
   hits within +-10, 20 and 40 time bins of it (the track time window). The network starts
   where the rules stop.
2. Each hit is linked to its ``neighbours`` nearest hits under the scaled distance
   ``|(d_row, d_col, time_scale * d_time_bin)| / radius``.
3. ``layers`` edge convolutions (EdgeConv, Wang et al. 2019, "Dynamic Graph CNN"): for a hit
   ``i`` with neighbours ``j``, ``h_i <- LayerNorm(h_i + W_o mean_j ReLU(W_e ReLU(A h_i + B h_j
   + C d_ij)))`` with ``d_ij`` the scaled offset and distance; before each one, a frame-wide
   context (the max over the frame's hits, projected) is added to every hit, so each decision
   sees the frame's track time window too.
4. A per-hit head gives one logit, scattered back to the frame; empty pixels get
   ``empty_logit`` (a gate there multiplies an exact 0 anyway).

The output is a dense ``(N, 1, H, W)`` logit frame, so the model is a drop-in for an smp model
under :class:`smp_imbalance.training.DenseTask` with ``output_activation="gate"`` and any dense
loss (ACB-MSE in the main job). Cost is linear in the hits: ``O(N P k C^2)`` for the edges plus
``O(N P^2)`` for the neighbour search.

One host sync per forward sizes the hit list (``P``); no other data-dependent shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smp_imbalance.models.hits import HitList, hit_list

__all__ = ["HitGraphDenoiser"]


def _check_positive(name: str, value: object, kind: type = int) -> None:
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or not value > 0:  # type: ignore[operator]
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


class _EdgeConv(nn.Module):
    """One residual edge convolution over a fixed neighbour list, messages averaged (``mean``) or
    weighted by a learned softmax over the neighbours (``attention``: a hit can listen to the
    one consistent neighbour among several noise hits)."""

    def __init__(self, channels: int, offset_features: int, attention: bool = False) -> None:
        super().__init__()
        self.score = nn.Linear(channels, 1) if attention else None
        self.centre = nn.Linear(channels, channels)
        self.neighbour = nn.Linear(channels, channels, bias=False)
        self.offset = nn.Linear(offset_features, channels, bias=False)
        self.edge = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)

    def forward(
        self,
        h: torch.Tensor,
        neighbours: torch.Tensor,
        weights: torch.Tensor,
        offsets: torch.Tensor,
    ) -> torch.Tensor:
        """``h`` (N, P, C); ``neighbours`` (N, P, k) indices into P; ``weights`` (N, P, k, 1)
        float, 1 for a real neighbour and 0 for padding, already divided by the real count;
        ``offsets`` (N, P, k, F)."""
        n, p, c = h.shape
        k = neighbours.shape[-1]
        # linear(cat[h_i, h_j, d_ij]) split into per-hit projections: no (N, P, k, 2C) tensor
        h_j = self.neighbour(h).gather(1, neighbours.reshape(n, p * k, 1).expand(-1, -1, c))
        e = F.relu(self.centre(h).unsqueeze(2) + h_j.view(n, p, k, c) + self.offset(offsets))
        m = F.relu(self.edge(e))
        if self.score is not None:
            logits = self.score(m).masked_fill(weights == 0, float("-inf"))
            attention = torch.softmax(logits, dim=2).nan_to_num(0.0)  # a hit with no neighbour
            message = (m * attention).sum(2)
        else:
            message = (m * weights).sum(2)
        return self.norm(h + self.out(message))


class HitGraphDenoiser(nn.Module):
    """Keep/drop logits per hit of sparse time-of-arrival frames (see the module docstring).

    Args:
        in_channels, classes: must both be 1 (one time-of-arrival frame in, one logit frame
            out); taken so that the model is built like an smp model.
        channels: width ``C`` of the hit features.
        neighbours: ``k``, the hits each hit is linked to (fewer in a frame with fewer hits).
        layers: edge convolutions.
        radius: the length scale (pixels) of the neighbour distance and of the offsets fed to
            the network; the classical rule's radius (28) by default.
        time_scale: pixels per time bin in the neighbour distance (1.2, the classical rule's).
        gap: the normalised value of the earliest time bin (``normalize_times``'s ``gap``):
            a pixel is a hit when its value is at least ``gap / 2``.
        max_time: the number of time bins (``normalize_times``'s ``max_time``).
        empty_logit: the logit given to pixels with no hit.
        dynamic: link the hits anew in feature space before every layer after the first
            (Dynamic Graph CNN); ``False`` keeps the (row, column, time) neighbours throughout.
        attention: weight each hit's neighbours by a learned softmax instead of averaging them.

    Shapes: ``x`` ``(N, 1, H, W)`` float in ``{0} U [gap, 1]`` -> ``(N, 1, H, W)`` logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        channels: int = 32,
        neighbours: int = 8,
        layers: int = 3,
        radius: float = 28.0,
        time_scale: float = 1.2,
        gap: float = 0.1,
        max_time: int = 1000,
        empty_logit: float = -20.0,
        dynamic: bool = False,
        attention: bool = False,
    ) -> None:
        super().__init__()
        if in_channels != 1 or classes != 1:
            raise ValueError(
                "HitGraphDenoiser takes one time-of-arrival frame and gives one logit frame: "
                f"in_channels and classes must be 1, got {in_channels} and {classes}"
            )
        for name, value in (("channels", channels), ("neighbours", neighbours), ("layers", layers)):
            _check_positive(name, value)
        for name, value in (("radius", radius), ("time_scale", time_scale)):
            _check_positive(name, value, float)
        if not 0.0 < gap < 1.0:
            raise ValueError(f"gap must be in (0, 1), got {gap!r}")
        if not isinstance(max_time, int) or isinstance(max_time, bool) or max_time < 2:
            raise ValueError(f"max_time must be an int >= 2, got {max_time!r}")
        self.neighbours = int(neighbours)
        self.radius = float(radius)
        self.time_scale = float(time_scale)
        self.gap = float(gap)
        self.max_time = int(max_time)
        self.empty_logit = float(empty_logit)
        self.dynamic = bool(dynamic)
        inputs = 4 + len(self.DENSITY_RADII) + len(self.DENSITY_WINDOWS)
        self.embed = nn.Sequential(
            nn.Linear(inputs, channels), nn.ReLU(), nn.Linear(channels, channels)
        )
        self.context = nn.ModuleList(nn.Linear(channels, channels) for _ in range(layers))
        self.convs = nn.ModuleList(_EdgeConv(channels, 4, attention) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, 1))

    DENSITY_RADII = (0.5, 1.0, 2.0)
    """Neighbour counts within these multiples of ``radius`` are input features of each hit."""
    DENSITY_WINDOWS = (10.0, 20.0, 40.0)
    """Counts of the frame's hits within +- these many time bins are input features too."""

    def _densities(self, hits: HitList, distance: torch.Tensor) -> torch.Tensor:
        """The classical rules' statistics as input features, (N, P, 6): ``log1p`` of the hits
        within 0.5, 1 and 2 radii of each hit, and of the frame's hits within +-10, 20 and 40
        time bins of it (anywhere on the detector: the frame's track time window)."""
        counts = [(distance <= r).sum(2) for r in self.DENSITY_RADII]
        gaps = hits.time_gaps()
        counts += [(gaps <= w).sum(2) for w in self.DENSITY_WINDOWS]
        return torch.log1p(torch.stack(counts, -1).to(distance.dtype)) / 3.0

    @staticmethod
    def _graph(
        hits: HitList, coords: torch.Tensor, distance: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``k`` nearest hits of each hit under ``distance`` (N, P, P; ``inf`` = no edge):
        their indices (N, P, k), the aggregation weights (N, P, k, 1; 1 / real neighbours, 0 for
        padding) and the edge features (N, P, k, 4): the scaled offset ``coords_j - coords_i``
        and its length."""
        n, p, _ = coords.shape
        nearest, neighbours = distance.topk(k, dim=2, largest=False)
        real = torch.isfinite(nearest) & hits.valid.unsqueeze(2)
        weights = (real / real.sum(2, keepdim=True).clamp_min(1)).unsqueeze(-1)
        coords_j = coords.gather(1, neighbours.reshape(n, p * k, 1).expand(-1, -1, 3))
        offsets = coords_j.view(n, p, k, 3) - coords.unsqueeze(2)
        length = offsets.square().sum(-1, keepdim=True).sqrt().clamp_max(10.0)
        edges = torch.cat([offsets, length], -1).masked_fill(~real.unsqueeze(-1), 0.0)
        return neighbours, weights, edges

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hits = hit_list(x, self.gap, self.max_time)
        if hits.size == 0:
            return hits.to_frame(x.new_zeros(x.shape[0], 0), self.empty_logit)
        n, p = hits.index.shape
        coords = hits.scaled_coords(self.radius, self.time_scale)
        k = min(self.neighbours, p)
        distance = hits.pair_distances(coords)
        graph = self._graph(hits, coords, distance, k)

        height, width = hits.shape
        # where the hit is, and how busy its frame is (noise levels differ between frames)
        busy = torch.log1p(hits.counts.to(x.dtype)).unsqueeze(1).expand(n, p) / 8.0
        position = torch.stack(
            [
                hits.row / max(height - 1, 1) * 2 - 1,
                hits.col / max(width - 1, 1) * 2 - 1,
                (hits.time_bin - 1) / (self.max_time - 1) * 2 - 1,
                busy,
            ],
            -1,
        )
        h = self.embed(torch.cat([position, self._densities(hits, distance)], -1))
        padding = ~hits.valid.unsqueeze(-1)
        has_hits = (hits.counts > 0).view(n, 1, 1)  # a frame with no hit gets a zero context
        blocked = hits.blocked()
        for layer, (context, conv) in enumerate(zip(self.context, self.convs, strict=True)):
            if layer and self.dynamic:
                # later layers link each hit to its nearest hits in feature space (DGCNN):
                # hits of one track can meet there though far apart on the detector
                features = torch.cdist(h, h, compute_mode="donot_use_mm_for_euclid_dist")
                features = features.masked_fill(blocked, float("inf"))
                graph = self._graph(hits, coords, features, k)
            frame = h.masked_fill(padding, float("-inf")).amax(1, keepdim=True)
            frame = torch.where(has_hits, frame, torch.zeros_like(frame))
            h = conv(h + context(frame), *graph)
        return hits.to_frame(self.head(h).squeeze(-1), self.empty_logit)
