"""Losses swapped by name: one calling convention, eager first calls, configs that name a loss.

* every registered dense loss trains a few steps of one smp loop, called as
  ``loss(pred, target, valid_mask=mask)``;
* each loss's first call, in a fresh process, compiles nothing;
* the baselines (``smp.*``, ``timm.*``, torch) equal the library called directly;
* a user's own LightningCLI config and a Hydra config pick ``smp.dice``, ``timm.db`` and
  ``acb_mse`` through :class:`smp_imbalance.LossByName`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import smp_imbalance
from smp_imbalance import LossByName, create_loss, list_losses

CLASSIFICATION = {"crl", *list_losses("timm.*")}  # (N, C) logits: not dense
DENSE = sorted(set(list_losses()) - CLASSIFICATION)

# Per loss: constructor keywords and the target the loss expects (all from one 3-channel output).
#   "unit": values in [0, 1) (regression), "binary": {0, 1} floats, "index": (N, H, W) classes.
SPECS: dict[str, tuple[dict, str]] = {
    "acb_mse": ({}, "unit"),
    "valid_pixel": ({}, "unit"),
    "sam": ({}, "unit"),
    "sam_mse": ({}, "unit"),
    "mse": ({}, "unit"),
    "l1": ({}, "unit"),
    "huber": ({}, "unit"),
    "bce": ({}, "binary"),
    "ce": ({}, "index"),
    "smp.dice": ({"mode": "multilabel"}, "binary"),
    "smp.focal": ({"mode": "multilabel"}, "binary"),
    "smp.jaccard": ({"mode": "multilabel"}, "binary"),
    "smp.tversky": ({"mode": "multilabel"}, "binary"),
    "smp.lovasz": ({"mode": "multilabel"}, "binary"),
    "smp.mcc": ({}, "binary"),
    "smp.soft_bce": ({}, "binary"),
    "smp.soft_ce": ({"smooth_factor": 0.1}, "index"),
}


def test_every_dense_loss_has_a_spec() -> None:
    assert set(SPECS) == set(DENSE), "a new dense loss name needs a line in SPECS"


OURS_DENSE = ("acb_mse", "valid_pixel", "sam", "sam_mse")


@pytest.mark.parametrize("name", OURS_DENSE)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=str)
@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_no_valid_mask_means_every_finite_target_pixel(name, bad, fused) -> None:
    """The calling convention's ``valid_mask=None``, for each of our dense losses: exactly the
    explicit mask ``isfinite(y_true)`` (value and gradient), finite, no gradient at bad pixels."""
    torch.manual_seed(0)
    y_pred = torch.rand(2, 3, 5, 4, requires_grad=True)
    y_true = torch.rand(2, 3, 5, 4) * (torch.rand(2, 3, 5, 4) < 0.5)
    y_true[0, 1, 2, :3] = bad
    y_true[1, :, 0, 0] = bad
    loss = create_loss(name, fused=fused)
    implicit = loss(y_pred, y_true)
    pred2 = y_pred.detach().clone().requires_grad_()
    explicit = loss(pred2, y_true, valid_mask=torch.isfinite(y_true))
    assert torch.isfinite(implicit)
    torch.testing.assert_close(implicit, explicit, rtol=1e-6, atol=0)
    implicit.backward()
    explicit.backward()
    assert torch.isfinite(y_pred.grad).all()
    assert (y_pred.grad[~torch.isfinite(y_true)] == 0).all()
    torch.testing.assert_close(y_pred.grad, pred2.grad, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_every_dense_loss_trains_in_one_smp_loop_by_name() -> None:
    """The same loop, the same call, for every name: only the target format differs."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    image = torch.rand(2, 3, 16, 16)
    index = (image.mean(1) * 3).long().clamp(max=2)  # (N, H, W) in {0, 1, 2}
    targets = {
        "unit": image.flip(1),
        "binary": (image > 0.5).float(),
        "index": index,
    }
    valid_mask = torch.rand(2, 1, 16, 16) > 0.2
    valid_mask[0] = False  # an all-invalid sample
    net = smp.Unet("resnet18", encoder_weights=None, encoder_depth=2,
                   decoder_channels=(16, 8), in_channels=3, classes=3)  # fmt: skip
    initial = {k: v.clone() for k, v in net.state_dict().items()}
    for name in DENSE:
        kwargs, kind = SPECS[name]
        net.load_state_dict(initial)
        loss_fn = LossByName(name, **kwargs)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        losses = []
        for _ in range(2):
            pred = net(image)
            if name == "smp.mcc":  # smp's MCC takes probabilities
                pred = pred.sigmoid()
            loss = loss_fn(pred, targets[kind], valid_mask=valid_mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert all(torch.isfinite(torch.tensor(losses))), (name, losses)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())


