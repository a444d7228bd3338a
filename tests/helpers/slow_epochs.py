"""A test-only callback that stretches training, so a test can act while it is under way.

Given to train.py as ``+callbacks.slow._target_=tests.helpers.slow_epochs.SleepAtEpochEnd``.
"""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SleepAtEpochEnd(Callback):
    """Sleeps ``seconds`` after each epoch; after epoch ``epoch`` (default: the last one), also
    waits while ``hold`` exists, until a SIGTERM reaches the trainer.

    While it waits, ``<hold>.rank<N>`` exists for the waiting rank: a test knows then that every
    rank has finished that epoch's training and validation and is outside any collective and any
    MLflow write (Lightning's checkpoints of that epoch come after this callback).
    """

    def __init__(self, seconds: float = 0.0, hold: str | None = None, epoch: int | None = None) -> None:
        self.seconds, self.hold, self.epoch = seconds, Path(hold) if hold else None, epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)
        epoch = trainer.max_epochs - 1 if self.epoch is None else self.epoch
        if self.hold is None or trainer.current_epoch != epoch:
            return
        waiting = self.hold.with_name(f"{self.hold.name}.rank{trainer.global_rank}")
        waiting.touch()
        deadline = time.monotonic() + 300
        while self.hold.exists() and not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.1)
        waiting.unlink(missing_ok=True)
