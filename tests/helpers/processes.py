"""The project's commands as whole processes: started, watched, signalled, their exit read.

For tests where the process itself is the subject (exit codes, the one-paragraph error, signals,
DDP's re-launch, what the console shows). Everything else runs in-process (``tests.helpers.configs``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.helpers.configs import ROOT

T = TypeVar("T")


def script_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, for a child as a user's shell would start it.

    Without the MLflow HTTP settings that in-process code of earlier tests left behind
    (``tracking.store.fail_fast_http`` sets them process-wide): each command sets its own.
    """
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    return {**inherited, "MPLBACKEND": "Agg", **(env or {})}


def command(script: str, *args: str) -> list[str]:
    """``python <script> args...`` for ``train.py``, ``evaluate.py`` or ``compare.py``; ``-m pkg.mod``."""
    where = [script] if script == "-m" else [str(ROOT / script)]
    return [sys.executable, *where, *args]


def run_script(script: str, *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None,
               timeout: float = 300, merge_stderr: bool = False) -> subprocess.CompletedProcess:
    """Run a command to its end, output captured (a pipe: not a terminal, as in CI or ``> file``).

    ``merge_stderr``: stderr into stdout, in the order a log file would get them.
    """
    return subprocess.run(
        command(script, *args), cwd=cwd, text=True, timeout=timeout, env=script_env(env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
    )


def run_train(*overrides: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """``python train.py overrides...`` to its end (``run_script``'s keywords)."""
    return run_script("train.py", *overrides, **kwargs)


def ctrl_c_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT, as Ctrl-C in a terminal does.

    A shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it, so a
    test runner started that way would see its train.py shrug off the signal.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_script(script: str, *args: str, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a command for a test to act on while it runs (signals, a server outage); output piped.

    SIGINT reaches it as Ctrl-C in a terminal would (``ctrl_c_as_in_a_terminal``).
    """
    return subprocess.Popen(command(script, *args), cwd=cwd, env=script_env(env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_as_in_a_terminal)


def wait_for(condition: Callable[[], T], what: str, proc: subprocess.Popen | None = None,
             timeout: float = 300, every: float = 0.2) -> T:
    """Poll ``condition`` until it returns something true, and return that.

    Fails with ``what`` after ``timeout`` s (minutes on a loaded machine), or as soon as ``proc``
    has ended, with the end of its stderr.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate(timeout=60)
            raise AssertionError(f"{what}: the process ended ({proc.returncode}) first:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


def stopped(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if a failed test left it running (a ``finally`` clause)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=60)


def processes_of(folder: Path) -> list[int]:
    """PIDs whose command line names ``folder`` (train.py of every DDP rank, say)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(folder) in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def assert_one_paragraph(result: subprocess.CompletedProcess, *needles: str, rc: int = 2) -> None:
    """Exit code, no traceback, and the ``error:`` paragraph holding every needle."""
    assert result.returncode == rc, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    error = result.stderr[result.stderr.index("error: "):]
    assert "\n" not in error.strip(), error
    for needle in needles:
        assert needle in error, error
