"""Process-wide torch settings from the config, and the wall-clock phases of a run.

On a small CPU the thread count is the largest speed knob there is: with two OpenMP threads on two
busy cores every small op of this MLP waits at a barrier for a descheduled thread, while one thread
loses little on an idle machine. ``python -m bench`` measures both.

The phases (startup, setup, tracking, fit, test and report, tracking outputs) go to MLflow as
``time/<phase>_s`` metrics: where a run's fixed cost goes is then visible for every run, and the
benchmark reads its fixed-cost breakdown from there.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch


def apply_torch_settings(cfg: Mapping[str, Any]) -> None:
    """``threads`` (intra-op CPU threads; null keeps torch's default, one per core)."""
    threads = cfg.get("threads")
    if threads is not None:
        torch.set_num_threads(int(threads))


def process_age() -> float | None:
    """Seconds since this process started (interpreter, imports, Hydra), where /proc tells it."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5), counted after the ")"
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class PhaseClock:
    """Wall seconds per named phase, each ending at its ``mark``; ``startup`` before the clock.

    ``startup`` of the first clock in a process is the process's age (interpreter, imports,
    Hydra). A Hydra multirun runs its jobs one after another in the same process (or in reused
    joblib workers): a later job's ``startup`` is the time since the previous clock's last mark,
    i.e. that job's own start (Hydra's compose, output folder), not the jobs before it.
    """

    _previous_end: float | None = None  # perf_counter of the last mark of any clock in this process

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        now = time.perf_counter()
        previous = PhaseClock._previous_end
        startup = process_age() if previous is None else now - previous
        if startup is not None:
            self.seconds["startup"] = startup
        self._last = now

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = PhaseClock._previous_end = now

    def summary(self) -> str:
        return ", ".join(f"{phase} {s:.1f} s" for phase, s in self.seconds.items())


def skip_final_collection() -> None:
    """Shorten a run's exit (seconds on a small CPU; docs, Performance).

    At exit CPython tears down every module of torch, Lightning, MLflow and SQLAlchemy with the
    garbage collector walking their objects again and again, only for the OS to free the memory
    a moment later. One collection now frees what the run left (without it, teardown raised peak
    RSS); ``gc.freeze()`` then takes the survivors out of the collector's sight.
    atexit handlers, file flushes and reference-counted clean-up still run.
    """
    gc.collect()
    gc.freeze()
