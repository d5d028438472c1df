"""The wheel works for a pip user: built from the repository, installed into a new venv, run from
an empty folder outside the repository: ``--version``, ``recipes``, and every packaged recipe
for one batch (``fast_dev_run``) on the sample data shipped inside the wheel.

Nothing is downloaded: the wheel is built without isolation, installed with ``--no-deps``, and the
new venv sees this environment's packages through a path file (not the editable install of the
repository: the path file adds the folder to ``sys.path`` without running its ``.pth`` hooks).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from smp_imbalance.recipes import list_recipes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp), "."],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp.glob("smp_imbalance-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    return wheel


def _run(venv_bin: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["OMP_NUM_THREADS"] = "2"
    return subprocess.run(
        [str(venv_bin / "smp-imbalance"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_wheel_ships_recipes_and_sample_data(wheel_venv: Path) -> None:
    names = zipfile.ZipFile(wheel_venv).namelist()
    for recipe in list_recipes():
        assert f"smp_imbalance/configs/{recipe}.yaml" in names
    assert "smp_imbalance/sample_data/hpa/train.csv" in names
    assert "smp_imbalance/sample_data/satellite/s2_l1c_19UDP_20170729/preview_B08.jp2" in names
    assert sum(1 for n in names if n.startswith("smp_imbalance/sample_data/hpa/images/")) == 16


def test_installed_wheel_runs_every_recipe_from_an_empty_folder(
    wheel_venv: Path, tmp_path: Path
) -> None:
    venv_bin = wheel_venv.parent / "venv" / "bin"
    where = _run(venv_bin, tmp_path, "--version")
    assert where.returncode == 0 and where.stdout.startswith("smp-imbalance "), where.stderr
    probe = subprocess.run(
        [venv_bin / "python", "-c", "import smp_imbalance; print(smp_imbalance.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not probe.stdout.strip().startswith(str(REPO_ROOT))  # the wheel, not the checkout
    listed = _run(venv_bin, tmp_path, "recipes")
    assert listed.returncode == 0
    for recipe in list_recipes():
        assert recipe in listed.stdout
        run = _run(venv_bin, tmp_path, "fit", "--config", recipe, "--trainer.fast_dev_run=true")
        assert run.returncode == 0, f"{recipe}:\n{run.stderr[-3000:]}"
        assert "final metrics" in run.stdout, recipe
        if not recipe.startswith("detector_denoise"):  # the simulator needs no data
            assert "sample data shipped with smp-imbalance" in run.stdout + run.stderr, recipe
