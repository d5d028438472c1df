"""The hits of sparse time-of-arrival frames as padded lists, and their neighbour distances."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class HitList:
    """The hits of a batch of ``(N, 1, H, W)`` frames as padded lists of length ``P``.

    ``P`` is the largest hit count in the batch; a frame's hits come first, in pixel order, then
    padding (``valid`` False). ``index`` (N, P) int64 flat pixel indices; ``row``, ``col``,
    ``time_bin`` (N, P) float (``time_bin`` 1..max_time, fractional for a network output);
    ``counts`` (N,) the hit counts; ``shape`` the frame's ``(H, W)``.
    """

    index: torch.Tensor
    valid: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    time_bin: torch.Tensor
    counts: torch.Tensor
    shape: tuple[int, int]

    @property
    def size(self) -> int:
        return self.index.shape[1]

    def scaled_coords(self, radius: float, time_scale: float) -> torch.Tensor:
        """``(row, col, time_scale * time_bin) / radius``, (N, P, 3): the space of the
        neighbour rules, where a distance of 1 is ``radius`` pixels."""
        return torch.stack([self.row, self.col, time_scale * self.time_bin], -1) / radius

    def blocked(self) -> torch.Tensor:
        """(N, P, P) bool: the pairs that are no edge (a hit with itself, anything to padding)."""
        eye = torch.eye(self.size, dtype=torch.bool, device=self.index.device)
        return eye.unsqueeze(0) | ~self.valid.unsqueeze(1)

    def pair_distances(self, coords: torch.Tensor) -> torch.Tensor:
        """(N, P, P) distances between the hits of each frame; ``inf`` to padding and self."""
        # the exact (not matrix-multiply) form: a hit's distances must not depend on the other
        # frames of the batch, or on how many hits there are
        distance = torch.cdist(coords, coords, compute_mode="donot_use_mm_for_euclid_dist")
        return distance.masked_fill(self.blocked(), float("inf"))

    def time_gaps(self) -> torch.Tensor:
        """(N, P, P) ``|time_bin_i - time_bin_j|`` within each frame; ``inf`` to padding and
        self (the statistic of the time-window rule)."""
        time = self.time_bin.unsqueeze(-1)
        return (time - time.transpose(1, 2)).abs().masked_fill(self.blocked(), float("inf"))

    def to_frame(self, values: torch.Tensor, fill: float) -> torch.Tensor:
        """Per-hit ``values`` (N, P) back to ``(N, 1, H, W)`` frames, ``fill`` elsewhere."""
        n = values.shape[0]
        height, width = self.shape
        out = values.new_full((n, height * width), fill)
        out = out.scatter(1, self.index, values.masked_fill(~self.valid, fill))
        return out.view(n, 1, height, width)


def hit_list(x: torch.Tensor, gap: float = 0.1, max_time: int = 1000) -> HitList:
    """The hits of ``x`` ``(N, 1, H, W)`` (normalised times in ``{0} U [gap, 1]``, see
    ``normalize_times``): pixels ``>= gap / 2``, with their time bins
    ``1 + (v - gap) (max_time - 1) / (1 - gap)``.

    One host sync sizes the lists (``P = max hit count``); nothing else depends on the data.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"frames must be (N, 1, H, W), got shape {tuple(x.shape)}")
    n, _, height, width = x.shape
    values = x.flatten(1)
    is_hit = values >= gap / 2
    counts = is_hit.sum(1)
    size = int(counts.max()) if n else 0
    # hits first, in pixel order: a stable sort of the 0/1 flags
    order = torch.argsort(is_hit.to(torch.uint8), dim=1, descending=True, stable=True)
    index = order[:, :size]
    valid = torch.arange(size, device=x.device) < counts.unsqueeze(1)
    row = torch.div(index, width, rounding_mode="floor").to(values.dtype)
    col = (index % width).to(values.dtype)
    time_bin = 1.0 + (values.gather(1, index) - gap) * ((max_time - 1) / (1 - gap))
    return HitList(index, valid, row, col, time_bin, counts, (height, width))
