"""The detector figure: the four hit classes (kept/dropped signal/noise) and the PNG panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smp_imbalance.datasets.detector import DetectorFrames
from smp_imbalance.training.plots import HIT_CLASSES, hit_classes, save_detector_panel

LABELS = [label for label, _, _ in HIT_CLASSES]


def test_hit_classes_by_hand() -> None:
    image = torch.tensor([[[0.0, 0.2, 0.5], [0.9, 0.0, 0.3], [0.4, 0.6, 0.0]]])
    signal = torch.tensor([[[0, 1, 0], [1, 0, 0], [0, 1, 0]]], dtype=torch.bool)
    noise = (image > 0) & ~signal
    # kept where pred > 0: (0,1) signal, (0,2) noise, (2,1) signal; pred at empty pixels ignored
    pred = torch.tensor([[[0.7, 0.2, 0.5], [0.0, 0.0, 0.0], [0.0, 0.6, 0.0]]])
    classes = hit_classes(image, pred, signal, noise)
    assert list(classes) == LABELS
    expected = {
        "noise dropped": [(1, 2), (2, 0)],
        "noise kept (false hit)": [(0, 2)],
        "signal dropped (lost)": [(1, 0)],
        "signal kept": [(0, 1), (2, 1)],
    }
    for label, mask in classes.items():
        assert mask.shape == (3, 3) and mask.dtype == bool
        assert list(zip(*np.nonzero(mask), strict=True)) == expected[label], label
    # a partition of the input hits: disjoint, union = hits
    stacked = np.stack(list(classes.values())).astype(int)
    assert stacked.sum(0).max() == 1
    np.testing.assert_array_equal(stacked.sum(0).astype(bool), (image[0] > 0).numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_hit_classes_partition_dataset_hits(seed: int) -> None:
    ds = DetectorFrames(num_frames=1, seed=seed, train=False)
    s = ds[0]
    rng = np.random.default_rng(seed)
    pred = s["image"] * torch.from_numpy(rng.random(s["image"].shape) < 0.5)
    classes = hit_classes(s["image"], pred, s["signal_mask"], s["noise_mask"])
    stacked = np.stack(list(classes.values())).astype(int)
    assert stacked.sum(0).max() == 1
    np.testing.assert_array_equal(stacked.sum(0).astype(bool), (s["image"][0] > 0).numpy())
    kept = (pred[0] > 0).numpy()
    assert classes["signal kept"].sum() + classes["noise kept (false hit)"].sum() == kept.sum()


def test_save_detector_panel_writes_a_png(tmp_path: Path) -> None:
    ds = DetectorFrames(num_frames=2, seed=4, train=False, target="kept")
    batch = {k: torch.stack([ds[i][k] for i in range(2)]) for k in ds[0]}
    pred = batch["image"] * batch["signal_mask"]  # an oracle denoiser
    pred[0].view(-1)[: 88 * 10] = batch["image"][0].view(-1)[: 88 * 10]  # some false hits
    out = tmp_path / "figures" / "val_epoch000.png"
    returned = save_detector_panel(batch, pred, out)
    assert returned == out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > height  # two panels side by side per row, two rows
    assert height > 400


def test_save_detector_panel_with_empty_prediction(tmp_path: Path) -> None:
    ds = DetectorFrames(num_frames=1, seed=2, train=False)
    batch = {k: ds[0][k].unsqueeze(0) for k in ds[0]}
    out = save_detector_panel(batch, torch.zeros_like(batch["image"]), tmp_path / "p.png")
    assert out.stat().st_size > 10_000