FIRST_CALL = textwrap.dedent(
    """
    import json, sys, time, torch
    import torch._dynamo.utils as dynamo_utils
    from smp_imbalance import create_loss
    name, kwargs, kind = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    loss = create_loss(name, **kwargs)
    if kind == "logits":
        pred, target = torch.randn(16, 5, requires_grad=True), (torch.rand(16, 5) < 0.3).float()
    elif kind == "index":
        pred, target = torch.randn(2, 3, 8, 8, requires_grad=True), torch.randint(0, 3, (2, 8, 8))
    else:
        pred, target = torch.rand(2, 3, 8, 8, requires_grad=True), torch.rand(2, 3, 8, 8).round()
    loss(pred, target).backward()
    c = dynamo_utils.counters
    print(json.dumps({"frames": sum(c["frames"].values()), "graphs": c["stats"]["unique_graphs"],
                      "inductor": sum(c["inductor"].values())}))
    """
)


@pytest.mark.slow
def test_first_call_compiles_nothing_in_a_fresh_process() -> None:
    """``create_loss(name)`` is eager: its first call makes no Dynamo frame, graph or inductor
    kernel (SMP_IMBALANCE_COMPILE is left unset, as a user has it). One process for all names
    would hide a compile made by the first one; one per name costs ~2 s each, so the names run
    in a few processes, each checking its counters after every loss."""
    names = {n: (SPECS[n][0], "index" if SPECS[n][1] == "index" else "dense") for n in DENSE}
    names["crl"] = ({}, "logits")
    names["timm.db"] = ({"class_counts": [3, 4, 5, 1, 2], "num_samples": 10}, "logits")
    env = {k: v for k, v in __import__("os").environ.items() if k != "SMP_IMBALANCE_COMPILE"}
    script = (
        "import json, sys\n"
        "cases = json.loads(sys.argv[1])\n"
        "for name, (kwargs, kind) in cases.items():\n"
        "    sys.argv = ['x', name, json.dumps(kwargs), kind]\n"
        "    exec(compile(" + repr(FIRST_CALL) + ", 'first_call', 'exec'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(names)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(counts) == len(names)
    for name, count in zip(names, counts, strict=True):
        assert count == {"frames": 0, "graphs": 0, "inductor": 0}, (name, count)


# -- the baselines against the libraries ---------------------------------------------------------

SMP_CASES = [
    ("smp.dice", "DiceLoss", {"mode": "binary"}, "binary"),
    ("smp.dice", "DiceLoss", {"mode": "multiclass"}, "index"),
    ("smp.focal", "FocalLoss", {"mode": "binary", "gamma": 3.0}, "binary"),
    ("smp.focal", "FocalLoss", {"mode": "multiclass"}, "index"),
    ("smp.jaccard", "JaccardLoss", {"mode": "multilabel"}, "binary"),
    ("smp.tversky", "TverskyLoss", {"mode": "binary", "alpha": 0.3, "beta": 0.7}, "binary"),
    ("smp.lovasz", "LovaszLoss", {"mode": "binary"}, "binary"),
    ("smp.mcc", "MCCLoss", {}, "prob"),
    ("smp.soft_bce", "SoftBCEWithLogitsLoss", {"smooth_factor": 0.1}, "binary"),
    ("smp.soft_ce", "SoftCrossEntropyLoss", {"smooth_factor": 0.1}, "index"),
]


def _smp_inputs(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    channels = 3 if kind == "index" else 1
    pred = torch.randn(2, channels, 6, 6, generator=gen, requires_grad=True)
    if kind == "index":
        return pred, torch.randint(0, 3, (2, 6, 6), generator=gen)
    target = (torch.rand(2, channels, 6, 6, generator=gen) > 0.5).float()
    return (pred.sigmoid() if kind == "prob" else pred), target


@pytest.mark.parametrize(("name", "class_name", "kwargs", "kind"), SMP_CASES)
def test_smp_names_equal_the_library(name, class_name, kwargs, kind) -> None:
    from segmentation_models_pytorch import losses as smp_losses

    pred, target = _smp_inputs(kind)
    ours = create_loss(name, **kwargs)
    theirs = getattr(smp_losses, class_name)(**kwargs)
    torch.testing.assert_close(ours(pred, target), theirs(pred, target))
    (g_ours,) = torch.autograd.grad(ours(pred, target), pred)
    (g_theirs,) = torch.autograd.grad(theirs(pred, target), pred)
    torch.testing.assert_close(g_ours, g_theirs)
    # A mask that keeps everything changes nothing.
    everything = torch.ones(2, 1, 6, 6, dtype=torch.bool)
    torch.testing.assert_close(ours(pred, target, valid_mask=everything), theirs(pred, target))
    if class_name == "MCCLoss":
        return
    # A mask is the library's own ignore_index rule.
    mask = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(4)) > 0.3
    ignored = torch.where(mask if target.dim() == 4 else mask[:, 0], target, -100)
    reference = getattr(smp_losses, class_name)(**{**kwargs, "ignore_index": -100})
    torch.testing.assert_close(ours(pred, target, valid_mask=mask), reference(pred, ignored))


def test_smp_mcc_mask_counts_only_valid_pixels() -> None:
    """Masked MCC equals smp's MCC on the valid pixels alone."""
    from segmentation_models_pytorch.losses import MCCLoss

    pred, target = _smp_inputs("prob")
    mask = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    mask[:, :, :3] = True
    expected = MCCLoss()(pred[:, :, :3], target[:, :, :3])
    torch.testing.assert_close(create_loss("smp.mcc")(pred, target, valid_mask=mask), expected)


@pytest.mark.parametrize(
    ("name", "torch_cls", "kwargs"),
    [
        ("mse", torch.nn.MSELoss, {}),
        ("l1", torch.nn.L1Loss, {"reduction": "sum"}),
        ("huber", torch.nn.HuberLoss, {"delta": 0.3}),
        ("bce", torch.nn.BCEWithLogitsLoss, {"pos_weight": torch.tensor([2.0])}),
    ],
)
def test_torch_names_equal_torch_and_mask_exactly(name, torch_cls, kwargs) -> None:
    pred, target = (
        torch.tensor([[0.5, -1.0, 2.0, float("nan")]]),
        torch.tensor([[1.0, 0.0, 1.0, 1.0]]),
    )
    loss = create_loss(name, **kwargs)
    assert isinstance(loss, torch_cls)
    torch.testing.assert_close(loss(pred[:, :3], target[:, :3]), torch_cls(**kwargs)(pred[:, :3], target[:, :3]))  # fmt: skip
    mask = torch.tensor([[True, True, True, False]])  # a NaN prediction at an invalid pixel
    p = pred.clone().requires_grad_(True)
    out = loss(p, target, valid_mask=mask)
    torch.testing.assert_close(out, torch_cls(**kwargs)(pred[:, :3], target[:, :3]))
    out.backward()
    assert torch.isfinite(p.grad).all() and p.grad[0, 3] == 0


def test_ce_mask_is_torch_ignore_index() -> None:
    gen = torch.Generator().manual_seed(5)
    logits, target = torch.randn(2, 3, 4, 4, generator=gen), torch.randint(0, 3, (2, 4, 4), generator=gen)  # fmt: skip
    mask = torch.rand(2, 1, 4, 4, generator=gen) > 0.5
    expected = torch.nn.CrossEntropyLoss()(logits, torch.where(mask[:, 0], target, -100))
    torch.testing.assert_close(create_loss("ce")(logits, target, valid_mask=mask), expected)
    with pytest.raises(ValueError, match="valid_mask"):
        create_loss("ce")(logits, target, valid_mask=mask.expand(2, 3, 4, 4))


TIMM_CASES = [
    ("timm.ce", {}, {}),
    ("timm.bce", {"multi_label": True, "smoothing": 0.1}, {}),
    ("timm.poly", {"multi_label": True}, {"poly_epsilon": 1.0}),
    ("timm.twoway", {}, {"multi_label": True}),
    ("timm.zlpr", {}, {"multi_label": True}),
    ("timm.db", {}, {"multi_label": True}),
    ("timm.jsd", {"jsd_splits": 2}, {}),
]


@pytest.mark.parametrize(("name", "kwargs", "extra"), TIMM_CASES)
def test_timm_names_equal_create_classification_loss(name, kwargs, extra) -> None:
    from timm.loss import create_classification_loss

    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(8, 5, generator=gen)
    multi = {**kwargs, **extra}.get("multi_label", False)
    target = (torch.rand(8, 5, generator=gen) < 0.4).float() if multi else torch.randint(0, 5, (8,), generator=gen)  # fmt: skip
    if name == "timm.db":  # class counts from the data
        kwargs = {"class_counts": target.sum(0).tolist(), "num_samples": len(target)}
    loss_type = name.removeprefix("timm.")
    ours = create_loss(name, **kwargs, **extra)
    theirs = create_classification_loss(loss_type, **kwargs, **extra)
    assert type(ours) is type(theirs)
    torch.testing.assert_close(ours(logits, target), theirs(logits, target))


def test_timm_db_needs_its_class_counts() -> None:
    with pytest.raises(ValueError, match="class_counts"):
        create_loss("timm.db")


# -- LossByName in configs -----------------------------------------------------------------------


def test_loss_by_name_builds_and_calls_the_registered_loss() -> None:
    loss = LossByName("acb_mse", nonzero_weighting=2.0)
    assert loss.name == "acb_mse" and loss.kwargs == {"nonzero_weighting": 2.0}
    assert "nonzero_weighting=2.0" in repr(loss)
    pred, target = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4).round()
    mask = torch.rand(2, 1, 4, 4) > 0.5
    torch.testing.assert_close(
        loss(pred, target, valid_mask=mask),
        create_loss("acb_mse", nonzero_weighting=2.0)(pred, target, valid_mask=mask),
    )
    with pytest.raises(ValueError, match="Did you mean 'acb_mse'"):
        LossByName("acb_mes")
    with pytest.raises(TypeError, match="do not fit loss 'mse'"):
        LossByName("mse", not_an_argument=1)
    assert smp_imbalance.LossByName is LossByName


