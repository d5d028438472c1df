"""Pure tensor functions behind the metrics: per-batch sufficient statistics and their reduction.

Every metric is split the torchmetrics way into ``_*_update`` (one batch -> additive sums and
counts, no host sync: no ``.item()``, ``nonzero``, boolean indexing or branching on values) and
``_*_compute`` (sums -> the value); the public functional form is ``compute(update(batch))``.
The :mod:`~smp_imbalance.metrics` classes keep the sums as states reduced with ``"sum"``.

Nothing counted
    A quantity whose denominator is zero (no valid pixel, no true hit, a label never positive nor
    predicted, ...) is undefined; it evaluates to ``zero_division`` (default ``0.0``, as
    torchmetrics' classification metrics do), never to NaN unless you pass
    ``zero_division=float("nan")``.

Invalid pixels
    Values at invalid pixels are replaced with ``torch.where`` before any arithmetic, so NaN or
    inf there (nodata) never reaches a result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_HIT_THRESHOLD",
    "DEFAULT_TIME_TOLERANCE",
    "DETECTOR_KEYS",
    "cross_fitted_f1",
    "detector_hit_metrics",
    "masked_psnr",
    "masked_rmse",
    "masked_sam",
    "masked_ssim",
    "masked_ssim_map",
    "multilabel_f1",
    "tune_thresholds",
]

# ``detector_sim.normalize_times`` maps time bin t = 1..1000 to 0.1 + 0.9 (t - 1) / 999 and no hit
# to 0: the threshold sits in the middle of the gap (0, 0.1), the tolerance is half a time bin.
DEFAULT_HIT_THRESHOLD = 0.05
DEFAULT_TIME_TOLERANCE = 0.5 * (1.0 - 0.1) / (1000 - 1)

TimeBinFn = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Checks (shapes, dtypes and Python values only: no host sync)
# --------------------------------------------------------------------------------------------


def _check_tensor(name: str, x: object, ndim: int, *, floating: bool = True) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )


def _check_mask(mask: object, like: torch.Tensor, name: str, allow_one_channel: bool) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must have dtype torch.bool, got {mask.dtype}")
    n, c, h, w = like.shape
    allowed = [(n, c, h, w)] + ([(n, 1, h, w)] if allow_one_channel and c != 1 else [])
    if tuple(mask.shape) not in allowed:
        want = " or ".join(str(s) for s in allowed)
        raise ValueError(f"{name} must have shape {want} (like target), got {tuple(mask.shape)}")
    if mask.device != like.device:
        raise ValueError(f"{name} is on {mask.device} but target is on {like.device}")


def _check_images(
    preds: object, target: object, valid_mask: object, num_bands: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate ``(N, C, H, W)`` float images and a bool ``(N, 1 or C, H, W)`` mask; return the
    mask expanded to ``(N, C, H, W)``."""
    preds = _check_tensor("preds", preds, 4)
    target = _check_tensor("target", target, 4)
    _check_same_shape(preds, target, "preds", "target")
    if num_bands is not None and target.shape[1] != num_bands:
        raise ValueError(
            f"expected {num_bands} bands (num_bands), got preds/target of shape "
            f"{tuple(target.shape)}"
        )
    _check_mask(valid_mask, target, "valid_mask", allow_one_channel=True)
    return preds, target, valid_mask.expand(target.shape)  # type: ignore[union-attr]


def _check_zero_division(zero_division: float) -> float:
    if isinstance(zero_division, bool) or not isinstance(zero_division, (int, float)):
        raise TypeError(f"zero_division must be a float, got {type(zero_division).__name__}")
    return float(zero_division)


def _check_data_range(data_range: float) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise TypeError(f"data_range must be a float, got {type(data_range).__name__}")
    if not 0 < data_range < float("inf"):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range!r}")
    return float(data_range)


