"""Training through a tracking-server outage: writes the server does not take are kept and sent later.

While an ``http(s)`` tracking server does not answer, every write of the run (Lightning's epoch
metrics, params, tags, artifacts, the logged model, the end status) is appended to a journal in the
run's output folder (``logger.buffer_dir``, default ``<output>/mlflow_buffer``), artifacts copied
beside it; training goes on at full speed. A background thread retries every
``logger.retry_seconds`` and, once the server answers, sends the journal in order and goes back to
writing directly. If the run ends first, its local outputs are complete (report, checkpoints) and
``python -m mnist_mlp.tracking.sync <output dir>`` sends the journal later, end status included.
One warning when the server goes away (it names that command), one when it is back.

Why a journal by hand: MLflow 3.17's asynchronous logging (``MLFlowLogger(synchronous=False)``,
``MLFLOW_ENABLE_ASYNC_LOGGING``) only moves ``log_batch`` into a thread pool: a batch still goes
through urllib3's retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES=7`` with exponential backoff: minutes
per call) and is then logged as an error and dropped; artifacts, the model and ``set_terminated``
stay synchronous, and the end of the run waits for the queue. Nothing in MLflow keeps a write for a
server that comes back later. What MLflow does offer is used: ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``
and ``MLFLOW_HTTP_REQUEST_TIMEOUT=<logger.request_timeout>`` (set unless already in the
environment) make a call to a stopped server fail at once and quietly; the journal is the retry.
Local stores (``sqlite:``, files) are written directly, as before.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mnist_mlp.atomic import write_atomic

log = logging.getLogger(__name__)

JOURNAL, SENT, META, FILES = "journal.jsonl", "sent", "meta.json", "files"
SYNC_COMMAND = "python -m mnist_mlp.tracking.sync"


def is_remote(uri: str) -> bool:
    return urlparse(str(uri)).scheme in ("http", "https")


def unreachable(err: BaseException) -> bool:
    """Whether ``err`` means the server did not answer (as opposed to refusing the request)."""
    import requests
    import urllib3

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, requests.ConnectionError | requests.Timeout | urllib3.exceptions.HTTPError
                      | ConnectionError | TimeoutError | socket.timeout):
            return True
        text = str(seen)
        if text.startswith("API request to") and ("failed with exception" in text or "timed out" in text):
            return True
        status = getattr(seen, "get_http_status_code", lambda: None)()
        if status in (502, 503, 504):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def reason(err: BaseException) -> str:
    """``[Errno 111] Connection refused``, ``timed out``: urllib3's message without its retry talk."""
    text = str(err)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0)
    caused = re.search(r"Caused by \w+\('([^']+)'(?:, \w+\('([^']+))?", text)
    if caused:
        return ": ".join(g.rstrip(".") for g in caused.groups() if g)
    if "timed out" in text or "Timeout" in text:
        return "timed out"
    return text.splitlines()[0][:160] if text else type(err).__name__


