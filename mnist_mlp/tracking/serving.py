"""MLflow's scoring server for a model of this project's store: checked, started, stopped.

``python serve.py model_uri=<uri>`` (``make serve MODEL=<uri>``) checks the model URI against
``logger.tracking_uri`` and then becomes ``mlflow models serve --env-manager local``; tests and
``python -m bench serve`` start that same command with ``scoring_server``. Two things the bare
MLflow command gets wrong from a venv that is not activated, handled here: ``mlflow`` starts
``uvicorn`` through ``bash -c`` from ``PATH`` (exit 127 without the venv's ``bin``), and it reads the
store from ``MLFLOW_TRACKING_URI`` (``./mlruns`` without it). The model's ``model_config`` is
overridden through MLflow's ``SERVING_MODEL_CONFIG``: ``max_rows`` per request and torch's
threads per worker (``threads``, the model's ``torch_threads``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_mlp.errors import UserError
from mnist_mlp.paths import repo_root

SERVING_MODEL_CONFIG = "SERVING_MODEL_CONFIG"  # mlflow.pyfunc.scoring_server's variable
IMAGE_COLUMN = "image"  # served_model.IMAGE_COLUMN: each image's raw bytes


def check_model(model_uri: str | None, tracking_uri: str) -> None:
    """A UserError unless ``model_uri`` names an MLflow model that ``tracking_uri`` holds."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not model_uri:
        raise UserError(
            "Give the model to serve: `make serve MODEL=runs:/<run id>/model` (a training run's "
            "model) or `make serve MODEL=models:/<name>@champion` (a sweep's best, registered with "
            "logger.registered_model_name=<name>); `python serve.py model_uri=...` takes the same."
        )
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as err:
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise UserError(
            f"model_uri={model_uri} is not a model in {tracking_uri} ({first}). Copy a training "
            "run's ID from the MLflow UI (`make ui`) for runs:/<run id>/model; a models:/<name>"
            "@champion alias exists once a sweep ran with logger.registered_model_name=<name>; "
            "check logger.tracking_uri."
        ) from None


def server_command(model_uri: str, host: str, port: int, workers: int,
                   timeout: int) -> list[str]:
    """``mlflow models serve`` of this interpreter's environment, for ``model_uri``."""
    return [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
            "--env-manager", "local", "-h", host, "-p", str(port), "-w", str(workers),
            "-t", str(timeout)]


def server_environment(tracking_uri: str, model_config: Mapping[str, Any],
                       base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment) with the venv's ``bin`` first on PATH, the store
    and the model_config override."""
    base = dict(os.environ if base is None else base)
    bin_dir = str(Path(sys.executable).parent)
    path = base.get("PATH", "")
    return {**base, "PATH": bin_dir + (os.pathsep + path if path else ""),
            "MLFLOW_TRACKING_URI": tracking_uri,
            SERVING_MODEL_CONFIG: json.dumps({k: v for k, v in model_config.items() if v})}


def _check_numbers(cfg: Any) -> None:
    if not 0 < int(cfg.port) < 65536:
        raise UserError(f"port={cfg.port} is not a TCP port: give one from 1024 to 65535 "
                        "(`make serve MODEL=... PORT=5002`).")
    for key in ("workers", "max_rows", "timeout"):
        if int(cfg[key]) < 1:
            raise UserError(f"{key}={cfg[key]} must be 1 or more (conf/serve.yaml).")


def prepare(cfg: Any) -> tuple[list[str], dict[str, str]]:
    """The checked command line and environment of ``serve.py``'s scoring server."""
    _check_numbers(cfg)
    check_model(cfg.model_uri, cfg.logger.tracking_uri)
    command = server_command(str(cfg.model_uri), str(cfg.host), int(cfg.port), int(cfg.workers),
                             int(cfg.timeout))
    config = {"max_rows": int(cfg.max_rows), "torch_threads": cfg.threads}
    return command, server_environment(cfg.logger.tracking_uri, config)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ScoringServer:
    """A running scoring server: its address and process (the group leader)."""

    url: str
    process: subprocess.Popen
    log: Path | None

    def log_tail(self, chars: int = 3000) -> str:
        return _tail(self.log, chars)


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy


def _tail(log: Path | None, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log and log.is_file() else ""


def wait_answering(url: str, process: subprocess.Popen, log: Path | None = None,
                   wait_s: float = 300) -> None:
    """Return once ``url`` answers 200 (a server's health or ping address).

    Raises RuntimeError, with the end of ``log``, if ``process`` exits first, and TimeoutError if
    nothing answers within ``wait_s`` (a server can take minutes to start on a loaded 2-core
    machine). The tests' servers and ``docs/screenshots.py`` wait with this too.
    """
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited ({process.returncode}):\n{_tail(log)}")
        with contextlib.suppress(OSError), _DIRECT.open(url, timeout=5) as answer:
            if answer.status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"no answer from {url} after {wait_s:.0f} s:\n{_tail(log)}")


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
    """Stop a process started with ``start_new_session=True`` and everything it started (serve.py
    became mlflow, which started uvicorn and its workers): ``sig`` to the group, SIGKILL after
    ``wait_s``. SIGKILL as ``sig`` stops at once, as a crash would. The tests' servers and Slurm
    daemons stop with this too. The group is signalled even when its leader has ended: what the
    leader started may still run."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=wait_s)


@contextlib.contextmanager
def scoring_server(model_uri: str, tracking_uri: str, *, workers: int = 1,
                   overrides: Sequence[str] = (), log: Path | None = None,
                   env: Mapping[str, str] | None = None,
                   wait_s: float = 300) -> Iterator[ScoringServer]:
    """``python serve.py`` on a free loopback port, ready (``/ping``) inside the block, stopped
    after it, also when the block raises. Output goes to ``log`` (discarded without one);
    ``env`` replaces this process's environment."""
    port = free_port()
    argv = [sys.executable, str(repo_root() / "serve.py"), f"model_uri={model_uri}",
            f"logger.tracking_uri={tracking_uri}", "host=127.0.0.1", f"port={port}",
            f"workers={workers}", *overrides]
    with open(log, "w") if log else open(os.devnull, "w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, cwd=repo_root(),
                                   env=None if env is None else dict(env))
    server = ScoringServer(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_answering(f"{server.url}/ping", process, log, wait_s)
        yield server
    finally:
        stop_group(process)


def pixels_body(images: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A request of N x 784 pixel values (MLflow's ``inputs`` JSON)."""
    import numpy as np

    rows = np.asarray(images).reshape(len(images), -1)
    return {"inputs": rows.tolist(), **({"params": dict(params)} if params else {})}


def image_body(images: Any, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The compact request: each image's 784 bytes as base64 text in column ``image``."""
    import numpy as np

    rows = np.asarray(images, dtype=np.uint8).reshape(len(images), -1)
    encoded = [base64.b64encode(r.tobytes()).decode("ascii") for r in rows]
    return {"inputs": {IMAGE_COLUMN: encoded}, **({"params": dict(params)} if params else {})}