def _safe_ratio(num: torch.Tensor, den: torch.Tensor, zero_division: float) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else ``zero_division``; float result, no NaN from 0/0."""
    num = num.to(torch.promote_types(num.dtype, torch.float32))
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, 1).to(num.dtype), zero_division)


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32: half inputs are summed in float32."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _pool_bands(
    num: torch.Tensor, den: torch.Tensor, per_band: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band ``(C,)`` sums, or their totals pooled over bands when not ``per_band``."""
    return (num, den) if per_band else (num.sum(-1), den.sum(-1))


# --------------------------------------------------------------------------------------------
# Detector hits
# --------------------------------------------------------------------------------------------

DETECTOR_KEYS = (
    "signal_retention",
    "kept_signal_retention",
    "noise_removal",
    "false_hits_per_frame",
    "time_recovery",
    "mse_hit",
    "mse_nohit",
)


def _check_hit_threshold(hit_threshold: float) -> float:
    if isinstance(hit_threshold, bool) or not isinstance(hit_threshold, (int, float)):
        raise TypeError(f"hit_threshold must be a float, got {type(hit_threshold).__name__}")
    if not 0 <= hit_threshold < 1:
        raise ValueError(f"hit_threshold must be in [0, 1), got {hit_threshold!r}")
    return float(hit_threshold)


def _check_time_tolerance(time_tolerance: float) -> float:
    if isinstance(time_tolerance, bool) or not isinstance(time_tolerance, (int, float)):
        raise TypeError(f"time_tolerance must be a float, got {type(time_tolerance).__name__}")
    if not 0 <= time_tolerance < float("inf"):
        raise ValueError(f"time_tolerance must be a finite number >= 0, got {time_tolerance!r}")
    return float(time_tolerance)


def _detector_update(
    preds: torch.Tensor,
    target: torch.Tensor,
    noise_mask: torch.Tensor | None,
    signal_mask: torch.Tensor | None,
    hit_threshold: float,
    time_tolerance: float,
    to_time_bin: TimeBinFn | None,
) -> dict[str, torch.Tensor]:
    """Counts and squared-error sums of one batch of ``(N, 1, H, W)`` frames (0-dim tensors).

    ``true hit`` = ``target > 0``; ``predicted hit`` = ``preds > hit_threshold``.
    """
    preds = _check_tensor("preds", preds, 4)
    target = _check_tensor("target", target, 4)
    _check_same_shape(preds, target, "preds", "target")
    if target.shape[1] != 1:
        raise ValueError(f"detector frames must have one channel, got shape {tuple(target.shape)}")
    for name, mask in (("noise_mask", noise_mask), ("signal_mask", signal_mask)):
        if mask is not None:
            _check_mask(mask, target, name, allow_one_channel=False)

    true_hit = target > 0
    no_hit = ~true_hit
    pred_hit = preds > hit_threshold  # False at NaN
    if to_time_bin is None:
        same_time = (preds - target).abs() <= time_tolerance
    else:
        same_time = to_time_bin(preds) == to_time_bin(target)
    sq_err = (preds - target).square()
    zero = torch.zeros((), dtype=torch.long, device=target.device)

    def count(m: torch.Tensor) -> torch.Tensor:
        return m.sum(dtype=torch.long)

    kept = true_hit & signal_mask if signal_mask is not None else None
    noise = no_hit & noise_mask if noise_mask is not None else None
    return {
        "true_hits": count(true_hit),
        "retained": count(true_hit & pred_hit),
        "kept_hits": zero if kept is None else count(kept),
        "kept_retained": zero if kept is None else count(kept & pred_hit),
        "noise_hits": zero if noise is None else count(noise),
        "noise_removed": zero if noise is None else count(noise & ~pred_hit),
        "false_hits": count(no_hit & pred_hit),
        "frames": torch.full((), target.shape[0], dtype=torch.long, device=target.device),
        "time_matched": count(true_hit & pred_hit & same_time),
        "sq_err_hit": torch.where(true_hit, sq_err, 0).sum(),
        "no_hits": count(no_hit),
        "sq_err_nohit": torch.where(no_hit, sq_err, 0).sum(),
    }


