"""The report's files written in a worker process while the training process logs to MLflow.

Most of a report's time is its figures (matplotlib); meanwhile the training process logs the best
checkpoint and the MLflow model, which takes about as long, so on two cores the two go side by
side (docs, Performance). The worker is one spawned process per training process, started when a
run starts, so it imports numpy, matplotlib and the report modules (no torch) on the core that a
single-threaded training run leaves idle; later runs in the process (a sweep's jobs) reuse it. It
runs the same ``write_report`` on the same inputs: the files are byte for byte those written in
the training process (``report.background=false``), which the tests check.

``concurrent.futures.ProcessPoolExecutor`` does the process work: arguments and exceptions (a
``UserError`` for an unwritable folder) cross as pickles, and the interpreter's exit shuts the
worker down. A worker that cannot start (a daemonic process may not have children) or that dies
leaves the report to the training process, with one warning.
"""

from __future__ import annotations

import atexit
import io
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from mnist_mlp.report.files import write_report
from mnist_mlp.report.settings import Settings

log = logging.getLogger(__name__)


class _Worker:
    pool: ProcessPoolExecutor | None = None


def start() -> None:
    """Start the worker now, once per process (a no-op if it runs; a warning if it cannot).

    Not in a process that is itself a pool's worker (a job of ``hydra/launcher=joblib``): the
    pool already runs a job per core, and a child of its worker would be started under loky's
    start method, which a spawned child cannot take up; such a job draws its report itself.
    """
    if _Worker.pool is not None or multiprocessing.parent_process() is not None:
        return
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_prepare)
        pool.submit(int)  # the executor starts its process on the first task
    except Exception as err:  # noqa: BLE001  (no child processes here: write in-process)
        log.warning("The report is written in the training process (no worker process: %s).", err)
        return
    _Worker.pool = pool


def _prepare() -> None:
    """In the worker, before any report: what ``write_report`` draws with, and one small figure
    (matplotlib reads its fonts at the first text). Ctrl-C is the training process's to handle,
    and the worker ends with it (``_exit_with_parent``).
    At its exit, which the training process's own exit waits for, the worker holds nothing: it
    ends at once (``os._exit`` from its last ``atexit`` handler) instead of tearing down numpy and
    matplotlib."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    atexit.register(os._exit, 0)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.text(0.5, 0.5, "0")
    figure.savefig(io.BytesIO(), format="png")


def _exit_with_parent() -> None:
    """End the worker once the training process is gone, however it went (a DDP rank's failure,
    SIGKILL): an orphan would hold the run's stdout and stderr open, and whoever waits for them
    (a terminal's pipe, a test, a job scheduler) would wait for good."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


class PendingReport:
    """A report being written; ``wait`` returns ``write_report``'s paths or raises its error."""

    def __init__(self, write_here: Callable[[], dict[str, Path]],
                 future: Future | None = None) -> None:
        self._write_here, self._future = write_here, future
        self._paths: dict[str, Path] | None = None if future is not None else write_here()

    def wait(self) -> dict[str, Path]:
        if self._paths is None:
            try:
                self._paths = self._future.result()
            except BrokenProcessPool as err:
                self._paths = _written_here(self._write_here, err)
        return self._paths


def _written_here(write_here: Callable[[], dict[str, Path]], err: Exception) -> dict[str, Path]:
    log.warning("The report worker process stopped (%s); the report is written here.", err)
    _Worker.pool = None
    return write_here()


def write(settings: Settings, *args: Any, **kwargs: Any) -> PendingReport:
    """``write_report(settings, ...)`` in the worker when ``settings.background`` (started here if
    ``start`` was not called), in this process otherwise. Nothing given may change until ``wait``:
    the arguments are pickled for the worker meanwhile."""

    def write_here() -> dict[str, Path]:
        return write_report(settings, *args, **kwargs)

    if settings.background:
        start()
    if not settings.background or _Worker.pool is None:
        return PendingReport(write_here)
    try:
        return PendingReport(write_here, _Worker.pool.submit(write_report, settings, *args, **kwargs))
    except BrokenProcessPool as err:  # the worker died while idle
        paths = _written_here(write_here, err)
        return PendingReport(lambda: paths)
