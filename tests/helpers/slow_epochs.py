"""A test-only callback that stretches training, so a test can act while it is under way."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class SleepAtEpochEnd(Callback):
    """Sleeps ``seconds`` after each epoch; after the last one, also waits while ``hold`` exists."""

    def __init__(self, seconds: float, hold: str | None = None) -> None:
        self.seconds, self.hold = seconds, Path(hold) if hold else None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(self.seconds)
        deadline = time.monotonic() + 300
        last = trainer.current_epoch == trainer.max_epochs - 1
        while last and self.hold is not None and self.hold.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
