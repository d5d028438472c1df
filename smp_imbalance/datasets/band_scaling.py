"""Scale, normalise and fill batches of raw satellite DNs on the batch's device.

:class:`~smp_imbalance.datasets.satellite.MaskedBands` with ``output="dn"`` serves the recorded
DNs (e.g. uint16) and the validity masks, and leaves the float arithmetic to :class:`BandScaler`,
which runs once per batch wherever the batch is (the GPU, typically). Through the DataLoader's
worker queues and the host-to-device copy, a uint16 input pixel and its validity take 3 bytes
instead of 4 and a target pixel 2 instead of 4; the workers skip the float passes. The result is the sample ``output="scaled"``
would have given, value for value (tested for equality).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

__all__ = ["BandScaler"]


def _stats_buffer(values: Sequence[float] | None, name: str) -> Tensor | None:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"BandScaler: {name} must be finite, got {list(values)!r}")
    return t


class BandScaler(nn.Module):
    """``x = where(valid, (clip((DN + offset) * scale, *clip) - mean) / std, fill_value)`` for the
    image (``offset``, ``mean``, ``std``, validity ``input_valid``) and the target
    (``target_offset``, ``target_mean``, ``target_std``, validity ``valid_mask``), in float32.

    ``forward(batch)`` takes a dict with ``"image"`` (..., C_in, H, W) and ``"target"``
    (..., C_out, H, W) of any real dtype, ``"input_valid"`` (..., C_in, H, W) bool and
    ``"valid_mask"`` (..., 1 or C_out, H, W) bool, batched or not, on any device, and returns a new
    dict with the same entries, ``"image"`` and ``"target"`` replaced by float32 tensors. The
    arithmetic is that of ``MaskedBands(output="scaled")`` step by step (float32, same order), so
    the two give equal values. It never syncs the device; move it to the batch's device once
    (``.to(device)``), otherwise the per-band statistics are copied there on every call.

    Made by :meth:`MaskedBands.batch_transform` from the dataset's own settings.
    """

    def __init__(
        self,
        *,
        scale: float = 1e-4,
        offset: float = 0.0,
        target_offset: float | None = None,
        clip: tuple[float, float] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        fill_value: float = 0.0,
    ) -> None:
        super().__init__()
        self.scale, self.offset = float(scale), float(offset)
        self.target_offset = self.offset if target_offset is None else float(target_offset)
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))
        self.fill_value = float(fill_value)
        stats = {"mean": mean, "std": std, "target_mean": target_mean, "target_std": target_std}
        for name, values in stats.items():
            # registered even when None, so that .to(device) moves whichever exist
            self.register_buffer(name, _stats_buffer(values, name), persistent=False)

    def _convert(
        self, dn: Tensor, valid: Tensor, offset: float, mean: Tensor | None, std: Tensor | None
    ) -> Tensor:
        x = dn.to(torch.float32, copy=True)  # the one new tensor: the rest works in place
        if offset:
            x.add_(offset)
        x.mul_(self.scale)
        if self.clip is not None:
            x.clamp_(self.clip[0], self.clip[1])
        if mean is not None:
            x.sub_(mean.to(x.device).view(-1, 1, 1))
        if std is not None:
            x.div_(std.to(x.device).view(-1, 1, 1))
        return x.masked_fill_(~valid, self.fill_value)

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        for key in ("image", "target", "input_valid", "valid_mask"):
            if key not in batch:
                raise ValueError(
                    f"BandScaler: the batch has no {key!r} (keys: {sorted(batch)}); it scales "
                    "samples of MaskedBands(output='dn')"
                )
        for key in ("input_valid", "valid_mask"):
            if batch[key].dtype != torch.bool:
                raise TypeError(f"BandScaler: {key!r} must be bool, got {batch[key].dtype}")
        image, target = batch["image"], batch["target"]
        if batch["input_valid"].shape != image.shape:
            raise ValueError(
                f"BandScaler: input_valid {tuple(batch['input_valid'].shape)} does not match "
                f"image {tuple(image.shape)}"
            )
        for name, x, stats in (
            ("image", image, (self.mean, self.std)),
            ("target", target, (self.target_mean, self.target_std)),
        ):
            channels = x.shape[-3] if x.dim() >= 3 else None
            for s in stats:
                if s is not None and s.numel() != channels:
                    raise ValueError(
                        f"BandScaler: {name} has shape {tuple(x.shape)} but the statistics are "
                        f"for {s.numel()} band(s)"
                    )
        out = dict(batch)
        out["image"] = self._convert(image, batch["input_valid"], self.offset, self.mean, self.std)
        out["target"] = self._convert(
            target, batch["valid_mask"], self.target_offset, self.target_mean, self.target_std
        )
        return out

    def extra_repr(self) -> str:
        return (
            f"scale={self.scale}, offset={self.offset}, target_offset={self.target_offset}, "
            f"clip={self.clip}, fill_value={self.fill_value}"
        )
