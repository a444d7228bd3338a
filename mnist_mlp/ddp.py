"""Multi-process (DDP) training: every rank stops together on SIGTERM, and one rank records.

Lightning's ``strategy=ddp`` re-launches ``train.py`` once per extra rank; each process runs
``runner.run`` from the top. Rank 0 owns the MLflow run (``mnist_mlp.tracking.run``), writes the
checkpoints (Lightning's strategy) and the report (``runner.test_and_report``).
"""

from __future__ import annotations

import contextlib
import signal
import warnings
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only

# The epoch metrics are torchmetrics values whose compute() already synced every rank; Lightning
# still advises sync_dist=True once per key (about 60 lines per DDP run), advice that does not apply.
warnings.filterwarnings(
    "ignore", message=r"It is recommended to use `self\.log\('.*', \.\.\., sync_dist=True\)`"
)


_rank_death: list[Callable[[str], None]] = []  # what rank 0 does before the launcher kills it


@contextlib.contextmanager
def on_rank_death(callback: Callable[[str], None]) -> Iterator[None]:
    """In this block, ``callback(why)`` runs in rank 0 just before a dead rank gets it SIGKILLed.

    Lightning's launcher for ``strategy=ddp`` from one command (``_ChildProcessObserver``) polls
    the ranks it started; when one exits non-zero (an exception, the OOM killer), it SIGKILLs every
    rank, rank 0 included, so nothing in rank 0 could close the MLflow run: it stayed RUNNING.
    Lightning has no hook there, so its ``_terminate_all`` is wrapped (a private API: the rank-death
    test of tests/integration/test_ddp.py fails if it changes). ``callback`` runs in the observer's
    thread, while the main thread may be blocked in a collective waiting for the dead rank.
    """
    _patch_observer()
    _rank_death.append(callback)
    try:
        yield
    finally:
        _rank_death.remove(callback)


def _patch_observer() -> None:
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver

    original = _ChildProcessObserver._terminate_all
    if getattr(original, "_calls_rank_death", False):
        return

    def _terminate_all(observer: Any) -> None:
        dead = [f"rank {rank} (PID {p.pid}) exited with code {p.returncode}"
                for rank, p in enumerate(observer._child_processes, 1) if p.returncode]
        for callback in list(_rank_death):
            with contextlib.suppress(Exception):  # the ranks must be stopped whatever happens
                callback(", ".join(dead))
        original(observer)

    _terminate_all._calls_rank_death = True  # type: ignore[attr-defined]
    _ChildProcessObserver._terminate_all = _terminate_all  # type: ignore[method-assign]


def is_rank_zero() -> bool:
    """True in the process that records; known before fit (Lightning reads ``RANK``/``LOCAL_RANK``)."""
    return rank_zero_only.rank == 0


class StopAllRanksOnSigterm(Callback):
    """Under DDP, a SIGTERM to any rank stops every rank at the same training step.

    Lightning's own SIGTERM handler runs a ``broadcast`` inside the signal handler and forwards the
    signal to the other ranks, who then each raise at whatever step they are in: with gloo on CPU
    the ranks meet in mismatched collectives and hang (seen: ``kill -TERM`` of rank 0 with two CPU
    ranks, both processes blocked for good). Here the handler only notes the signal; after every
    training step the ranks agree (one all-reduce) whether any of them was signalled, and all set
    Lightning's ``received_sigterm`` together, so Lightning raises ``SIGTERMException`` on every rank
    at the same step and ``CheckpointOnInterrupt`` saves the state once. One process: no-op
    (Lightning's handling is right there).
    """

    def __init__(self) -> None:
        self._signalled = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:  # after Lightning registered its handlers (trainer._run)
            self._signalled = False
            signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self._signalled = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(self._signalled,
                                                                               all=False):
            trainer._signal_connector.received_sigterm = True
