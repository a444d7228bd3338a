"""The LightningModule: cross-entropy training of the configured network, with epoch-level metrics.

Everything it is built from is a plain dict of ``_target_`` entries, saved as hyperparameters, so a
checkpoint alone rebuilds the exact network (``load_from_checkpoint`` under ``weights_only=True``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_mlp.metrics import TestMetrics, TestResults


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class MnistLitModule(L.LightningModule):
    """Trains ``net`` with ``optimizer`` (a ``_partial_`` target) and an optional ``scheduler``."""

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        lr: float = 0.1,
        scheduler: dict | None = None,
        num_classes: int = 10,
        compile: bool = False,
        train_metrics: bool = True,
    ) -> None:
        super().__init__()
        # logger=False: the tracking glue logs the whole resolved Hydra config with dotted keys.
        self.save_hyperparameters(
            {"net": _plain(net), "optimizer": _plain(optimizer), "lr": lr,
             "scheduler": _plain(scheduler), "num_classes": num_classes, "compile": compile,
             "train_metrics": train_metrics},
            logger=False,
        )
        self.train_metrics = train_metrics  # read every step: an attribute, not an hparams lookup
        self.net = instantiate(self.hparams.net)
        self._forward = torch.compile(self.net) if compile else self.net
        # Training metrics are updated every step: no NaN check (a host sync per step on a GPU)
        # and no argument validation (float logits skip it anyway). See README "Speed".
        self.train_loss, self.val_loss = MeanMetric(nan_strategy="disable"), MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_metrics = TestMetrics(num_classes)  # names: see mnist_mlp.metrics
        self.test_results: TestResults | None = None  # set at the end of each test epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if self.train_metrics:
            # Accumulate on the device; values are read once per epoch (no host sync per step).
            self.train_loss.update(loss.detach(), weight=len(y))
            self.train_acc.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.train_metrics:
            self._log_epoch("train", self.train_loss, self.train_acc)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y, reduction="mean"), weight=len(y))
        self.val_acc.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val", self.val_loss, self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, index = batch
        self.test_metrics.update(self(x), y, index)

    def on_test_epoch_end(self) -> None:
        # Computed (and synced across DDP ranks) once; every rank logs the same numbers.
        try:
            self.test_results = self.test_metrics.compute()
        finally:
            self.test_metrics.reset()
        self.log_dict(self.test_results.scalars(), sync_dist=False)

    def _log_epoch(self, stage: str, loss: MeanMetric, acc: MulticlassAccuracy) -> None:
        # compute() syncs across DDP ranks; sanity-check values are reset with the metrics.
        self.log_dict(
            {f"{stage}/loss": loss.compute(), f"{stage}/acc": acc.compute()},
            prog_bar=True,
            sync_dist=False,
        )
        loss.reset()
        acc.reset()

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(self.parameters(), lr=self.hparams.lr)
        if not self.hparams.scheduler:
            return optimizer
        scheduler_cfg = dict(self.hparams.scheduler)
        interval = scheduler_cfg.pop("interval", "epoch")
        monitor = scheduler_cfg.pop("monitor", "val/loss")
        scheduler = instantiate(scheduler_cfg)(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": monitor},
        }
