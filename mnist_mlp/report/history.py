"""Per-epoch training and validation metrics, kept for the report's learning curves.

Rows are numbered as a person reads them (``mnist_mlp.epochs``): the row of epoch 3 of 30 says
``epoch 3``, as the console's "Epoch 3/30", ``epoch003.ckpt`` and the MLflow step do.

A callback rather than the MLflow metric history: it works with ``~logger`` and in tests, and
its state goes into every checkpoint, so a resumed run still has the epochs before the
interruption, and ``evaluate.py`` on a checkpoint every epoch up to and including the checkpoint's
own.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from mnist_mlp import epochs

#: The epoch metrics the curves show (logged by the LightningModule at each epoch's end).
KEYS = epochs.METRICS


class EpochHistory(Callback):
    """Records ``KEYS`` once per finished epoch, under the epoch's number (1 for the first).

    Read at the start of the next epoch and at the end of training: callbacks' own
    ``on_train_epoch_end`` runs before the LightningModule logs the epoch's training metrics. A
    checkpoint saved at an epoch's end holds that epoch too: ``ModelCheckpoint`` saves after the
    LightningModule's ``on_train_epoch_end`` (Lightning calls checkpoint callbacks last).
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self._ended_epoch = -1  # Lightning's index of the epoch whose training part ended

    def _record(self, trainer: Any, index: int) -> None:
        """The metrics of the epoch Lightning counts as ``index`` (0 for the first)."""
        n = epochs.number(index)
        if trainer.sanity_checking or index < 0 or any(h["epoch"] == n for h in self.epochs):
            return
        metrics = trainer.callback_metrics
        row = {k: float(metrics[k]) for k in KEYS if k in metrics}
        if row:
            self.epochs.append({"epoch": n, **row})

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._record(trainer, trainer.current_epoch - 1)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._record(trainer, trainer.current_epoch - 1)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._ended_epoch = trainer.current_epoch

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """At an epoch's end, record that epoch into the checkpoint being saved (its callback
        states were collected before this hook); a mid-epoch save (Ctrl-C) has no such row."""
        if self._ended_epoch == trainer.current_epoch and "callbacks" in checkpoint:
            self._record(trainer, trainer.current_epoch)
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": [dict(h) for h in self.epochs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Merge, not replace: ``trainer.test(ckpt_path=best)`` restores an earlier checkpoint's
        callback states after fit, and the epochs recorded since must survive it."""
        known = {h["epoch"] for h in self.epochs}
        saved = [dict(h) for h in state_dict.get("epochs", []) if h["epoch"] not in known]
        self.epochs = sorted(self.epochs + saved, key=lambda h: h["epoch"])


def from_trainer(trainer: Any) -> list[dict[str, float]]:
    """The recorded epochs of the trainer's ``EpochHistory`` callback; none without one."""
    found = next((c for c in trainer.callbacks if isinstance(c, EpochHistory)), None)
    return list(found.epochs) if found else []


def from_checkpoint(ckpt: dict[str, Any]) -> list[dict[str, float]]:
    """The epochs recorded in a checkpoint's callback states (``evaluate.py``)."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith(EpochHistory.__qualname__) and isinstance(state, dict):
            return [dict(h) for h in state.get("epochs", [])]
    return []