class Journal:
    """The writes not yet sent, in order: ``journal.jsonl`` plus ``sent``, the count already sent.

    Append-only, so a crash mid-write loses at most the line being written; entries are never
    rewritten, so the folder is also the record of what was buffered.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def exists(self) -> bool:
        return (self.root / JOURNAL).is_file()

    def start(self, tracking_uri: str) -> None:
        """Create the folder and its ``meta.json`` (server, process) on the first kept write."""
        if self.exists():
            return
        (self.root / FILES).mkdir(parents=True, exist_ok=True)
        meta = {"tracking_uri": tracking_uri, "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.time()}
        (self.root / META).write_text(json.dumps(meta, indent=1))
        (self.root / JOURNAL).touch()

    @property
    def folder(self) -> Path:
        """What to give the sync command: the run's output folder when the buffer is in it."""
        return self.root.parent if self.root.name == "mlflow_buffer" else self.root

    def meta(self) -> dict[str, Any]:
        return json.loads((self.root / META).read_text())

    def append(self, entry: dict[str, Any]) -> None:
        with open(self.root / JOURNAL, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        lines = (self.root / JOURNAL).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def sent(self) -> int:
        path = self.root / SENT
        return int(path.read_text()) if path.is_file() else 0

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        done = self.sent()
        return [(i, e) for i, e in enumerate(self.entries()) if i >= done]

    def mark_sent(self, count: int) -> None:
        write_atomic(self.root / SENT, str(count))

    def keep(self, src: str | os.PathLike) -> str:
        """A copy of a file or folder in ``files/`` (sources such as temp dirs vanish)."""
        src = Path(src)
        dst = self.root / FILES / f"{len(list((self.root / FILES).iterdir())):04d}" / src.name
        dst.parent.mkdir(parents=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return str(dst)


def send(client: Any, entry: dict[str, Any], tracking_uri: str) -> None:
    """Perform one journal entry against ``client`` (live entries may carry the object itself)."""
    from mlflow.entities import Metric, Param, RunTag

    op, run_id = entry["op"], entry["run_id"]
    if op == "log_batch":
        client.log_batch(run_id, metrics=[Metric(*m) for m in entry.get("metrics", [])],
                         params=[Param(*p) for p in entry.get("params", [])],
                         tags=[RunTag(*t) for t in entry.get("tags", [])])
    elif op == "log_artifact":
        client.log_artifact(run_id, entry["local"], entry.get("artifact_path"))
    elif op == "log_artifacts":
        client.log_artifacts(run_id, entry["local"], entry.get("artifact_path"))
    elif op == "set_tag":
        client.set_tag(run_id, entry["key"], entry["value"])
    elif op == "set_terminated":
        client.set_terminated(run_id, entry["status"], entry.get("end_time"))
    elif op == "log_model":
        entry["log_fn"](_load_net(entry["local"]) if "net" not in entry else entry["net"])
    else:
        raise ValueError(f"unknown journal entry {op!r}")


def _load_net(path: str) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and values (model_payload)


def counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    """What a list of entries holds: metric values, params, tags, artifact uploads, models, ends."""
    out = dict.fromkeys(("metric value", "param", "tag", "artifact upload", "model", "end status"), 0)
    for e in entries:
        out["metric value"] += len(e.get("metrics", []))
        out["param"] += len(e.get("params", []))
        out["tag"] += len(e.get("tags", [])) + (e["op"] == "set_tag")
        out["artifact upload"] += e["op"] in ("log_artifact", "log_artifacts")
        out["model"] += e["op"] == "log_model"
        out["end status"] += e["op"] == "set_terminated"
    return out


def describe(entries: list[dict[str, Any]]) -> str:
    """``99 metric values, 1 tag, 2 artifact uploads, the model, the end status``."""
    parts = []
    for what, n in counts(entries).items():
        if what in ("model", "end status") and n:
            parts.append(f"the {what}")
        elif n:
            parts.append(f"{n} {what}{'s' if n > 1 else ''}")
    return ", ".join(parts) or "nothing"


class BufferedClient:
    """An ``MlflowClient`` whose writes are kept in a ``Journal`` while the server does not answer.

    Reads (``get_run``, ...) pass straight through. One per run, shared by the logger and
    ``TrackedRun`` so all writes keep their order and an outage gives one warning.
    """

    def __init__(self, client: Any, buffer_dir: str | os.PathLike, retry_seconds: float = 10.0) -> None:
        self._client = client
        self.tracking_uri = client.tracking_uri
        self.journal = Journal(buffer_dir)
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._offline_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._model_fns: dict[str, Callable[[Any], None]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def offline(self) -> bool:
        return self._offline_since is not None

    # ------------------------------------------------------------------ writes
    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = (),
                  synchronous: bool | None = None) -> None:
        self._write({"op": "log_batch", "run_id": run_id,
                     "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics or ()],
                     "params": [[p.key, p.value] for p in params or ()],
                     "tags": [[t.key, t.value] for t in tags or ()]})

    def log_metric(self, run_id: str, key: str, value: float, timestamp: int | None = None,
                   step: int | None = None, **_: Any) -> None:
        from mlflow.entities import Metric

        self.log_batch(run_id, metrics=[Metric(key, value, timestamp or int(time.time() * 1000),
                                               step or 0)])

    def log_param(self, run_id: str, key: str, value: Any, **_: Any) -> Any:
        from mlflow.entities import Param

        self.log_batch(run_id, params=[Param(key, str(value))])
        return value

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        self._write({"op": "log_artifact", "run_id": run_id, "local": str(local_path),
                     "artifact_path": artifact_path})

    def log_artifacts(self, run_id: str, local_dir: str, artifact_path: str | None = None) -> None:
        self._write({"op": "log_artifacts", "run_id": run_id, "local": str(local_dir),
                     "artifact_path": artifact_path})

    def set_tag(self, run_id: str, key: str, value: Any, **_: Any) -> None:
        self._write({"op": "set_tag", "run_id": run_id, "key": key, "value": str(value)})

    def set_terminated(self, run_id: str, status: str | None = None, end_time: int | None = None) -> None:
        self._write({"op": "set_terminated", "run_id": run_id, "status": status or "FINISHED",
                     "end_time": end_time or int(time.time() * 1000)})

    def log_model(self, run_id: str, net: Any, log_fn: Callable[[Any], None],
                  registered_model_name: str | None = None) -> None:
        """``log_fn(net)`` logs the model now; offline the network is saved beside the journal,
        with the name ``sync`` registers it under."""
        self._write({"op": "log_model", "run_id": run_id, "net": net, "log_fn": log_fn,
                     "registered_model_name": registered_model_name})

    # ------------------------------------------------------------------ the outage
    def _write(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self.offline:
                self._keep(entry)
                return
        try:
            send(self._client, entry, self.tracking_uri)
        except Exception as err:
            if not unreachable(err):
                raise
            with self._lock:
                self._go_offline(err)
                self._keep(entry)

    def _keep(self, entry: dict[str, Any]) -> None:
        self.journal.start(self.tracking_uri)
        entry = dict(entry)
        if entry["op"] in ("log_artifact", "log_artifacts"):
            entry["local"] = self.journal.keep(entry["local"])
        elif entry["op"] == "log_model":
            import torch

            path = self.journal.root / FILES / f"model-{len(self.journal.entries()):04d}.pt"
            torch.save(entry.pop("net"), path)
            entry["local"] = str(path)
            entry.pop("log_fn")
        self.journal.append(entry)

    def _go_offline(self, err: BaseException) -> None:
        self._offline_since = time.monotonic()
        why = reason(err)
        log.warning(
            "MLflow server %s does not answer (%s). Training goes on; this run's metrics and "
            "artifacts are kept in %s and sent when the server answers again (tried every %g s). "
            "If the run ends first, send them later with: %s %s",
            self.tracking_uri, why, self.journal.root, self.retry_seconds, SYNC_COMMAND,
            self.journal.folder,
        )
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._retry_loop, name="mlflow-buffer", daemon=True)
            self._thread.start()

    def _retry_loop(self) -> None:
        while not self._stop.wait(self.retry_seconds):
            if self._flush():
                return

    def _flush(self) -> bool:
        """Send what is pending; True once the journal is empty and writes go direct again."""
        sent: list[dict[str, Any]] = []
        while True:
            with self._lock:
                pending = self.journal.pending()
                if not pending:
                    self._back(sent)
                    return True
            for i, entry in pending:
                if entry["op"] == "log_model":
                    entry["log_fn"] = self._model_fns.get(entry["run_id"]) or _missing_model_fn
                try:
                    send(self._client, entry, self.tracking_uri)
                except Exception as err:  # noqa: BLE001  (the thread must not die with a traceback)
                    if unreachable(err):
                        return False
                    log.warning("MLflow refused a buffered %s (skipped): %s", entry["op"], err)
                self.journal.mark_sent(i + 1)
                sent.append(entry)

    def _back(self, sent: list[dict[str, Any]]) -> None:
        away = time.monotonic() - (self._offline_since or time.monotonic())
        self._offline_since = None
        log.warning("MLflow server %s answers again after %.0f s: sent the kept %s; writing directly "
                    "again.", self.tracking_uri, away, describe(sent))

    def close(self) -> bool:
        """At the end of the run: one last try to send; True when nothing is left behind."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if not self.offline:
            return True
        if self._flush():
            return True
        pending = [e for _, e in self.journal.pending()]
        print(f"MLflow run not complete in {self.tracking_uri}: the server did not answer before the "
              f"run ended; {describe(pending)} are kept in {self.journal.root}. Send them when it is "
              f"back: {SYNC_COMMAND} {self.journal.folder}", flush=True)
        return False


def _missing_model_fn(net: Any) -> None:
    raise RuntimeError("no model logging function registered")


def log_model(client: Any, run_id: str, net: Any, log_fn: Callable[[Any], None],
              registered_model_name: str | None = None) -> None:
    """``log_fn(net)``, or kept for later when ``client`` is buffered and the server is away."""
    if isinstance(client, BufferedClient):
        client._model_fns[run_id] = log_fn
        client.log_model(run_id, net, log_fn, registered_model_name)
    else:
        log_fn(net)


def close(client: Any) -> None:
    if isinstance(client, BufferedClient):
        client.close()


def journals(folder: str | os.PathLike) -> Iterator[Journal]:
    """The journal in an output folder (``<folder>/mlflow_buffer``) or the folder itself."""
    folder = Path(folder)
    for candidate in (folder, folder / "mlflow_buffer"):
        if (candidate / JOURNAL).is_file():
            yield Journal(candidate)
            return
