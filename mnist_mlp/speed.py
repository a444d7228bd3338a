"""Process-wide settings from the config, the wall-clock and memory phases of a run, the garbage
collector while the libraries import, and a command's quick exit.

On a small CPU the thread count is the largest speed knob there is: with two OpenMP threads on two
busy cores every small op of this MLP waits at a barrier for a descheduled thread, while one thread
loses little on an idle machine. ``python -m bench`` measures both.

The phases (startup, setup, tracking, fit, test and report, tracking outputs) go to MLflow as
``time/<phase>_s`` metrics, with the resident memory at the end of each phase and the process's
peak so far (``system/phase_memory/<phase>_mb`` and ``_peak_mb``: the run page's System metrics
tab, so that the Model metrics tab opens on the learning curves and the test set): where a run's
fixed cost and its memory go is then visible for every run, and the benchmark reads its
breakdown from there.

Nothing here imports torch at module level: ``train.py`` imports this module before it knows
whether the process trains (a sweep's parent process only launches jobs).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

#: Where the phases' memory goes in MLflow: under ``system/``, the run page's System metrics tab.
PHASE_MEMORY = "system/phase_memory"


def apply_torch_settings(cfg: Mapping[str, Any]) -> None:
    """``threads`` (intra-op CPU threads; null keeps torch's default, one per core)."""
    import torch

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


def resident_mb() -> tuple[float, float] | None:
    """This process's resident memory now and its peak so far (``VmRSS``, ``VmHWM``), in MB."""
    try:
        values = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]
    except (OSError, ValueError, KeyError, IndexError):
        return None


class PhaseClock:
    """Wall seconds per named phase, each ending at its ``mark``; ``startup`` before the clock.

    ``startup`` of the first clock in a process is the process's age (interpreter, imports,
    Hydra). A Hydra multirun runs its jobs one after another in the same process (or in reused
    joblib workers): a later job's ``startup`` is the time since the previous clock's last mark,
    i.e. that job's own start (Hydra's compose, output folder), not the jobs before it.

    Each mark also records the resident memory then and the process's peak so far: the peak of a
    phase is its ``peak`` where that is above the previous phase's (a later job of a sweep shares
    the peak of the jobs before it in the process).
    """

    _previous_end: float | None = None  # perf_counter of the last mark of any clock in this process

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.memory: dict[str, tuple[float, float]] = {}  # phase -> (resident MB, peak MB so far)
        now = time.perf_counter()
        previous = PhaseClock._previous_end
        startup = process_age() if previous is None else now - previous
        if startup is not None:
            self.seconds["startup"] = startup
            self._remember_memory("startup")
        self._last = now

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = PhaseClock._previous_end = now
        self._remember_memory(phase)

    def _remember_memory(self, phase: str) -> None:
        memory = resident_mb()
        if memory is not None:
            self.memory[phase] = memory

    def metrics(self) -> dict[str, float]:
        """``time/<phase>_s``, ``system/phase_memory/<phase>_mb`` and ``..._peak_mb``."""
        out = {f"time/{phase}_s": s for phase, s in self.seconds.items()}
        for phase, (rss, peak) in self.memory.items():
            out[f"{PHASE_MEMORY}/{phase}_mb"] = rss
            out[f"{PHASE_MEMORY}/{phase}_peak_mb"] = peak
        return out

    def summary(self) -> str:
        return ", ".join(f"{phase} {s:.1f} s" for phase, s in self.seconds.items())


#: Optional backends of torchmetrics that no command uses: installed (MLflow and the report need
#: them), each is imported by ``import lightning`` through torchmetrics: torchvision's models for
#: its image metrics, ``scipy.signal`` for its audio metrics, ``matplotlib.pyplot`` for ``plot``.
UNUSED_BACKENDS = frozenset({"torchvision", "scipy", "matplotlib"})


@contextlib.contextmanager
def importing_libraries() -> Iterator[None]:
    """Around a process's first import of torch and Lightning (``train.py``, a joblib worker's first
    job, a DDP rank, ``evaluate.py``): the cyclic garbage collector is off meanwhile, and what was
    imported is then frozen (``gc.freeze``), out of its sight for good; and torchmetrics is told
    that ``UNUSED_BACKENDS`` are not installed (``backends_hidden``).

    Importing them makes millions of long-lived objects and next to no garbage, and each full pass
    of the collector walks all of them again: about a third of the import time on a small CPU
    (docs, Performance). Nothing is done where Lightning is imported already (a sweep's later job,
    a test session, whose own objects must stay collectable).
    """
    if "lightning" in sys.modules:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        with backends_hidden(UNUSED_BACKENDS):
            yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class _Hidden:
    names: frozenset[str] = frozenset()


@contextlib.contextmanager
def backends_hidden(names: frozenset[str]) -> Iterator[None]:
    """Meanwhile, the availability checks of ``lightning_utilities`` that torchmetrics reads when it
    is imported (``package_available``, ``RequirementCache``) answer "not installed" for ``names``,
    so torchmetrics imports none of them: about 1 s and 100 MB less for every command that imports
    Lightning (docs, Performance). A check made meanwhile keeps its answer: a torchmetrics metric
    that needs one of them (an image or audio metric, ``Metric.plot``) says it is not installed.

    Patching the two is the only way: torchmetrics reads them in its ``__init__``, before anything
    of it could be configured. ``tests/integration/test_quick_exit.py`` checks what is imported.
    """
    from lightning_utilities.core import imports as checks

    cache_class = checks.RequirementCache
    original_available, original_check = checks.package_available, cache_class._check_available

    def package_available(package_name: str) -> bool:  # modules that imported it keep this one
        return package_name.split(".")[0] not in _Hidden.names and original_available(package_name)

    def check_available(cache: Any) -> None:
        if not hasattr(cache, "available") and _required(cache) & _Hidden.names:
            cache.available = False
            cache.message = (f"{cache.requirement or cache.module} is not imported in this "
                             "process (mnist_mlp.speed.UNUSED_BACKENDS)")
            return
        original_check(cache)

    _Hidden.names = names
    checks.package_available, cache_class._check_available = package_available, check_available
    try:
        yield
    finally:
        _Hidden.names = frozenset()
        checks.package_available, cache_class._check_available = original_available, original_check


def _required(cache: Any) -> set[str]:
    """The top-level package names a ``RequirementCache`` asks about."""
    import re

    names = {cache.module.split(".")[0]} if cache.module else set()
    if cache.requirement:
        names.add(re.split(r"[\s\[<>=!~;]", cache.requirement.strip(), maxsplit=1)[0])
    return names


@contextlib.contextmanager
def command() -> Iterator[None]:
    """Around a command's Hydra ``main`` (``train.py``, ``evaluate.py``, ``compare.py``): at the end
    the process exits without tearing its modules down (``exit_now``). An exception other than
    ``SystemExit`` is left to the interpreter, which prints it as usual."""
    try:
        yield
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)


def exit_now(code: Any = 0) -> NoReturn:
    """End the process as the interpreter would (threads joined, ``atexit`` handlers, output
    flushed, the same exit status for ``code`` as ``sys.exit``), then ``os._exit``: tearing down
    the modules of torch, Lightning, MLflow and SQLAlchemy, which the OS frees at once anyway,
    took seconds on a small CPU and raised the peak RSS.

    ``threading._shutdown`` and ``atexit._run_exitfuncs`` are private: they are the only way to run
    what the interpreter runs at exit (executors' shutdown hooks, then the handlers) before
    ``os._exit``. What the teardown alone would still do, closing buffered files left open
    without ``close``, is lost: the project closes its own.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
