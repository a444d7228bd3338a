"""Loopback networking for test servers and ``docs/screenshots.py``: a free port, a health poll.

Standard library only, so the screenshot script imports it without the test dependencies. Requests
go straight to 127.0.0.1, never through a proxy named in the environment.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path | None) -> str:
    return f":\n{log.read_text(errors='replace')[-3000:]}" if log and log.is_file() else ""


def wait_healthy(url: str, proc: subprocess.Popen, log: Path | None = None,
                 timeout: float = 300) -> None:
    """Return once ``url`` answers 200; raise, with the end of ``log``, if ``proc`` exits first or
    nothing answers within ``timeout`` s (a server can take minutes on a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}){_log_tail(log)}")
        with contextlib.suppress(OSError), _DIRECT.open(url, timeout=5) as answer:
            if answer.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s{_log_tail(log)}")
