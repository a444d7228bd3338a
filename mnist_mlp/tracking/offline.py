"""Training through a tracking-server outage: writes the server does not take are kept and sent later.

While an ``http(s)`` tracking server does not answer, every write of the run (Lightning's epoch
metrics, params, tags, artifacts, the logged model, the end status) is appended to the run's
journal (``tracking.journal``); training goes on at full speed. A background thread retries every
``logger.retry_seconds`` and, once the server answers, sends the journal in order and goes back to
writing directly. If the run ends first, its local outputs are complete (report, checkpoints) and
``python -m mnist_mlp.tracking.sync <output dir>`` sends the journal later, end status included.
One warning when the server goes away (it names that command), one when it is back.

Why a journal by hand: MLflow 3.17's asynchronous logging (``MLFlowLogger(synchronous=False)``,
``MLFLOW_ENABLE_ASYNC_LOGGING``) only moves ``log_batch`` into a thread pool: a batch still goes
through urllib3's retries (minutes per call with exponential backoff) and is then logged as an
error and dropped; artifacts, the model and ``set_terminated`` stay synchronous, and the end of the
run waits for the queue. Nothing in MLflow keeps a write for a server that comes back later. What
MLflow does offer is used: no retries and a short timeout (``store.fail_fast_http``) make a call to
a stopped server fail at once and quietly; the journal is the retry. Local stores (``sqlite:``,
files) are written directly.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from typing import Any
from urllib.parse import urlparse

from mnist_mlp.tracking.journal import SYNC_COMMAND, Journal, describe, send

log = logging.getLogger(__name__)


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

    def log_model(self, run_id: str, payload: dict[str, Any],
                  registered_model_name: str | None = None) -> None:
        """The logged model now; offline its payload is kept beside the journal, with the name
        ``sync`` registers it under."""
        self._write({"op": "log_model", "run_id": run_id, "payload": payload,
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
            entry["local"] = self.journal.keep_payload(entry.pop("payload"))
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


def log_model(client: Any, run_id: str, payload: dict[str, Any],
              registered_model_name: str | None = None) -> None:
    """The run's model (``tracking.model.model_payload``): logged now, or kept with the run's other
    writes while its server does not answer."""
    if isinstance(client, BufferedClient):
        client.log_model(run_id, payload, registered_model_name)
    else:
        send(client, {"op": "log_model", "run_id": run_id, "payload": payload,
                      "registered_model_name": registered_model_name}, client.tracking_uri)


def close(client: Any) -> None:
    if isinstance(client, BufferedClient):
        client.close()
