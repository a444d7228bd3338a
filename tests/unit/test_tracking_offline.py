"""The outage buffer on its own (mnist_mlp/tracking/offline.py): order, one warning each way, no loss.

A stand-in client refuses connections while ``down``; the end-to-end tests with a real server are
in test_tracking_outage.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import requests
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from mnist_mlp.tracking import offline
from mnist_mlp.tracking.journal import Journal, send


class FlakyClient:
    tracking_uri = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.down, self.calls = False, []

    def _call(self, *record):
        if self.down:
            try:
                raise requests.ConnectionError("[Errno 111] Connection refused")
            except requests.ConnectionError:
                raise MlflowException(  # MLflow's words for a stopped server
                    "API request to http://127.0.0.1:1/api failed with exception HTTPConnectionPool("
                    "host='127.0.0.1', port=1): Max retries exceeded with url: /api (Caused by "
                    "NewConnectionError('<HTTPConnection>: Failed to establish a new connection: "
                    "[Errno 111] Connection refused'))") from None
        self.calls.append(record)

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._call("batch", run_id, [(m.key, m.value, m.step, m.timestamp) for m in metrics],
                   [(p.key, p.value) for p in params])

    def log_artifacts(self, run_id, local_dir, artifact_path=None):
        self._call("artifacts", run_id, sorted(p.name for p in Path(local_dir).iterdir()))

    def set_terminated(self, run_id, status=None, end_time=None):
        self._call("end", run_id, status, end_time)

    def get_run(self, run_id):
        return run_id


def _metric(step: int) -> Metric:
    return Metric("val/acc", step / 10, 1_000 + step, step)


def test_writes_during_an_outage_arrive_in_order_with_one_warning_each_way(tmp_path, caplog):
    client = FlakyClient()
    buffered = offline.BufferedClient(client, tmp_path / "mlflow_buffer", retry_seconds=0.05)
    caplog.set_level(logging.WARNING, "mnist_mlp.tracking.offline")
    buffered.log_batch("r", params=[Param("lr", "0.1")], metrics=[_metric(0)])
    client.down = True
    start = time.monotonic()
    for step in (1, 2, 3):
        buffered.log_batch("r", metrics=[_metric(step)])
    files = tmp_path / "files"
    files.mkdir()
    (files / "report.md").write_text("# report")
    buffered.log_artifacts("r", str(files), "report")
    (files / "report.md").unlink()  # the source may vanish: the buffer holds a copy
    assert time.monotonic() - start < 1  # no retries in the caller
    assert buffered.get_run("r") == "r"  # reads pass through
    client.down = False
    deadline = time.monotonic() + 10
    while buffered.offline and time.monotonic() < deadline:
        time.sleep(0.05)
    buffered.set_terminated("r", "FINISHED", end_time=5)
    assert buffered.close()

    assert client.calls == [
        ("batch", "r", [("val/acc", 0.0, 0, 1000)], [("lr", "0.1")]),
        *[("batch", "r", [("val/acc", s / 10, s, 1000 + s)], []) for s in (1, 2, 3)],
        ("artifacts", "r", ["report.md"]),
        ("end", "r", "FINISHED", 5),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "does not answer ([Errno 111] Connection refused)" in messages[0]
    assert "Max retries" not in messages[0] and "mnist_mlp.tracking.sync" in messages[0]
    assert "answers again" in messages[1] and "3 metric values, 1 artifact upload" in messages[1]


def test_a_run_that_ends_during_the_outage_keeps_everything_for_sync(tmp_path, capsys):
    client = FlakyClient()
    buffered = offline.BufferedClient(client, tmp_path / "mlflow_buffer", retry_seconds=60)
    client.down = True
    buffered.log_batch("r", metrics=[_metric(1)])
    buffered.set_terminated("r", "KILLED", end_time=7)
    assert not buffered.close()
    assert f"mnist_mlp.tracking.sync {tmp_path}" in capsys.readouterr().out
    journal = Journal(tmp_path / "mlflow_buffer")
    assert [e["op"] for _, e in journal.pending()] == ["log_batch", "set_terminated"]
    client.down = False
    for i, entry in journal.pending():  # what the sync command does
        send(client, entry, client.tracking_uri)
        journal.mark_sent(i + 1)
    assert client.calls == [("batch", "r", [("val/acc", 0.1, 1, 1001)], []), ("end", "r", "KILLED", 7)]
    assert journal.pending() == []


def test_refusals_are_not_outages():
    bad_param = MlflowException("Changing param values is not allowed", error_code=INVALID_PARAMETER_VALUE)
    assert not offline.unreachable(bad_param)
    assert offline.unreachable(MlflowException("proxy: no upstream", error_code=TEMPORARILY_UNAVAILABLE))
    with pytest.raises(MlflowException):
        client = FlakyClient()
        client.log_batch = lambda *a, **k: (_ for _ in ()).throw(bad_param)
        offline.BufferedClient(client, "/nonexistent").log_batch("r", metrics=[_metric(0)])
