"""DenseTask: an smp model trained on dense targets (denoising, band-to-band regression, segmentation)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from smp_imbalance.registry import create_loss
from smp_imbalance.training.optim import TimmOptimMixin
from smp_imbalance.training.plots import figure_path, save_dense_panel, save_detector_panel
from smp_imbalance.training.resume import RNGStateCheckpoint

TASKS = ("regression", "binary", "multiclass", "multilabel")
ACTIVATIONS = ("sigmoid", "identity", "gate")
MASK_KEYS = ("valid_mask", "mask")


def build_loss(loss: str | nn.Module, loss_kwargs: dict[str, Any] | None) -> nn.Module:
    """``loss`` by registry name with ``loss_kwargs``, or a module given as is (then
    ``loss_kwargs`` must be empty: they would be silently ignored)."""
    if not isinstance(loss, str):
        if loss_kwargs:
            raise ValueError(
                "model.loss_kwargs apply to a loss given by name; put the arguments of a "
                f"class_path loss in its init_args (got loss_kwargs={loss_kwargs})"
            )
        return loss
    try:
        return create_loss(loss, **(loss_kwargs or {}))
    except TypeError as err:
        raise TypeError(f"model.loss_kwargs {loss_kwargs} do not fit loss {loss!r}: {err}") from err


def _unused_parameters(net: nn.Module, dummy: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Names of the parameters that never reach the output, and the output, from one eval-mode
    forward/backward of ``dummy`` (running stats intact)."""
    was_training = net.training
    net.eval()
    params = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    out = net(dummy)
    grads = torch.autograd.grad(out.sum(), [p for _, p in params], allow_unused=True)
    net.train(was_training)
    return [name for (name, _), g in zip(params, grads, strict=True) if g is None], out.detach()


def _drop_unused_modules(net: nn.Module, in_channels: int, divisor: int) -> list[str]:
    """Remove the submodules whose parameters never reach the output, and freeze any other unused
    parameter; return the removed modules' and frozen parameters' names.

    smp builds every encoder stage whatever ``encoder_depth`` says (a depth-3 resnet18 UNet keeps
    ``layer3`` and ``layer4``: 93 % of its weights, never run), so they would fill checkpoints and,
    trainable, stop DDP on unused parameters. A module is removed only if the network still runs
    without it and gives the same output on a dummy input; otherwise it stays, frozen.
    """
    dummy = torch.zeros(1, in_channels, 2 * divisor, 2 * divisor)
    unused, reference = _unused_parameters(net, dummy)
    unused_set = set(unused)
    removed: list[str] = []
    for name, module in list(net.named_modules()):
        if not name or any(name.startswith(f"{r}.") for r in removed):
            continue
        own = [f"{name}.{p}" for p, _ in module.named_parameters()]
        if not own or not set(own) <= unused_set:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        delattr(parent, child)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                same = torch.equal(net(dummy), reference)
        except Exception:  # the forward needs it after all (e.g. timm's FeatureListNet loops)
            same = False
        net.train(was_training)
        if same:
            removed.append(name)
        else:
            parent.add_module(child, module)
    frozen = []
    for name, p in net.named_parameters():
        if name in unused_set:
            p.requires_grad_(False)
            frozen.append(name)
    return removed + frozen


