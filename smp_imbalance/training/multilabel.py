"""MultiLabelTask: a timm classifier trained on multi-hot targets (HPA-style, 4 input channels)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from smp_imbalance.training.dense import build_loss
from smp_imbalance.training.optim import TimmOptimMixin
from smp_imbalance.training.plots import figure_path, save_f1_bars
from smp_imbalance.training.resume import RNGStateCheckpoint


class _Collect(Metric):
    """Keeps every (probability, target) row of the split, gathered across processes."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, targets: torch.Tensor) -> None:
        self.probs.append(probs.float())
        self.targets.append(targets.float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dim_zero_cat(self.probs), dim_zero_cat(self.targets)


class MultiLabelTask(TimmOptimMixin, L.LightningModule):
    """``timm.create_model(model_name, in_chans=..., num_classes=...)`` with a loss by registry name.

    Validation tunes one decision threshold per label (maximising that label's F1 on the split) and
    keeps them in the ``thresholds`` buffer, so they are saved with the checkpoint and used by
    ``predict``. Logged: macro F1 at 0.5 (``val/f1_macro``); macro F1 at tuned thresholds,
    cross-fitted (``val/f1_macro_tuned``, the main metric: each half of the split is scored with
    thresholds tuned on the other half, see
    :func:`~smp_imbalance.metrics.functional.cross_fitted_f1`, so that checkpoint selection is not
    steered by thresholds fitted to the very rows they are scored on); the same tuned and scored
    on the whole split (``val/f1_macro_tuned_insample``, optimistic); per-label cross-fitted F1
    (``val/f1/<name>``).

    When the loss mines hard examples at the instance level (``crl`` with ``mining="instance"``),
    the pooled pre-logit features of the backbone (``forward_head(..., pre_logits=True)``) are passed
    to it as ``features``.

    Args:
        model_name, pretrained, in_chans, num_classes, drop_rate, model_kwargs: ``timm.create_model``.
        loss, loss_kwargs: a registered loss name (``crl``, ``bce``, ``timm.asl``, ...) or a module.
        class_names: label names for the per-label logs and the F1 figure.
        optimizer, lr, weight_decay, scheduler, warmup_steps, min_lr: timm factories.
        ema_decay: keep an EMA of the weights (timm ``ModelEmaV3``) and validate it; 0 = off.
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        pretrained: bool = False,
        in_chans: int = 4,
        num_classes: int = 28,
        drop_rate: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        loss: str | nn.Module = "crl",
        loss_kwargs: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        min_lr: float = 1e-6,
        ema_decay: float = 0.0,
        plot_every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"model.class_names has {len(class_names)} names for num_classes={num_classes}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"model.ema_decay must be in [0, 1), got {ema_decay}")
        self.save_hyperparameters(ignore=["loss"] if isinstance(loss, nn.Module) else [])
        import timm

        self.net = timm.create_model(
            model_name,
            pretrained=pretrained,
            in_chans=in_chans,
            num_classes=num_classes,
            drop_rate=drop_rate,
            **(model_kwargs or {}),
        )
        self.ema = None
        if ema_decay > 0:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.net, decay=ema_decay)
        self.loss_fn = build_loss(loss, loss_kwargs)
        self.wants_features = getattr(self.loss_fn, "mining", None) == "instance"
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.register_buffer("thresholds", torch.full((num_classes,), 0.5))
        self.val_collect = _Collect()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(N, in_chans, H, W) -> logits (N, num_classes)."""
        return self.net(image)

    def _logits_and_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.net.forward_head(self.net.forward_features(image), pre_logits=True)
        return self.net.get_classifier()(pooled), pooled

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "build"):
            return
        sample = datamodule.build("train")[0]
        channels = int(sample["image"].shape[0])
        if channels != self.hparams.in_chans:
            raise ValueError(
                f"model.in_chans={self.hparams.in_chans} but the dataset gives {channels}-channel "
                f"images: set --model.in_chans {channels}"
            )
        if "target" in sample and int(sample["target"].shape[-1]) != self.hparams.num_classes:
            raise ValueError(
                f"model.num_classes={self.hparams.num_classes} but targets have "
                f"{int(sample['target'].shape[-1])} labels"
            )

    def configure_callbacks(self) -> list[L.Callback]:
        """The global RNG states travel with the checkpoints (an exact resume, see :mod:`.resume`)."""
        return [RNGStateCheckpoint()]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.wants_features:
            logits, features = self._logits_and_features(batch["image"])
            loss = self.loss_fn(logits, batch["target"], features=features)
        else:
            loss = self.loss_fn(self(batch["image"]), batch["target"])
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, "
                f"epoch {self.current_epoch}, batch {batch_idx}: stopping instead of continuing"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    def _eval_logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.ema.module(image) if self.ema is not None else self(image)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self._eval_logits(batch["image"])
        target = batch["target"]
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target.float())
        self.log("val/bce", loss, sync_dist=True, batch_size=logits.shape[0])
        self.val_collect.update(torch.sigmoid(logits.float()), target)

    def on_validation_epoch_end(self) -> None:
        from smp_imbalance.metrics.functional import (
            cross_fitted_f1,
            multilabel_f1,
            tune_thresholds,
        )

        probs, targets = self.val_collect.compute()
        self.val_collect.reset()
        if probs.numel() == 0:
            return
        tuned = tune_thresholds(probs, targets)
        if not self.trainer.sanity_checking:
            self.thresholds.copy_(tuned)
        f1_default = multilabel_f1(probs, targets, threshold=0.5, average="macro")
        in_sample = multilabel_f1(probs, targets, threshold=tuned, average="none")
        # A one-row split (a sanity check) cannot be cross-fitted: in-sample is all there is.
        per_class = cross_fitted_f1(probs, targets, average="none") if len(probs) > 1 else in_sample
        self.log("val/f1_macro", f1_default)
        self.log("val/f1_macro_tuned", per_class.mean(), prog_bar=True)
        self.log("val/f1_macro_tuned_insample", in_sample.mean())
        self.log_dict(
            {f"val/f1/{name}": v for name, v in zip(self.class_names, per_class, strict=True)}
        )
        self._maybe_plot(per_class)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = torch.sigmoid(self._eval_logits(batch["image"]).float())
        return {"id": batch.get("id"), "probs": probs, "labels": probs > self.thresholds}

    def _maybe_plot(self, per_class: torch.Tensor) -> None:
        out = figure_path(self, "f1", self.hparams.plot_every_n_epochs)
        if out is not None:
            save_f1_bars(per_class.cpu(), self.class_names, out)
