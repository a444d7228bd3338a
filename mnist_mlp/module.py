"""The LightningModule: cross-entropy training of the configured network, with epoch-level metrics.

Training runs ``steps_per_iteration`` optimizer steps per Lightning iteration (manual optimization,
``mnist_mlp.fused``): the data module hands each iteration a chunk of that many batches.

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
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_mlp import config, epochs, fused
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
        steps_per_iteration: int | str = "auto",
        cuda_graph: bool = True,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        super().__init__()
        # logger=False: the tracking glue logs the whole resolved Hydra config with dotted keys.
        self.save_hyperparameters(
            {"net": _plain(net), "optimizer": _plain(optimizer), "lr": lr,
             "scheduler": _plain(scheduler), "num_classes": num_classes, "compile": compile,
             "train_metrics": train_metrics, "steps_per_iteration": steps_per_iteration,
             "cuda_graph": cuda_graph, "gradient_clip_val": gradient_clip_val,
             "gradient_clip_algorithm": gradient_clip_algorithm},
            logger=False,
        )
        self.automatic_optimization = False  # K optimizer steps per iteration: mnist_mlp.fused
        self.train_metrics = train_metrics
        self.net = instantiate(self.hparams.net)
        self._forward = torch.compile(self.net) if compile else self.net
        if not compile:  # one image: Lightning's model summary counts the FLOPs per image with it
            self.example_input_array = torch.zeros(1, int(self.hparams.net.get("in_features", 784)))
        self.train_totals = fused.TrainTotals()  # updated once per epoch from the device sums
        self.fused_step: fused.EagerStep | None = None  # built at train start (needs the optimizer)
        self.scheduler_monitor = epochs.VAL_LOSS  # what ReduceLROnPlateau reads (configure_optimizers)
        self.val_loss = MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_metrics = TestMetrics(num_classes)  # names: see mnist_mlp.metrics
        self.test_results: TestResults | None = None  # set at the end of each test epoch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)

    @property
    def steps_per_iteration(self) -> int:
        """K, with ``auto`` resolved for the device trained on (the data module chunks by it)."""
        return fused.resolve_steps(self.hparams.steps_per_iteration, self.device)

    def on_train_start(self) -> None:
        self.fused_step = fused.build_step(self, count_correct=self.train_metrics)

    def on_train_epoch_start(self) -> None:
        if self.fused_step is not None:
            self.fused_step.reset()

    def training_step(self, chunk: list[tuple[torch.Tensor, ...]], batch_idx: int) -> torch.Tensor:
        """One optimizer step per batch of the chunk (or of a single ``(x, y, ...)`` batch from
        another loader); returns the iteration's summed loss (on the device, non-finite when one
        step's loss was: what the NaN check reads)."""
        if torch.is_tensor(chunk[0]):
            chunk = [chunk]
        self.fused_step.begin_iteration()
        for batch in chunk:
            self.fused_step(batch[0], batch[1])
        return self.fused_step.iteration_loss(len(chunk))

    def on_train_end(self) -> None:
        # Before Lightning's teardown moves the tensors a captured CUDA graph points at to the CPU.
        if self.fused_step is not None:
            self.fused_step.release()

    def on_train_epoch_end(self) -> None:
        self._step_epoch_schedulers()
        if self.train_metrics:
            # One torchmetrics update per epoch; compute() syncs across DDP ranks.
            self.train_totals.update(*self.fused_step.totals())
            totals = self.train_totals.compute()
            self.train_totals.reset()
            self._log_epoch_metrics({epochs.TRAIN_LOSS: totals["loss"], epochs.TRAIN_ACC: totals["acc"]})

    def _step_epoch_schedulers(self) -> None:
        """Epoch-interval schedulers, which Lightning steps only under automatic optimization.

        Here validation has run, so ``ReduceLROnPlateau`` sees this epoch's monitored metric; and
        the checkpoints of this epoch end, written after this hook, hold the stepped schedulers.
        """
        for lr_config in self.trainer.lr_scheduler_configs:
            if lr_config.interval != "epoch" or (self.current_epoch + 1) % lr_config.frequency:
                continue
            metric = None
            if isinstance(lr_config.scheduler, ReduceLROnPlateau):
                metric = self.trainer.callback_metrics.get(self.scheduler_monitor)
                if metric is None:
                    raise RuntimeError(
                        f"The LR scheduler monitors {self.scheduler_monitor}, which was not logged "
                        f"this epoch (logged: {sorted(self.trainer.callback_metrics)}).")
            self.lr_scheduler_step(lr_config.scheduler, metric)

    def on_validation_model_zero_grad(self) -> None:
        # A captured CUDA graph writes the gradients into fixed memory: never release them.
        if self.fused_step is None or not self.fused_step.holds_graph:
            super().on_validation_model_zero_grad()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y, reduction="mean"), weight=len(y))
        self.val_acc.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(epochs.VAL_LOSS, epochs.VAL_ACC, self.val_loss, self.val_acc)

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
        # Step 0: one value per test, which MLflow charts as a bar (a line needs steps >= 1).
        self.log("step", 0.0, sync_dist=False)

    def _log_epoch_metrics(self, values: dict[str, torch.Tensor]) -> None:
        """The epoch's metrics (shown on the progress bar), logged with the epoch's number as their
        step: Lightning takes a logged ``step`` as the logger's step, so MLflow charts them against
        epochs 1, 2, ... (``mnist_mlp.epochs``), not against optimizer iterations."""
        self.log_dict(values, prog_bar=True, sync_dist=False)
        self.log("step", float(epochs.number(self.current_epoch)), sync_dist=False)

    def _log_epoch(self, loss_key: str, acc_key: str, loss: MeanMetric,
                   acc: MulticlassAccuracy) -> None:
        # compute() syncs across DDP ranks; sanity-check values are reset with the metrics.
        self._log_epoch_metrics({loss_key: loss.compute(), acc_key: acc.compute()})
        loss.reset()
        acc.reset()

    def configure_optimizers(self) -> Any:
        optimizer, scheduler, interval, self.scheduler_monitor = build_optimizer(
            self.hparams.optimizer, self.hparams.scheduler, self.parameters(), self.hparams.lr)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def build_optimizer(optimizer: Any, scheduler: Any, params: Any, lr: float
                    ) -> tuple[Any, Any, str, str]:
    """The optimizer over ``params`` and the scheduler over it (or None), with the scheduler's
    interval and the metric ``ReduceLROnPlateau`` reads; also what ``validation`` builds over a
    stand-in parameter before any run starts, so a wrong key is an error before training."""
    opt = config.call(config.build(optimizer, "model.optimizer"), optimizer, "model.optimizer",
                      params, lr=lr)
    if not scheduler:
        return opt, None, "epoch", epochs.VAL_LOSS
    scheduler_cfg = dict(scheduler)
    interval = scheduler_cfg.pop("interval", "epoch")
    # Manual optimization: Lightning keeps only the interval; the module steps the schedulers.
    monitor = scheduler_cfg.pop("monitor", epochs.VAL_LOSS)
    sched = config.call(config.build(scheduler_cfg, "model.scheduler"), scheduler_cfg,
                        "model.scheduler", opt)
    return opt, sched, interval, monitor
