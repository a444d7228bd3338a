"""One epoch numbering for everything a person reads: epochs count from 1, "epoch 3 of 30".

Lightning counts from 0: ``trainer.current_epoch`` is 0 during the first epoch, and so are its
progress bar ("Epoch 0"), the ``{epoch}`` of a checkpoint file name and the ``epoch`` it logs. A
person reading "Epoch 3/30" on the console finds the same 3 in ``epoch003.ckpt``, in the ``epoch``
column of ``learning_curves.csv``, as the MLflow step of that epoch's metrics and in a message
("stopped by SIGTERM in epoch 3/30"). Only Lightning's own counters inside a checkpoint (its
``epoch`` key, the loop state) keep Lightning's numbering, since Lightning reads them back.

The per-epoch metrics are named quantity first (``loss/train``, ``acc/val``): MLflow's run page
groups charts by the part before the last ``/`` and sorts those sections by name, so the learning
curves open the page (sections ``acc`` and ``loss``, train beside validation) ahead of ``test``.
"""

from __future__ import annotations

from typing import Any

#: The metrics logged once per epoch (by the LightningModule), with the epoch's number as step.
TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC = "loss/train", "acc/train", "loss/val", "acc/val"
METRICS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC)


def number(current_epoch: int) -> int:
    """The number a person reads for the epoch Lightning counts as ``current_epoch``."""
    return int(current_epoch) + 1


def of(trainer: Any, current_epoch: int | None = None) -> str:
    """``3/30`` for the epoch running now (or ``current_epoch``); ``3`` without an epoch limit."""
    n = number(trainer.current_epoch if current_epoch is None else current_epoch)
    total = trainer.max_epochs
    return f"{n}/{total}" if total is not None and total > 0 else str(n)


def __getattr__(name: str) -> Any:
    """``ModelCheckpoint`` on first use (``conf/callbacks``): it needs Lightning, which what reads
    the numbering alone (a sweep's parent process, the MLflow views) does not import."""
    if name != "ModelCheckpoint":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint

    class ModelCheckpoint(_LightningModelCheckpoint):
        """Lightning's ``ModelCheckpoint`` whose ``{epoch}`` in ``filename`` counts from 1.

        ``epoch{epoch:03d}`` names the weights saved at the end of the first epoch ``epoch001.ckpt``,
        as the console's "Epoch 1/30" does. ``format_checkpoint_name`` is Lightning's public hook for
        the name; every other behaviour (monitoring, top-k, resuming) is Lightning's.
        """

        def format_checkpoint_name(self, metrics: dict[str, Any], filename: str | None = None,
                                   ver: int | None = None, prefix: str | None = None) -> str:
            if "epoch" in metrics:
                metrics = {**metrics, "epoch": metrics["epoch"] + 1}
            return super().format_checkpoint_name(metrics, filename, ver, prefix)

    ModelCheckpoint.__qualname__ = "ModelCheckpoint"  # as if at module level: pickles, state keys
    globals()["ModelCheckpoint"] = ModelCheckpoint
    return ModelCheckpoint
