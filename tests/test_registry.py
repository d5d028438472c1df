"""The loss/dataset registries: names, lookup errors, and plugin discovery through real entry points."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import smp_imbalance
from smp_imbalance.cli import main as cli_main
from smp_imbalance.registry import LOSS_REGISTRY, PluginLoadWarning, Registry

OUR_LOSSES = ["acb_mse", "crl", "sam", "sam_mse", "valid_pixel"]
BASELINES = [
    "bce",
    "l1",
    "mse",
    "smp.dice",
    "smp.focal",
    "smp.jaccard",
    "smp.lovasz",
    "smp.tversky",
    "timm.asl",
]


def test_fixed_names_are_registered() -> None:
    names = smp_imbalance.list_losses()
    for name in OUR_LOSSES + BASELINES:
        assert name in names
        assert smp_imbalance.is_loss(name)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (
            "smp.*",
            [
                "smp.dice",
                "smp.focal",
                "smp.jaccard",
                "smp.lovasz",
                "smp.mcc",
                "smp.soft_bce",
                "smp.soft_ce",
                "smp.tversky",
            ],
        ),
        ("sam*", ["sam", "sam_mse"]),
        (["acb_*", "crl"], ["acb_mse", "crl"]),
        ("nothing*", []),
    ],
)
def test_list_losses_fnmatch(pattern: str | list[str], expected: list[str]) -> None:
    assert smp_imbalance.list_losses(pattern) == expected


def test_unknown_name_lists_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown loss name 'acb_mes'.*Did you mean 'acb_mse'"):
        smp_imbalance.create_loss("acb_mes")
    with pytest.raises(ValueError, match=r"Valid names: .*valid_pixel"):
        smp_imbalance.create_loss("no_such_loss")
    assert not smp_imbalance.is_loss("no_such_loss")
    assert not smp_imbalance.is_loss(3)  # type: ignore[arg-type]


def test_name_must_be_str() -> None:
    with pytest.raises(TypeError, match="loss name must be a str"):
        smp_imbalance.create_loss(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kwargs", "pred", "target"),
    [
        ("mse", {}, torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)),
        ("l1", {"reduction": "sum"}, torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)),
        ("bce", {}, torch.randn(3, 5), torch.randint(0, 2, (3, 5)).float()),
        (
            "smp.dice",
            {"from_logits": True},
            torch.randn(2, 1, 8, 8),
            torch.randint(0, 2, (2, 1, 8, 8)),
        ),
        ("smp.focal", {}, torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))),
        ("smp.jaccard", {}, torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))),
        (
            "smp.tversky",
            {"alpha": 0.3, "beta": 0.7},
            torch.randn(2, 1, 8, 8),
            torch.randint(0, 2, (2, 1, 8, 8)),
        ),
        ("smp.lovasz", {}, torch.randn(2, 1, 8, 8), torch.randint(0, 2, (2, 1, 8, 8))),
        (
            "smp.dice",
            {"mode": "multiclass"},
            torch.randn(2, 3, 8, 8),
            torch.randint(0, 3, (2, 8, 8)),
        ),
        ("timm.asl", {"gamma_neg": 2}, torch.randn(3, 5), torch.randint(0, 2, (3, 5)).float()),
    ],
)
def test_baselines_build_and_run_with_kwargs(
    name: str, kwargs: dict, pred: torch.Tensor, target: torch.Tensor
) -> None:
    loss_fn = smp_imbalance.create_loss(name, **kwargs)
    assert isinstance(loss_fn, nn.Module)
    pred = pred.requires_grad_()
    loss = loss_fn(pred, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert pred.grad is not None


def test_baseline_kwargs_pass_through() -> None:
    focal = smp_imbalance.create_loss("smp.focal", mode="multilabel", gamma=3.0)
    assert focal.mode == "multilabel" and focal.focal_loss_fn.keywords["gamma"] == 3.0
    assert smp_imbalance.create_loss("mse", reduction="sum").reduction == "sum"
    with pytest.raises(TypeError):
        smp_imbalance.create_loss("mse", not_an_argument=1)


def test_register_decorator_forms() -> None:
    reg = Registry("widget", "smp_imbalance.test_widgets")

    @reg.register
    def plain() -> str:
        """A plain widget."""
        return "plain"

    @reg.register(name="fancy.one", description="the fancy one")
    class Fancy:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    assert reg.names() == ["fancy.one", "plain"]
    assert reg.create("plain") == "plain"
    assert reg.create("fancy.one", size=3).size == 3
    assert reg.describe("plain") == "A plain widget."
    assert reg.describe("fancy.one") == "the fancy one"
    assert "plain" in reg and "nope" not in reg

    with pytest.raises(ValueError, match="already registered"):

        @reg.register(name="plain")
        def other() -> None: ...

    with pytest.raises(TypeError, match="not callable"):
        reg.register(42, name="x")


def test_register_loss_into_global_registry() -> None:
    name = "test.registered_here"

    @smp_imbalance.register_loss(name=name)
    class Doubled(nn.Module):
        """Twice the MSE."""

        def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
            return 2 * torch.nn.functional.mse_loss(y_pred, y_true)

    try:
        assert name in smp_imbalance.list_losses("test.*")
        assert isinstance(smp_imbalance.create_loss(name), Doubled)
    finally:
        del LOSS_REGISTRY._entries[name]


# -- plugins: real throwaway distributions on sys.path --------------------------------------------


def _write_distribution(root: Path, dist: str, module: str, source: str, entries: dict) -> None:
    """A minimal installed distribution: ``<dist>-0.1.dist-info`` with entry points, plus a module."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = ["[smp_imbalance.losses]"] + [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    good = """
        import torch
        from torch import nn

        IMPORTED = True

        class HalfMSE(nn.Module):
            '''Half the mean squared error (a third-party plugin).'''

            def __init__(self, scale: float = 0.5):
                super().__init__()
                self.scale = scale

            def forward(self, y_pred, y_true):
                return self.scale * torch.nn.functional.mse_loss(y_pred, y_true)
    """
    _write_distribution(
        tmp_path,
        "goodplugin",
        "goodplugin_losses",
        good,
        {"plugin.half_mse": "goodplugin_losses:HalfMSE"},
    )
    bad = "raise ImportError('this plugin is broken on purpose')\n"
    _write_distribution(
        tmp_path / "bad",
        "badplugin",
        "badplugin_losses",
        bad,
        {
            "plugin.broken": "badplugin_losses:Anything",
            "plugin.missing_attr": "goodplugin_losses:NoSuchClass",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path / "bad"))
    LOSS_REGISTRY.refresh()
    yield tmp_path
    monkeypatch.undo()
    for mod in ("goodplugin_losses", "badplugin_losses"):
        sys.modules.pop(mod, None)
    LOSS_REGISTRY.refresh()


def test_plugin_found_without_user_import_and_loaded_lazily(plugins: Path) -> None:
    names = smp_imbalance.list_losses("plugin.*")
    assert "plugin.half_mse" in names
    assert "goodplugin_losses" not in sys.modules  # listing does not import
    loss_fn = smp_imbalance.create_loss("plugin.half_mse", scale=2.0)
    assert "goodplugin_losses" in sys.modules
    x, y = torch.zeros(4), torch.ones(4)
    assert loss_fn(x, y).item() == pytest.approx(2.0)
    assert smp_imbalance.is_loss("plugin.half_mse")


def test_broken_plugin_warns_once_and_spares_the_others(plugins: Path) -> None:
    with (
        pytest.warns(PluginLoadWarning, match=r"plugin.broken.*badplugin.*broken on purpose"),
        pytest.raises(ValueError, match=r"plugin.broken.*failed to load"),
    ):
        smp_imbalance.create_loss("plugin.broken")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second attempt must not warn again
        with pytest.raises(ValueError, match="failed to load"):
            smp_imbalance.create_loss("plugin.broken")
        assert "plugin.broken" not in smp_imbalance.list_losses()
        assert not smp_imbalance.is_loss("plugin.broken")
    with pytest.warns(PluginLoadWarning, match="NoSuchClass"), pytest.raises(ValueError):
        smp_imbalance.create_loss("plugin.missing_attr")
    # the others still work
    assert smp_imbalance.create_loss("plugin.half_mse") is not None
    assert smp_imbalance.create_loss("mse") is not None


def test_cli_skips_broken_plugin(plugins: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(PluginLoadWarning):
        assert cli_main(["losses", "plugin.*"]) == 0
    out = capsys.readouterr().out
    assert "plugin.half_mse" in out and "Half the mean squared error" in out
    assert "plugin.broken" not in out


def test_plugin_cannot_shadow_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = "class Fake:\n    pass\n"
    _write_distribution(tmp_path, "shadow", "shadow_losses", source, {"mse": "shadow_losses:Fake"})
    monkeypatch.syspath_prepend(str(tmp_path))
    LOSS_REGISTRY.refresh()
    try:
        with pytest.warns(PluginLoadWarning, match="'mse'.*already taken"):
            names = smp_imbalance.list_losses()
        assert "mse" in names
        assert isinstance(smp_imbalance.create_loss("mse"), nn.MSELoss)
    finally:
        monkeypatch.undo()
        LOSS_REGISTRY.refresh()


def test_our_entry_points_are_declared() -> None:
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group="smp_imbalance.losses")}
    for name in OUR_LOSSES:
        assert name in declared, f"{name} missing from pyproject entry points"
        obj = smp_imbalance.create_loss.__globals__["LOSS_REGISTRY"].get(name)
        assert declared[name] == f"{obj.__module__}:{obj.__qualname__}"


# -- CLI and import hygiene --------------------------------------------------------------------------


def test_cli_lists_losses_with_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["losses"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    by_name = {line.split()[0]: line for line in lines}
    for name in OUR_LOSSES + BASELINES:
        assert name in by_name
        assert len(by_name[name].split(maxsplit=1)) == 2, f"{name} has no description"


def test_cli_no_match_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["losses", "zzz*"]) == 1
    assert "no loss name matches" in capsys.readouterr().err


def test_console_script_runs() -> None:
    exe = Path(sys.executable).parent / "smp-imbalance"
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(exe), "losses", "acb*"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("acb_mse")


def test_import_does_not_pull_lightning() -> None:
    code = (
        "import sys, smp_imbalance, torch\n"
        "smp_imbalance.create_loss('acb_mse'); smp_imbalance.list_datasets()\n"
        "heavy = [m for m in ('lightning', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
