"""The training progress on the console, as suits where stdout goes.

On a terminal the tqdm bar redraws one line in place; written to a file or a CI log, every redraw
is a new line (about 100 lines per epoch at ``refresh_rate: 50``). ``progress_bar`` picks, at build
time, the bar for a terminal and ``EpochLines`` (one line per epoch with its metrics) otherwise.
Both number epochs as ``mnist_mlp.epochs`` does ("Epoch 1/30" is the first).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelSummary, ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

from mnist_mlp import epochs
from mnist_mlp.config import hydra_config


class EpochLines(ProgressBar):
    """One line per training epoch: its number, the progress-bar metrics and the epoch's seconds.

    Printed when the next epoch starts and when training ends, because the module logs its
    training metrics in ``on_train_epoch_end``, which Lightning calls after every callback's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._epoch_start = time.perf_counter()
        self._pending: int | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)
        self._epoch_start = time.perf_counter()
        self._pending = trainer.current_epoch

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush(trainer)

    def _flush(self, trainer: Any) -> None:
        if self._pending is None or not self._enabled or not trainer.is_global_zero:
            self._pending = None
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, trainer.lightning_module).items()
                   if k != "v_num"}
        text = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in sorted(metrics.items()))
        seconds = time.perf_counter() - self._epoch_start
        print(f"Epoch {epochs.of(trainer, self._pending)}: {text} ({seconds:.1f} s)", flush=True)
        self._pending = None


class EpochBar(TQDMProgressBar):
    """Lightning's tqdm bar, its epochs numbered from 1 and out of the total ("Epoch 3/30")."""

    def on_train_epoch_start(self, trainer: Any, *_: Any) -> None:
        # Lightning's own hook but for the name: it draws "Epoch 0" (a line of its own in a log)
        # before anyone could rename it. Private: ``_leave``, Lightning's option for the bar.
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.reset()
        self.train_progress_bar.total = convert_inf(self.total_train_batches)
        self.train_progress_bar.initial = 0
        self.train_progress_bar.set_description(f"Epoch {epochs.of(trainer)}")


def display_callbacks(callbacks: Sequence[Callback], trainer_cfg: Mapping[str, Any]
                      ) -> tuple[list[Callback], dict[str, bool]]:
    """The configured callbacks as the trainer's display switches allow, and the flags to pass.

    ``trainer.enable_progress_bar=false`` drops a configured bar (Lightning refuses the pair) and
    ``enable_model_summary=false`` a configured summary (it would still print). A configured
    summary callback is the summary: Lightning's own flag would only add a second one. In a sweep,
    only the first job shows the summary: every job trains the same kind of network.
    """
    summary = trainer_cfg.get("enable_model_summary", True) and not later_sweep_job()
    kept = [c for c in callbacks
            if not (isinstance(c, ProgressBar) and not trainer_cfg.get("enable_progress_bar", True))
            and not (isinstance(c, ModelSummary) and not summary)]
    own_summary = any(isinstance(c, ModelSummary) for c in callbacks)
    return kept, ({"enable_model_summary": False} if own_summary or not summary else {})


def later_sweep_job() -> bool:
    """Whether this is a Hydra multirun job other than the first (``hydra.job.num`` > 0)."""
    from hydra.types import RunMode

    hc = hydra_config()
    return hc is not None and hc.mode == RunMode.MULTIRUN and int(hc.job.get("num") or 0) > 0


def progress_bar(mode: str = "auto", refresh_rate: int = 50) -> ProgressBar:
    """``bar`` (tqdm), ``lines`` (``EpochLines``) or ``auto``: the bar when stdout is a terminal."""
    if mode not in ("auto", "bar", "lines"):
        raise ValueError(f"callbacks.progress_bar.mode={mode!r}: use auto, bar or lines")
    use_bar = mode == "bar" or (mode == "auto" and sys.stdout.isatty())
    return EpochBar(refresh_rate=refresh_rate) if use_bar else EpochLines()
