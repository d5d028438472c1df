"""The `smp-imbalance` command explains itself: verbs, --version, recipes by name, short errors,
and the recipes' fallback to the sample data shipped with the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import smp_imbalance
from smp_imbalance.cli import main as cli_main
from smp_imbalance.recipes import RECIPES_DIR, describe_recipe, list_recipes, resolve_recipe

RECIPES = [
    "detector_denoise",
    "detector_denoise_long",
    "hpa_multilabel",
    "sentinel2_crossband",
    "sentinel2_l1c_to_l2a",
]


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in ("fit", "validate", "test", "predict", "losses", "datasets", "recipes", "preview"):
        assert f"    {verb} " in out, verb


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--version"])
    assert capsys.readouterr().out.strip() == f"smp-imbalance {smp_imbalance.__version__}"


def test_recipes_are_listed_and_resolved(capsys: pytest.CaptureFixture[str]) -> None:
    assert list_recipes() == RECIPES
    assert cli_main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in RECIPES:
        assert name in out
        assert describe_recipe(name)
        assert resolve_recipe(name) == RECIPES_DIR / f"{name}.yaml"
    path = RECIPES_DIR / "detector_denoise.yaml"
    assert resolve_recipe(str(path)) == path  # a path still works


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fitt"], "unknown command 'fitt'. Did you mean 'fit'"),
        (["fit", "--config", "detector_denose"], "Did you mean 'detector_denoise'"),
        (["fit", "--config", "configs/detector_denoise.yaml"], "no such file"),
        (["losses", "acb_mes"], "did you mean 'acb_mse'"),
    ],
)
def test_mistakes_give_a_short_error(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(args) in (1, 2)
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.splitlines()) <= 3 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--model.init_args.loss=acb_mes", "unknown loss name 'acb_mes'. Did you mean 'acb_mse'"),
        ("--data.init_args.dataset=detector_frame", "Did you mean 'detector_frames'"),
    ],
)
def test_unknown_names_in_a_recipe_give_a_short_error(
    override: str, expected: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "smp_imbalance.cli",
            "fit",
            "--config",
            "detector_denoise",
            override,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 6, proc.stderr  # not an 84-line trace


# -- the data module: shipped samples, missing data ------------------------------------------------
def test_no_data_path_means_the_shipped_sample() -> None:
    from smp_imbalance.training import RegistryDataModule

    dm = RegistryDataModule(
        "protein_atlas", common_kwargs={"root": None, "csv_file": None}, folds=5, batch_size=32
    )
    assert dm.sample_note is not None and "sample data shipped with smp-imbalance" in dm.sample_note
    assert (dm.folds, dm.sampler, dm.batch_size) == (None, "random", 4)
    assert len(dm.build("train")) == 4
    dm = RegistryDataModule("masked_bands", common_kwargs={"input_bands": ["B02"], "nodata": 0})
    assert "Sentinel-2" in dm.sample_note
    assert RegistryDataModule("detector_frames").sample_note is None


@pytest.mark.parametrize(
    ("dataset", "kwargs", "expected"),
    [
        ("protein_atlas", {"root": "/no/such/dir", "csv_file": "x.csv"}, r"common_kwargs\.root"),
        ("protein_atlas", {"root": "/no/such/dir"}, r"csv_file is not"),
        (
            "masked_bands",
            {"scenes": [{"inputs": "/no/such/{band}.tif"}]},
            r"common_kwargs\.scenes\[0\]\.inputs: no file matches /no/such/\{band\}\.tif",
        ),
    ],
)
def test_missing_data_fails_naming_the_key(dataset: str, kwargs: dict, expected: str) -> None:
    from smp_imbalance.training import RegistryDataModule

    with pytest.raises((FileNotFoundError, ValueError), match=expected):
        RegistryDataModule(dataset, common_kwargs=kwargs)


def test_import_does_not_import_lightning() -> None:
    code = "import sys, smp_imbalance; smp_imbalance.create_loss('acb_mse'); print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_missing_extra_names_the_pip_command() -> None:
    from smp_imbalance._extras import missing_extra

    err = missing_extra(ModuleNotFoundError("No module named 'rasterio'", name="rasterio"), "x")
    assert 'pip install "smp-imbalance[satellite]"' in str(err)