class DenseTask(TimmOptimMixin, L.LightningModule):
    """An ``smp.create_model`` network trained with a loss chosen by registry name.

    Batches are dicts from our datasets: ``image`` (N, C_in, H, W), ``target`` (N, C_out, H, W) or
    (N, H, W) class indices, and optionally ``valid_mask`` (passed to the loss as ``valid_mask=``) and
    the detector's ``signal_mask`` / ``noise_mask`` (used by its metrics).

    Args:
        arch, encoder_name, encoder_depth, decoder_channels, encoder_weights, model_kwargs: passed to
            ``segmentation_models_pytorch.create_model`` (``encoder_weights=None`` downloads nothing).
            ``arch`` may also name a model of :mod:`smp_imbalance.models` (``HitGraphDenoiser``,
            the main job's detector denoiser); it is then built from ``model_kwargs`` alone and
            the encoder arguments are unused.
        in_channels, classes: the model's input and output channels (checked against the data).
        task: ``regression`` (denoising, band translation), or ``binary`` / ``multiclass`` /
            ``multilabel`` segmentation (IoU/F1 through ``smp.metrics``).
        output_activation: ``sigmoid`` keeps regression outputs in (0, 1), as our targets are;
            ``identity`` for unbounded targets; ``gate`` predicts ``image * sigmoid(logits)``:
            the network decides which input pixels to keep (denoising sparse frames: kept hits
            keep their exact time, empty pixels stay exactly 0; needs ``classes ==
            in_channels``). Training uses the soft gate; in eval mode (validation, test,
            predict) a pixel is kept whole when its gate exceeds ``gate_threshold``, else
            dropped. Segmentation outputs stay logits.
        gate_threshold: the keep decision of the ``gate`` output in eval mode.
        loss: a registered loss name (``smp-imbalance losses``) or an ``nn.Module``, e.g.
            ``{class_path: smp_imbalance.LossByName, init_args: {name: smp.dice},
            dict_kwargs: {mode: binary}}`` (the form that works in any LightningCLI config).
            It is called ``loss(pred, target, valid_mask=mask)`` when the batch has a
            ``valid_mask``, else ``loss(pred, target)``.
        loss_kwargs: keywords for a loss given by name.
        metrics: ``detector`` (hit metrics), ``satellite`` (masked per-band metrics),
            ``segmentation`` or ``none``.
        metric_kwargs: keywords for the metrics.
        optimizer, lr, weight_decay, scheduler, warmup_steps, min_lr: timm factories
            (``create_optimizer_v2`` / ``create_scheduler_v2``), stepped per optimizer update.
        plot_every_n_epochs: write an image panel to ``<run>/figures`` every n validations (0 = never).
    """

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: list[int] | None = None,
        encoder_weights: str | None = None,
        in_channels: int = 1,
        classes: int = 1,
        model_kwargs: dict[str, Any] | None = None,
        task: str = "regression",
        output_activation: str = "sigmoid",
        gate_threshold: float = 0.5,
        loss: str | nn.Module = "acb_mse",
        loss_kwargs: dict[str, Any] | None = None,
        metrics: str = "detector",
        metric_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        min_lr: float = 1e-6,
        plot_every_n_epochs: int = 1,
        num_plot_samples: int = 4,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"model.task must be one of {TASKS}, got {task!r}")
        if output_activation not in ACTIVATIONS:
            raise ValueError(
                f"model.output_activation must be one of {ACTIVATIONS}, got {output_activation!r}"
            )
        if not 0.0 < gate_threshold < 1.0:
            raise ValueError(f"model.gate_threshold must be in (0, 1), got {gate_threshold}")
        if output_activation == "gate" and classes != in_channels:
            raise ValueError(
                f"model.output_activation='gate' multiplies the input by the output: it needs "
                f"classes == in_channels, got {classes} and {in_channels}"
            )
        if metrics not in ("detector", "satellite", "segmentation", "none"):
            raise ValueError(f"model.metrics: unknown metrics family {metrics!r}")
        self.save_hyperparameters(ignore=["loss"] if isinstance(loss, nn.Module) else [])
        from smp_imbalance.models import MODELS

        kwargs = dict(model_kwargs or {})
        if arch in MODELS:
            # a model of ours (e.g. the hit-graph denoiser): no encoder, any frame size
            self.net = MODELS[arch](in_channels=in_channels, classes=classes, **kwargs)
            self.divisor = 1
            self.dropped_unused: list[str] = []
        else:
            import segmentation_models_pytorch as smp

            if decoder_channels is not None:
                kwargs["decoder_channels"] = decoder_channels
            self.net = smp.create_model(
                arch,
                encoder_name=encoder_name,
                encoder_depth=encoder_depth,
                encoder_weights=encoder_weights,
                in_channels=in_channels,
                classes=classes,
                **kwargs,
            )
            self.divisor = 2**encoder_depth
            # the modules smp builds but never runs: left out of the model and its checkpoints
            self.dropped_unused = _drop_unused_modules(self.net, in_channels, self.divisor)
        self.loss_fn = build_loss(loss, loss_kwargs)
        self.val_metrics = self._build_metrics(metrics, metric_kwargs or {})

    # -- model ----------------------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, classes, H, W); sigmoid applied for regression by default."""
        out = self.net(image)
        if self.hparams.task != "regression" or self.hparams.output_activation == "identity":
            return out
        if self.hparams.output_activation == "gate":
            keep = torch.sigmoid(out)
            if not self.training:  # decisions: a kept hit keeps its exact value
                keep = (keep > self.hparams.gate_threshold).to(image.dtype)
            return image * keep
        return torch.sigmoid(out)

    def _build_metrics(self, family: str, kwargs: dict[str, Any]) -> nn.Module | None:
        if family == "none":
            return None
        from smp_imbalance.training.task_metrics import build_dense_metrics

        return build_dense_metrics(
            family, task=self.hparams.task, classes=self.hparams.classes, **kwargs
        )

    # -- checks before the first step ----------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "build"):
            return
        sample = datamodule.build("train")[0]
        channels = int(sample["image"].shape[0])
        if channels != self.hparams.in_channels:
            raise ValueError(
                f"model.in_channels={self.hparams.in_channels} but the dataset "
                f"{datamodule.dataset_name!r} gives images with {channels} channels: set "
                f"--model.in_channels {channels} (or change the dataset's bands/channels)"
            )
        height, width = sample["image"].shape[-2:]
        if height % self.divisor or width % self.divisor:
            raise ValueError(
                f"image size {height}x{width} is not divisible by 2**encoder_depth = {self.divisor}: "
                "lower model.encoder_depth or crop/pad the data"
            )
        target = sample.get("target")
        dense_target = self.hparams.task in ("regression", "multilabel", "binary")
        channels_out = int(target.shape[0]) if target is not None and target.dim() == 3 else None
        if dense_target and channels_out is not None and channels_out != self.hparams.classes:
            raise ValueError(
                f"model.classes={self.hparams.classes} but the dataset's target has "
                f"{channels_out} channels"
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Accept checkpoints written before the unused encoder stages were left out: their
        weights (never used) are dropped instead of failing the strict load."""
        state = checkpoint.get("state_dict", {})
        prefixes = tuple(f"net.{name}." for name in self.dropped_unused)
        for key in [k for k in state if k.startswith(prefixes)]:
            del state[key]

    def configure_callbacks(self) -> list[L.Callback]:
        """The global RNG states travel with the checkpoints (an exact resume, see :mod:`.resume`)."""
        return [RNGStateCheckpoint()]

    # -- steps ----------------------------------------------------------------------------------
    def _loss(self, pred: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every registered dense loss is called the same way: ``loss(pred, target,
        valid_mask=...)``; a batch with no mask calls ``loss(pred, target)``, which any loss
        module accepts."""
        mask = next((batch[k] for k in MASK_KEYS if k in batch), None)
        if mask is None:
            return self.loss_fn(pred, batch["target"])
        return self.loss_fn(pred, batch["target"], valid_mask=mask)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        pred = self(batch["image"])
        loss = self._loss(pred, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, "
                f"epoch {self.current_epoch}, batch {batch_idx}: stopping instead of continuing"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=pred.shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["image"])
        loss = self._loss(pred, batch)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=pred.shape[0])
        if self.val_metrics is not None:
            self.val_metrics.update(pred.detach(), batch)
        if batch_idx == 0:
            self._first_val_batch = {
                k: v[: self.hparams.num_plot_samples]
                for k, v in batch.items()
                if isinstance(v, torch.Tensor)
            }
            self._first_val_pred = pred[: self.hparams.num_plot_samples].detach()

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics is not None:
            values = self.val_metrics.compute()
            score = values.pop("score", None)
            self.log_dict({f"val/{k}": v for k, v in values.items()})
            if score is not None:
                self.log("val/score", score, prog_bar=True)
            self.val_metrics.reset()
        self._maybe_plot()

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch["image"])

    # -- figures --------------------------------------------------------------------------------
    def _maybe_plot(self) -> None:
        out = figure_path(self, "val", self.hparams.plot_every_n_epochs)
        if out is None or not hasattr(self, "_first_val_batch"):
            return
        batch = self._first_val_batch
        if self.hparams.output_activation == "gate" and {"signal_mask", "noise_mask"} <= set(batch):
            save_detector_panel(batch, self._first_val_pred, out)
        else:
            save_dense_panel(
                self._first_val_batch, self._first_val_pred, out, task=self.hparams.task
            )
