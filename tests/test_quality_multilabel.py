"""benchmarks/quality_multilabel.py: its helpers (exact values) and a --quick smoke run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import REPO_ROOT, load_benchmark, run_quick_benchmark

# training-set counts of HPA train.csv (sample_data/hpa/class_counts.csv, the hpa_multilabel recipe)
HPA_COUNTS = [12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45, 28, 1093, 688, 537,
              1066, 21, 530, 210, 902, 1482, 172, 3777, 802, 2965, 322, 8228, 328, 11]  # fmt: skip


qm = load_benchmark("quality_multilabel")


@pytest.fixture(scope="module")
def targets() -> np.ndarray:
    return qm.load_targets()


def test_shipped_targets_are_the_real_hpa_label_vectors(targets: np.ndarray) -> None:
    assert targets.shape == (31072, 28) and targets.dtype == np.uint8
    assert targets.sum(0).tolist() == HPA_COUNTS
    # labels per image, as in sample_data/hpa/SOURCES.md: 1: 15,126, 2: 12,485, 3: 3,160, 4: 299, 5: 2
    assert np.bincount(targets.sum(1)).tolist() == [0, 15126, 12485, 3160, 299, 2]
    assert targets[:2].nonzero()[1].tolist() == [0, 16, 0, 1, 2, 7]  # "16 0", "7 1 2 0"
    assert qm.TARGETS.stat().st_size < 100_000


def test_every_label_has_its_own_channel_and_pattern() -> None:
    pairs = [(qm.label_channel(c), qm.label_kind(c)) for c in range(28)]
    assert len(set(pairs)) == 28
    assert pairs[0] == (0, 0) and pairs[25] == (1, 6) and pairs[27] == (3, 6)
    assert qm.KIND_NAMES[qm.label_kind(27)] == "puncta"


def test_render_is_deterministic_per_seed_and_label_dependent() -> None:
    labels = np.zeros((3, 28), dtype=np.uint8)
    labels[0, [0, 25]] = 1
    labels[1, 27] = 1
    labels[2, [8, 9]] = 1
    a = qm.render_images(labels, size=32, seed=0)
    assert a.shape == (3, 4, 32, 32) and a.dtype == np.uint8
    assert np.array_equal(a, qm.render_images(labels, size=32, seed=0))
    assert not np.array_equal(a, qm.render_images(labels, size=32, seed=1))
    # switching label 27 (channel 3) of image 1 changes that channel of that image only
    other = labels.copy()
    other[1, 27] = 0
    b = qm.render_images(other, size=32, seed=0)
    changed = [(i, c) for i in range(3) for c in range(4) if not np.array_equal(a[i, c], b[i, c])]
    assert changed == [(1, 3)]
    # the pattern only adds light (clipping and rounding are monotone)
    assert np.all(a[1, 3] >= b[1, 3]) and (a[1, 3].astype(int) - b[1, 3]).sum() > 100
    # a chunk's images depend on that chunk's labels only
    chunked = qm.render_images(labels, size=32, seed=0, chunk=2)
    assert np.array_equal(qm.render_images(labels[:2], size=32, seed=0, chunk=2), chunked[:2])


def test_rare_labels_and_split_keep_rare_positives_in_val_and_test(targets: np.ndarray) -> None:
    assert qm.rare_labels(targets, qm.RARE_THRESHOLD) == [8, 9, 10, 15, 17, 20, 27]
    train, val, test = qm.split_train_val_test(targets)
    assert len(train) + len(val) + len(test) == 31072
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(31072))
    for part, share in ((train, 0.6), (val, 0.2), (test, 0.2)):
        assert abs(len(part) / 31072 - share) < 0.003
        # iterative stratification: every label within a few images of its share
        assert np.all(np.abs(targets[part].sum(0) - share * np.array(HPA_COUNTS)) <= 2)
    for c in (8, 9, 10, 15, 17, 20, 27):
        assert targets[val, c].sum() >= 2 and targets[test, c].sum() >= 2


def test_mean_std_and_paired_difference_exact() -> None:
    assert qm.mean_std([0.25]) == (0.25, 0.0)
    assert qm.mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(1.2909944487358056))
    runs = [
        {"loss": "bce", "sampler": "uniform", "seed": 0, "macro_f1": 0.5},
        {"loss": "bce", "sampler": "uniform", "seed": 1, "macro_f1": 0.25},
        {"loss": "crl.class", "sampler": "uniform", "seed": 1, "macro_f1": 0.75},
        {"loss": "crl.class", "sampler": "uniform", "seed": 0, "macro_f1": 0.5},
        {"loss": "crl.class", "sampler": "uniform", "seed": 2, "macro_f1": 0.0},
    ]
    # seeds 0 and 1 only: differences 0.0 and 0.5
    mean, std, n = qm.paired_difference(
        runs, "macro_f1", ("crl.class", "uniform"), ("bce", "uniform")
    )
    assert (mean, n) == (0.25, 2) and std == pytest.approx(0.125**0.5)
    with pytest.raises(ValueError, match="no seed"):
        qm.paired_difference(runs, "macro_f1", ("bce", "minority"), ("bce", "uniform"))


def _run(loss: str, sampler: str, seed: int, f1: float) -> dict:
    return {
        "loss": loss,
        "sampler": sampler,
        "seed": seed,
        "macro_f1": f1,
        "rare_f1": f1 / 2,
        "map": 1 - f1,
        "val_macro_f1": f1 + 0.125,
        "per_class_f1": [f1] * 28,
    }


def test_summarise_orders_configurations_and_aggregates_over_seeds() -> None:
    runs = [
        _run("crl.class", "minority", 0, 0.5),
        _run("bce", "uniform", 0, 0.25),
        _run("crl.class", "minority", 1, 0.75),
        _run("bce", "uniform", 1, 0.75),
    ]
    rows = qm.summarise(runs)
    assert [(r["loss"], r["sampler"], r["seeds"]) for r in rows] == [
        ("bce", "uniform", 2),
        ("crl.class", "minority", 2),
    ]
    bce, crl = rows
    assert bce["macro_f1"] == (0.5, pytest.approx(0.3535533905932738))
    assert crl["macro_f1"] == (0.625, pytest.approx(0.1767766952966369))
    assert crl["rare_f1"][0] == 0.3125 and crl["map"][0] == 0.375
    assert crl["val_macro_f1"][0] == 0.75
    assert crl["per_class_f1"] == [0.625] * 28
    lines = qm.findings(runs, rows, {})
    assert lines[0].startswith("Best macro F1: `crl.class` + minority sampler, 0.625 ± 0.177")
    assert "(gap +0.125)" in lines[0]


def test_batch_streams_are_deterministic_and_cover_the_rare_label() -> None:
    labels = np.zeros((400, 28), dtype=np.uint8)
    labels[:, 0] = 1
    labels[[5, 50, 300], 27] = 1  # 0.75 % of the images: the one rare label
    uniform = qm.batch_stream("uniform", labels, 80, seed=3)
    epoch = [next(uniform) for _ in range(5)]
    assert sorted(np.concatenate(epoch).tolist()) == list(range(400))
    again = qm.batch_stream("uniform", labels, 80, seed=3)
    assert all(np.array_equal(a, next(again)) for a in epoch)
    minority = qm.batch_stream("minority", labels, 16, seed=0)
    for _ in range(40):  # more than one epoch (400 / 14 fill slots = 29 batches)
        batch = next(minority)
        assert len(batch) == 16 == len(set(batch.tolist()))
        assert labels[batch, 27].sum() >= 2
    with pytest.raises(ValueError, match="sampler"):
        next(qm.batch_stream("weighted", labels, 8, seed=0))


def test_recipe_command_only_overrides_the_recipe() -> None:
    command = qm.recipe_command(qm.QUICK, rare_threshold=None)
    assert command[:4] == ["smp-imbalance", "fit", "--config", "hpa_multilabel"]
    assert "--model.init_args.model_name=test_byobnet" in command
    assert f"--trainer.max_epochs={qm.QUICK.e2e_epochs}" in command
    assert all(a.startswith("--") for a in command[4:])
    assert "rare_threshold" in " ".join(qm.recipe_command(qm.QUICK, rare_threshold=0.05))


def test_write_hpa_layout_reads_back_with_the_package_dataset(tmp_path) -> None:
    from smp_imbalance import create_dataset

    labels = np.zeros((2, 28), dtype=np.uint8)
    labels[0, [0, 25]] = 1
    labels[1, 27] = 1
    images = qm.render_images(labels, size=32, seed=0)
    csv_file = qm.write_hpa_layout(images, labels, ["synthetic-00000", "synthetic-00001"], tmp_path)
    assert csv_file.read_text() == "Id,Target\nsynthetic-00000,0 25\nsynthetic-00001,27\n"
    ds = create_dataset("protein_atlas", root=tmp_path / "train", csv_file=csv_file, dtype="uint8")
    sample = ds[1]
    assert np.array_equal(sample["image"].numpy(), images[1])
    assert sample["target"].nonzero().flatten().tolist() == [27]


@pytest.mark.slow
def test_quick_run_writes_json_table_and_figure(tmp_path) -> None:
    benchmarks_md = (REPO_ROOT / "BENCHMARKS.md").read_text()
    figure = REPO_ROOT / "docs" / "images" / "quality_multilabel.png"
    figure_before = figure.read_bytes() if figure.exists() else None
    run_quick_benchmark("quality_multilabel", tmp_path, timeout=900)
    result = json.loads((tmp_path / "results.json").read_text())
    configs = [(loss, s) for loss in qm.LOSSES for s in qm.SAMPLERS]
    assert [(r["loss"], r["sampler"]) for r in result["runs"]] == configs  # one seed
    assert [(r["loss"], r["sampler"]) for r in result["summary"]] == configs
    for run in result["runs"]:
        for key in ("macro_f1", "rare_f1", "map", "val_macro_f1", "step_ms_median"):
            assert math.isfinite(run[key]), (run["loss"], run["sampler"], key)
        assert len(run["per_class_f1"]) == 28
    assert set(result["step_cost"]) == set(qm.LOSSES)
    assert result["step_cost"]["bce"]["x_bce"] == 1.0
    assert math.isfinite(result["e2e"]["val_f1_macro_tuned"])
    table = (tmp_path / "results.md").read_text()
    for loss, sampler in configs:
        assert f"| `{loss}` | {sampler} |" in table
    assert (tmp_path / "quality_multilabel.png").stat().st_size > 10_000
    assert (tmp_path / "e2e_hpa" / "train.csv").exists()
    assert (REPO_ROOT / "BENCHMARKS.md").read_text() == benchmarks_md  # no --write, no edit
    assert (figure.read_bytes() if figure.exists() else None) == figure_before