USER_CONFIG = """
model:
  class_path: user_module.UserModel
  init_args:
    losses:
      - class_path: smp_imbalance.LossByName
        init_args: {name: smp.dice}
        dict_kwargs: {mode: binary}
      - class_path: smp_imbalance.LossByName
        init_args: {name: timm.db}
        dict_kwargs: {class_counts: [3, 1, 2], num_samples: 4}
      - class_path: smp_imbalance.LossByName
        init_args: {name: acb_mse}
        dict_kwargs: {nonzero_weighting: 2.0}
"""

USER_MODULE = """
import lightning as L
from torch import nn

class UserModel(L.LightningModule):
    def __init__(self, losses: list[nn.Module]):
        super().__init__()
        self.losses = nn.ModuleList(losses)
"""


@pytest.mark.slow
def test_users_own_lightning_cli_config_picks_losses_by_name(tmp_path: Path, monkeypatch) -> None:
    """A user's own LightningCLI (not ours), a model typed ``nn.Module``: ``LossByName`` with
    ``dict_kwargs`` (jsonargparse's key for ``**kwargs``); ``--print_config`` shows them."""
    from lightning.pytorch.cli import LightningCLI

    (tmp_path / "user_module.py").write_text(USER_MODULE)
    (tmp_path / "config.yaml").write_text(USER_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    cli = LightningCLI(
        args=["--config", str(tmp_path / "config.yaml")], run=False, save_config_callback=None
    )
    dice, db, acb = cli.model.losses
    assert isinstance(dice.loss.loss, __import__("segmentation_models_pytorch").losses.DiceLoss)
    assert dice.loss.mode == "binary"
    assert type(db.loss).__name__ == "DistributionBalancedLoss"
    assert acb.loss.class_weights == (1.0, 2.0)
    logits, target = torch.randn(4, 3), torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 0, 1], [0, 0, 1]])
    assert torch.isfinite(db(logits, target))

    proc = subprocess.run(
        [sys.executable, "-c", "from lightning.pytorch.cli import LightningCLI; LightningCLI(run=False)",
         "--config", str(tmp_path / "config.yaml"), "--print_config"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = proc.stdout
    for expected in ("name: smp.dice", "mode: binary", "name: timm.db", "num_samples: 4",
                     "name: acb_mse", "nonzero_weighting: 2.0"):  # fmt: skip
        assert expected in printed, printed


def test_hydra_config_picks_losses_by_name() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {
            "dice": {"_target_": "smp_imbalance.LossByName", "name": "smp.dice", "mode": "binary"},
            "db": {
                "_target_": "smp_imbalance.LossByName",
                "name": "timm.db",
                "class_counts": [3, 1, 2],
                "num_samples": 4,
            },
            "acb": {"_target_": "smp_imbalance.LossByName", "name": "acb_mse"},
        }
    )
    losses = instantiate(cfg)
    assert losses.dice.loss.mode == "binary"
    assert type(losses.db.loss).__name__ == "DistributionBalancedLoss"
    pred, target = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4).round()
    mask = torch.rand(2, 1, 4, 4) > 0.5
    for loss in (losses.dice, losses.acb):
        assert torch.isfinite(loss(pred, target, valid_mask=mask))


def test_dense_task_takes_loss_by_name_and_calls_valid_mask() -> None:
    from smp_imbalance.training import DenseTask

    task = DenseTask(
        encoder_depth=3, decoder_channels=[16, 8, 8], in_channels=1, classes=1, metrics="none",
        loss=LossByName("smp.dice", mode="binary"),
    )  # fmt: skip
    batch = {
        "image": torch.rand(2, 1, 16, 16),
        "target": torch.rand(2, 1, 16, 16).round(),
        "valid_mask": torch.rand(2, 1, 16, 16) > 0.3,
    }
    pred = task(batch["image"])
    expected = task.loss_fn(pred, batch["target"], valid_mask=batch["valid_mask"])
    torch.testing.assert_close(task._loss(pred, batch), expected)