def _detector_compute(s: dict[str, torch.Tensor], zero_division: float) -> dict[str, torch.Tensor]:
    return {
        "signal_retention": _safe_ratio(s["retained"], s["true_hits"], zero_division),
        "kept_signal_retention": _safe_ratio(s["kept_retained"], s["kept_hits"], zero_division),
        "noise_removal": _safe_ratio(s["noise_removed"], s["noise_hits"], zero_division),
        "false_hits_per_frame": _safe_ratio(s["false_hits"], s["frames"], zero_division),
        "time_recovery": _safe_ratio(s["time_matched"], s["true_hits"], zero_division),
        "mse_hit": _safe_ratio(s["sq_err_hit"], s["true_hits"], zero_division),
        "mse_nohit": _safe_ratio(s["sq_err_nohit"], s["no_hits"], zero_division),
    }


def detector_hit_metrics(
    preds: torch.Tensor,
    target: torch.Tensor,
    *,
    noise_mask: torch.Tensor | None = None,
    signal_mask: torch.Tensor | None = None,
    hit_threshold: float = DEFAULT_HIT_THRESHOLD,
    time_tolerance: float = DEFAULT_TIME_TOLERANCE,
    to_time_bin: TimeBinFn | None = None,
    zero_division: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Hit-level quality of denoised detector frames, pooled over the batch.

    Args:
        preds, target: ``(N, 1, H, W)`` float frames in ``[0, 1]``; 0 = no hit, a hit's value is
            its normalised time. A *true hit* is ``target > 0``, a *predicted hit*
            ``preds > hit_threshold``.
        noise_mask: optional bool ``(N, 1, H, W)``: pixels of the noisy input holding a noise hit.
        signal_mask: optional bool ``(N, 1, H, W)``: pixels of the noisy input holding a kept
            signal hit.
        hit_threshold: default 0.05, the middle of the gap ``(0, 0.1)`` that
            ``datasets.detector_sim.normalize_times`` leaves below the earliest hit.
        time_tolerance: a true hit's time is recovered when it is predicted as a hit and
            ``|preds - target| <= time_tolerance`` (default: half a time bin of the default
            normalisation, 1000 bins, gap 0.1).
        to_time_bin: if given, replaces the tolerance: the time is recovered when
            ``to_time_bin(preds) == to_time_bin(target)`` (e.g.
            ``functools.partial(detector_sim.denormalize_times, gap=..., max_time=...)``).
        zero_division: value of a ratio whose denominator is 0 (see below).

    Returns:
        A dict of 0-dim float tensors (denominator in brackets; ``zero_division`` if it is 0):

        * ``signal_retention``: true hits predicted as hits [true hits];
        * ``kept_signal_retention``: the same on true hits inside ``signal_mask`` [those];
        * ``noise_removal``: pixels with ``noise_mask & (target == 0)`` predicted as no hit [those];
        * ``false_hits_per_frame``: predicted hits where ``target == 0`` [frames, ``N``];
        * ``time_recovery``: true hits predicted as hits with the right time [true hits];
        * ``mse_hit`` / ``mse_nohit``: mean ``(preds - target)^2`` over the true-hit / no-hit
          pixels [their count].
    """
    sums = _detector_update(
        preds,
        target,
        noise_mask,
        signal_mask,
        _check_hit_threshold(hit_threshold),
        _check_time_tolerance(time_tolerance),
        to_time_bin,
    )
    return _detector_compute(sums, _check_zero_division(zero_division))


# --------------------------------------------------------------------------------------------
# Masked PSNR / RMSE
# --------------------------------------------------------------------------------------------


def _squared_error_update(
    preds: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band sum of squared errors over valid pixels ``(C,)`` and valid counts ``(C,)`` int64."""
    dtype = _work_dtype(preds, target)
    sq = torch.where(valid_mask, (preds.to(dtype) - target.to(dtype)).square(), 0)
    return sq.sum(dim=(0, 2, 3)), valid_mask.sum(dim=(0, 2, 3), dtype=torch.long)


def _psnr_compute(
    sse: torch.Tensor, n: torch.Tensor, data_range: float, zero_division: float
) -> torch.Tensor:
    # 10 log10(R^2 / MSE); +inf for a perfect prediction (as torchmetrics).
    mse = _safe_ratio(sse, n, 1.0)
    psnr = 10.0 * torch.log10(data_range**2 / mse)
    return torch.where(n > 0, psnr, zero_division)


def _rmse_compute(sse: torch.Tensor, n: torch.Tensor, zero_division: float) -> torch.Tensor:
    return torch.where(n > 0, _safe_ratio(sse, n, 0.0).sqrt(), zero_division)


def masked_psnr(
    preds: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor,
    data_range: float = 1.0,
    per_band: bool = False,
    zero_division: float = 0.0,
) -> torch.Tensor:
    """PSNR over valid pixels: ``10 log10(data_range^2 / MSE)``.

    ``MSE`` is pooled over all valid pixels (of every band unless ``per_band``), like torchmetrics'
    ``PeakSignalNoiseRatio`` with its default reduction. Shapes: ``preds``, ``target``
    ``(N, C, H, W)`` float; ``valid_mask`` bool ``(N, 1 or C, H, W)``. Returns a 0-dim tensor, or
    ``(C,)`` when ``per_band``; ``+inf`` where the error is 0, ``zero_division`` where nothing is
    valid.
    """
    preds, target, valid = _check_images(preds, target, valid_mask)
    sse, n = _pool_bands(*_squared_error_update(preds, target, valid), per_band)
    return _psnr_compute(sse, n, _check_data_range(data_range), _check_zero_division(zero_division))


def masked_rmse(
    preds: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor,
    per_band: bool = False,
    zero_division: float = 0.0,
) -> torch.Tensor:
    """``sqrt(MSE)`` over valid pixels, ``MSE`` pooled as in :func:`masked_psnr`."""
    preds, target, valid = _check_images(preds, target, valid_mask)
    sse, n = _pool_bands(*_squared_error_update(preds, target, valid), per_band)
    return _rmse_compute(sse, n, _check_zero_division(zero_division))


# --------------------------------------------------------------------------------------------
# Masked SSIM
# --------------------------------------------------------------------------------------------


def _gaussian_1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # As torchmetrics: size int(3.5 sigma + 0.5) * 2 + 1 (11 for sigma = 1.5), normalised to 1.
    size = int(3.5 * sigma + 0.5) * 2 + 1
    dist = torch.arange((1 - size) / 2, (1 + size) / 2, 1.0, dtype=dtype, device=device)
    g = torch.exp(-((dist / sigma) ** 2) / 2)
    return g / g.sum()


def _check_ssim_args(sigma: float, min_valid_fraction: float) -> None:
    if not 0 < sigma < float("inf"):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not 0 < min_valid_fraction <= 1:
        raise ValueError(f"min_valid_fraction must be in (0, 1], got {min_valid_fraction!r}")


def masked_ssim_map(
    preds: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    min_valid_fraction: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel SSIM with Gaussian local statistics taken over valid pixels only.

    With ``g`` the Gaussian window (``sigma``, size ``2 int(3.5 sigma + 0.5) + 1``, sum 1) and ``m``
    the validity mask, every local moment is a valid-weighted window average::

        W = g * m,   mu_x = g * (m x) / W,   s_xx = g * (m x^2) / W - mu_x^2,   s_xy likewise
        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_xx + s_yy + C2))

    (``*`` is the windowed sum, ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``, ``R = data_range``). Image
    borders are reflect-padded -- values and mask -- exactly as torchmetrics does, so with an
    all-valid mask the map equals ``structural_similarity_index_measure(...,
    return_full_image=True)``'s up to float rounding.

    A pixel *counts* when it is valid itself and its window is sufficiently valid:
    ``W >= min_valid_fraction`` (the share of the window's weight on valid pixels; default 0.5).

    Returns ``(ssim_map, counts)``, both ``(N, C, H, W)``: the map (float32, or float64 for
    float64 inputs; 0 where it does not count) and the bool mask of the pixels that count.
    Needs ``H, W > kernel_size // 2`` (reflect padding).
    """
    preds, target, valid = _check_images(preds, target, valid_mask)
    dr = _check_data_range(data_range)
    _check_ssim_args(sigma, min_valid_fraction)
    n, c, h, w = target.shape
    dtype = _work_dtype(preds, target)
    g = _gaussian_1d(sigma, dtype, target.device)
    pad = g.numel() // 2
    if min(h, w) <= pad:
        raise ValueError(
            f"masked SSIM with sigma={sigma} needs H and W > {pad} (reflect padding of the "
            f"{g.numel()}x{g.numel()} window), got images of shape {tuple(target.shape)}"
        )

    m = valid.to(dtype)
    x = torch.where(valid, preds, 0).to(dtype)
    y = torch.where(valid, target, 0).to(dtype)
    # Six maps per band, windowed by two separable 1-D convolutions on the reflect-padded stack.
    stack = torch.stack((m, m * x, m * y, m * x * x, m * y * y, m * x * y), dim=2)
    stack = F.pad(stack.reshape(n, c * 6, h, w), (pad, pad, pad, pad), mode="reflect")
    groups = c * 6
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), groups=groups)
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), groups=groups)
    wsum, sx, sy, sxx, syy, sxy = stack.view(n, c, 6, h, w).unbind(dim=2)

    has_weight = wsum > 0
    inv = torch.where(has_weight, 1 / torch.where(has_weight, wsum, 1), 0)
    mu_x, mu_y = sx * inv, sy * inv
    var_x = (sxx * inv - mu_x.square()).clamp_min(0)
    var_y = (syy * inv - mu_y.square()).clamp_min(0)
    cov = sxy * inv - mu_x * mu_y
    c1, c2 = (k1 * dr) ** 2, (k2 * dr) ** 2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    )
    # The 1e-6 slack absorbs rounding in W (the window sums to 1 only up to float error).
    counts = valid & (wsum >= min_valid_fraction - 1e-6)
    return torch.where(counts, ssim, 0), counts


def _ssim_update(
    preds: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor,
    data_range: float,
    sigma: float,
    k1: float,
    k2: float,
    min_valid_fraction: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-band sum of SSIM over the pixels that count ``(C,)`` and their number ``(C,)``."""
    ssim, counts = masked_ssim_map(
        preds, target, valid_mask, data_range, sigma, k1, k2, min_valid_fraction
    )
    return ssim.sum(dim=(0, 2, 3)), counts.sum(dim=(0, 2, 3), dtype=torch.long)


def masked_ssim(
    preds: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor,
    data_range: float = 1.0,
    per_band: bool = False,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    min_valid_fraction: float = 0.5,
    zero_division: float = 0.0,
) -> torch.Tensor:
    """Mean of :func:`masked_ssim_map` over the pixels that count (pooled over bands unless
    ``per_band``); ``zero_division`` where no pixel counts.

    With an all-valid mask every pixel counts and this is torchmetrics'
    ``structural_similarity_index_measure`` (Gaussian kernel, same ``sigma``, ``k1``, ``k2``).
    """
    s, n = _pool_bands(
        *_ssim_update(preds, target, valid_mask, data_range, sigma, k1, k2, min_valid_fraction),
        per_band,
    )
    return _safe_ratio(s, n, _check_zero_division(zero_division))


# --------------------------------------------------------------------------------------------
# Masked spectral angle
# --------------------------------------------------------------------------------------------


def _sam_update(
    preds: torch.Tensor, target: torch.Tensor, valid_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of spectral angles over pixels valid in every band (0-dim) and their count (int64).

    ``angle = arccos(clamp(<p, t> / (|p| |t|), -1, 1))`` over the band axis, as torchmetrics;
    where exactly one of ``p``, ``t`` is the zero vector the angle is ``pi / 2`` (the cosine
    ``<p, t> / (|p| |t|)`` is taken as 0), where both are, it is 0.
    """
    if target.shape[1] < 2:
        raise ValueError(f"the spectral angle needs >= 2 bands, got shape {tuple(target.shape)}")
    valid = valid_mask.all(dim=1)  # (N, H, W)
    dtype = _work_dtype(preds, target)
    p = torch.where(valid_mask, preds.to(dtype), 0)
    t = torch.where(valid_mask, target.to(dtype), 0)
    dot = (p * t).sum(dim=1)
    denom = p.norm(dim=1) * t.norm(dim=1)
    nonzero = denom > 0
    cos = torch.where(nonzero, dot / torch.where(nonzero, denom, 1), 0)
    angle = cos.clamp(-1, 1).acos()
    both_zero = (p.norm(dim=1) == 0) & (t.norm(dim=1) == 0)
    angle = torch.where(both_zero, 0, angle)
    return torch.where(valid, angle, 0).sum(), valid.sum(dtype=torch.long)


def masked_sam(
    preds: torch.Tensor,
    target: torch.Tensor,
    valid_mask: torch.Tensor,
    zero_division: float = 0.0,
) -> torch.Tensor:
    """Mean spectral angle (radians) over the pixels valid in every band; 0-dim.

    Shapes ``(N, C, H, W)`` with ``C >= 2`` and a bool ``(N, 1 or C, H, W)`` mask. Where no vector
    is zero and every pixel is valid this equals torchmetrics' ``spectral_angle_mapper``; zero
    vectors give ``pi / 2`` (one of the two) or 0 (both) instead of NaN. ``zero_division`` if no
    pixel is valid.
    """
    preds, target, valid = _check_images(preds, target, valid_mask)
    total, n = _sam_update(preds, target, valid)
    return _safe_ratio(total, n, _check_zero_division(zero_division))


# --------------------------------------------------------------------------------------------
# Multi-label F1 and threshold tuning
# --------------------------------------------------------------------------------------------


def _check_multilabel(
    preds: object, target: object, num_labels: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``preds`` float ``(N, C)``; ``target`` ``(N, C)`` multi-hot (bool, integer, or float where
    ``> 0.5`` is positive). Returns ``(preds, target as bool)``."""
    preds = _check_tensor("preds", preds, 2)
    target = _check_tensor("target", target, 2, floating=False)
    _check_same_shape(preds, target, "preds", "target")
    if num_labels is not None and preds.shape[1] != num_labels:
        raise ValueError(
            f"expected {num_labels} labels (num_labels), got preds of shape {tuple(preds.shape)}"
        )
    if target.is_complex():
        raise TypeError(f"target must be real, got dtype {target.dtype}")
    positive = target > 0.5 if target.is_floating_point() else target != 0
    return preds, positive


def _as_thresholds(
    threshold: float | torch.Tensor, num_labels: int, name: str = "threshold"
) -> torch.Tensor:
    """A float, or a ``(C,)`` tensor of per-label thresholds in ``[0, 1]``, as a ``(C,)`` tensor."""
    if isinstance(threshold, torch.Tensor):
        if threshold.shape != (num_labels,):
            raise ValueError(
                f"per-label {name} must have shape ({num_labels},), got {tuple(threshold.shape)}"
            )
        t = threshold.detach().to(torch.float32)
    elif isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        t = torch.full((num_labels,), float(threshold))
    else:
        raise TypeError(f"{name} must be a float or a tensor, got {type(threshold).__name__}")
    if not bool(((t >= 0) & (t <= 1)).all()):  # constructor-time check on a small tensor
        raise ValueError(f"{name} must lie in [0, 1], got {t.tolist()}")
    return t


def _f1_update(
    preds: torch.Tensor, positive: torch.Tensor, threshold: torch.Tensor, from_logits: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tp, fp, fn)``, each ``(C,)`` int64; a label is predicted when ``prob > threshold_c``."""
    probs = preds.sigmoid() if from_logits else preds
    pred = probs > threshold.to(device=probs.device)
    tp = (pred & positive).sum(0, dtype=torch.long)
    fp = (pred & ~positive).sum(0, dtype=torch.long)
    fn = (~pred & positive).sum(0, dtype=torch.long)
    return tp, fp, fn


def _f1_compute(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    average: str | None,
    ignore_absent: bool,
    zero_division: float,
) -> torch.Tensor:
    den = 2 * tp + fp + fn
    f1 = _safe_ratio(2 * tp, den, zero_division)
    if average in (None, "none"):
        return f1
    # A label is absent when it has neither a positive target nor a positive prediction
    # (tp + fp + fn = 0): its F1 is 0 / 0.
    weight = (den > 0).to(f1.dtype) if ignore_absent else torch.ones_like(f1)
    return _safe_ratio((weight * f1).sum(-1), weight.sum(-1), zero_division)


def _check_average(average: str | None) -> str:
    if average not in ("macro", "none", None):
        raise ValueError(f"average must be 'macro' or 'none', got {average!r}")
    return "none" if average is None else average


def multilabel_f1(
    preds: torch.Tensor,
    target: torch.Tensor,
    threshold: float | torch.Tensor = 0.5,
    average: str | None = "macro",
    ignore_absent: bool = False,
    from_logits: bool = False,
    zero_division: float = 0.0,
) -> torch.Tensor:
    """F1 per label ``2 TP / (2 TP + FP + FN)`` and its macro average.

    Args:
        preds: ``(N, C)`` probabilities, or logits with ``from_logits=True`` (sigmoid first; no
            value-based guessing).
        target: ``(N, C)`` multi-hot: bool, integer (``!= 0``) or float (``> 0.5``) positives.
        threshold: a float or a ``(C,)`` tensor; label ``c`` is predicted when
            ``prob > threshold[c]`` (strictly, as torchmetrics).
        average: ``"macro"`` (0-dim) or ``"none"`` (``(C,)``).
        ignore_absent: the macro mean skips *absent* labels -- no positive target and no positive
            prediction, so their F1 is 0 / 0. With ``False`` (default; the HPA competition's macro
            F1 over all 28 labels, and torchmetrics' ``MultilabelF1Score``) they count as
            ``zero_division``.
        zero_division: F1 of an absent label (default 0, as torchmetrics and scikit-learn), and the
            macro value when every label is ignored.
    """
    preds, positive = _check_multilabel(preds, target)
    thr = _as_thresholds(threshold, preds.shape[1])
    tp, fp, fn = _f1_update(preds, positive, thr, from_logits)
    return _f1_compute(
        tp, fp, fn, _check_average(average), ignore_absent, _check_zero_division(zero_division)
    )


def tune_thresholds(
    probs: torch.Tensor,
    targets: torch.Tensor,
    grid: torch.Tensor | Sequence[float] | None = None,
    from_logits: bool = False,
    max_elements: int = 2**26,
) -> torch.Tensor:
    """Per-label thresholds ``(C,)`` from ``grid`` that maximise each label's F1 on ``probs``.

    Every grid value is scored at once: ``probs[None] > grid[:, None, None]`` gives ``(G, N, C)``
    predictions, summed over ``N`` into ``(G, C)`` TP/FP/FN (in chunks of the grid so that at most
    ``max_elements`` booleans are alive). A label with no positive target scores 1 where nothing
    is predicted (0 / 0 = perfect: nothing to find, nothing claimed) and 0 otherwise. Ties go to
    the smallest threshold. ``grid`` defaults to ``0.01, 0.02, ..., 0.99``.
    """
    probs, positive = _check_multilabel(probs, targets)
    if from_logits:
        probs = probs.sigmoid()
    if grid is None:
        grid_t = torch.linspace(0.01, 0.99, 99, dtype=probs.dtype, device=probs.device)
    else:
        grid_t = torch.as_tensor(grid, dtype=probs.dtype, device=probs.device)
        if grid_t.dim() != 1 or grid_t.numel() == 0:
            raise ValueError(
                f"grid must be a non-empty 1-D sequence, got shape {tuple(grid_t.shape)}"
            )
    n, c = probs.shape
    step = max(1, max_elements // max(1, n * c))
    scores = []
    for g in grid_t.split(step):
        pred = probs.unsqueeze(0) > g.view(-1, 1, 1)  # (G', N, C)
        tp = (pred & positive).sum(1, dtype=torch.long)
        fp = (pred & ~positive).sum(1, dtype=torch.long)
        fn = (~pred & positive).sum(1, dtype=torch.long)
        scores.append(_safe_ratio(2 * tp, 2 * tp + fp + fn, 1.0))
    best = torch.cat(scores).argmax(dim=0)  # first maximum: the smallest threshold among ties
    return grid_t[best]


def cross_fitted_f1(
    probs: torch.Tensor,
    targets: torch.Tensor,
    folds: int = 2,
    seed: int = 0,
    average: str | None = "macro",
    grid: torch.Tensor | Sequence[float] | None = None,
) -> torch.Tensor:
    """F1 at tuned per-label thresholds, each row scored with thresholds tuned on the other rows.

    Tuning thresholds and scoring on the same rows overstates F1 (by a few points on HPA-like
    data, most on the rare labels, where one threshold can fit a handful of positives exactly).
    Here the rows are sorted by their label vector (then by their probabilities), the sorted list
    is permuted with a generator seeded with ``seed`` and cut into ``folds`` groups; each group's
    rows are predicted with :func:`tune_thresholds` of the other groups, and TP/FP/FN are pooled
    over all rows before ``2 TP / (2 TP + FP + FN)``, so a label with few positives is still
    scored on all of them. Sorting first makes the split depend on the rows, not on their order
    (DDP's gathered order gives the one-process value), and every epoch puts the same label
    vectors in the same group (the probabilities only order rows with equal labels).

    Args:
        probs, targets: ``(N, C)`` probabilities and multi-hot targets, ``N >= folds``.
        folds: number of groups (>= 2).
        seed: seed of the row permutation.
        average: ``"macro"`` (0-dim) or ``"none"`` (``(C,)``).
        grid: candidate thresholds, as in :func:`tune_thresholds`.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    probs, positive = _check_multilabel(probs, targets)
    average = _check_average(average)
    n = probs.shape[0]
    if n < folds:
        raise ValueError(f"cross_fitted_f1 needs at least folds={folds} rows, got {n}")
    gen = torch.Generator().manual_seed(seed)
    projection = torch.randn(2, probs.shape[1], generator=gen, dtype=torch.float64)
    projection = projection.to(probs.device)
    by_probs = torch.argsort(probs.double() @ projection[0], stable=True)
    by_labels = torch.argsort((positive.double() @ projection[1])[by_probs], stable=True)
    canonical = by_probs[by_labels]
    order = canonical[torch.randperm(n, generator=gen).to(probs.device)]
    tp = fp = fn = torch.zeros(probs.shape[1], dtype=torch.long, device=probs.device)
    groups = order.tensor_split(folds)
    for i, held_out in enumerate(groups):
        rest = torch.cat(groups[:i] + groups[i + 1 :])
        thresholds = tune_thresholds(probs[rest], positive[rest], grid=grid)
        counts = _f1_update(probs[held_out], positive[held_out], thresholds, from_logits=False)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    return _f1_compute(tp, fp, fn, average, ignore_absent=False, zero_division=0.0)
