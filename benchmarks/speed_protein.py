"""Throughput of the ``protein_atlas`` adapter against a bare decode of the same four files.

Data: four synthetic Ids, each made of four REAL 8-bit PNGs of different colours, symlinked into
a temporary folder: by default the 128 x 128 HPA sample shipped with the package
(``smp_imbalance/sample_data/hpa/images``); ``--images DIR`` takes them from another folder of
``{Id}_{colour}.png`` files with at least four of each colour (the numbers in BENCHMARKS.md were
measured on the 512 x 512 originals, sanch7/Human-Protein-Atlas ``data/train_sample/``). All files sit in the page cache after the warm-up, so the numbers are decode +
adapter cost, not disk.

Contenders (one sample per call, cycling over the four Ids, interleaved medians):

* ``bare cv2 decode`` -- four ``cv2.imread(path, cv2.IMREAD_UNCHANGED)``, nothing else (the
  baseline the adapter's overhead is measured against);
* ``adapter uint8`` -- ``ProteinAtlas(dtype="uint8")[i]``: decode, checks, stack to a
  (4, 512, 512) uint8 tensor, (28,) target;
* ``adapter float32`` -- the default: the same plus scaling to float32 in [0, 1];
* ``hand-written float32`` -- the minimal equivalent without checks (decode, ``np.stack``,
  ``/ 255``, ``torch.from_numpy``), for scale;
* ``PIL decode`` -- four ``np.asarray(PIL.Image.open(path))``, for scale;
* ``adapter + val recipe`` -- float32 + :func:`val_transforms` (ToFloat, Normalize), for scale.

A second table times one epoch plan of :class:`MinorityAwareBatchSampler` on the real
``train.csv`` labels (31,072 rows, batch 32; shipped with the package) against iterating torch's
``BatchSampler(RandomSampler)``.

    python benchmarks/speed_protein.py [--quick] [--images DIR]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import BatchSampler, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import machine_line, markdown_table, time_interleaved

from smp_imbalance.datasets.protein import COLOURS, ProteinAtlas
from smp_imbalance.datasets.sampling import MinorityAwareBatchSampler
from smp_imbalance.datasets.transforms.protein import val_transforms
from smp_imbalance.sample_data import hpa_train_labels, sample_path

IMAGES = sample_path("hpa", "images")


def _build_folder(dst: Path, images: Path = IMAGES) -> Path:
    """Four synthetic Ids ``bench-<i>`` whose colour ``c`` is the i-th real image of colour c."""
    by_colour = {c: sorted(images.glob(f"*_{c}.png")) for c in COLOURS}
    if any(len(files) < 4 for files in by_colour.values()):
        raise FileNotFoundError(f"need 4 real images per colour in {images}")
    for i in range(4):
        for colour, files in by_colour.items():
            (dst / f"bench-{i}_{colour}.png").symlink_to(files[i])
    csv_path = dst / "train.csv"
    csv_path.write_text("Id,Target\n" + "".join(f"bench-{i},0 25\n" for i in range(4)))
    return csv_path


def _cycler(fn):
    counter = itertools.cycle(range(4))

    def call() -> None:
        fn(next(counter))

    return call


def run(quick: bool = False, images: Path = IMAGES) -> str:
    """Time the contenders; return a markdown report."""
    torch.set_num_threads(1)
    repeats = 15 if quick else 60
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv_path = _build_folder(root, images)
        ds_u8 = ProteinAtlas(root, csv_path, dtype="uint8")
        ds_f32 = ProteinAtlas(root, csv_path)
        ds_val = ProteinAtlas(root, csv_path, transform=val_transforms())
        paths = [ds_f32.paths(i) for i in range(4)]

        def bare(i: int) -> None:
            for p in paths[i]:
                cv2.imread(str(p), cv2.IMREAD_UNCHANGED)

        def hand(i: int) -> None:
            planes = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths[i]]
            torch.from_numpy(np.stack(planes).astype(np.float32) / 255.0)

        def pil(i: int) -> None:
            for p in paths[i]:
                np.asarray(Image.open(p))

        expected = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths[0]])
        assert np.array_equal(ds_u8[0]["image"].numpy(), expected)
        contenders = [
            ("bare cv2 decode", _cycler(bare)),
            ("adapter uint8", _cycler(ds_u8.__getitem__)),
            ("adapter float32", _cycler(ds_f32.__getitem__)),
            ("hand-written float32", _cycler(hand)),
            ("PIL decode", _cycler(pil)),
            ("adapter + val recipe", _cycler(ds_val.__getitem__)),
        ]
        timings = time_interleaved(contenders, repeats=repeats, warmup=4)

    base = next(t.median_s for t in timings if t.label == "bare cv2 decode")
    lines = [
        "## protein_atlas: adapter throughput "
        f"(one {' x '.join(map(str, expected.shape))} sample per call)",
        "",
        machine_line(),
        "",
        markdown_table("per-sample time", timings, baseline="bare cv2 decode"),
        "",
        "| contender | samples/s | overhead vs bare decode |",
        "|---|---:|---:|",
    ]
    for t in timings:
        lines.append(
            f"| {t.label} | {1 / t.median_s:.0f} | {100 * (t.median_s / base - 1):+.1f} % |"
        )

    labels = hpa_train_labels()  # the real labels of train.csv, shipped with the package
    sampler = MinorityAwareBatchSampler(labels, 32, seed=0)
    plain = BatchSampler(RandomSampler(range(len(labels))), 32, drop_last=False)
    epoch = itertools.count()

    def minority_epoch() -> None:
        sampler.set_epoch(next(epoch))
        for _ in sampler:
            pass

    def plain_epoch() -> None:
        for _ in plain:
            pass

    sampler_timings = time_interleaved(
        [
            ("BatchSampler(RandomSampler)", plain_epoch),
            ("MinorityAwareBatchSampler", minority_epoch),
        ],
        repeats=3 if quick else 7,
        warmup=1,
    )
    lines += [
        "",
        markdown_table(
            f"one epoch of batch indices, 31,072 HPA labels, batch 32 ({len(sampler)} batches)",
            sampler_timings,
            baseline="BatchSampler(RandomSampler)",
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--images", type=Path, default=IMAGES, help="a folder of real {Id}_{colour}.png files"
    )
    args = parser.parse_args()
    print(run(quick=args.quick, images=args.images))


if __name__ == "__main__":
    main()
