"""``python -m mnist_mlp.tracking.sync``'s work in-process: a journal sent, a run whose process
died ended FAILED, a run still going left alone (mnist_mlp/tracking/sync.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mnist_mlp.errors import UserError
from mnist_mlp.tracking import sync
from mnist_mlp.tracking.journal import META, Journal
from tests.helpers.store import new_store


def test_sync_sends_a_journal_and_ends_a_run_whose_process_died(tmp_path):
    uri = new_store(tmp_path)
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("x", str(tmp_path / "art"))).info.run_id
    with pytest.raises(UserError, match="holds no MLflow buffer"):
        sync.sync(tmp_path)
    journal = Journal(tmp_path / "out" / "mlflow_buffer")
    journal.start(uri)
    journal.append({"op": "log_batch", "run_id": run_id, "metrics": [["val/acc", 0.5, 1_000, 0]]})

    other = os.getppid()  # stands in for a train.py still running: alive, on this host, not us
    meta = journal.meta()
    (journal.root / META).write_text(json.dumps({**meta, "pid": other}))
    with pytest.raises(UserError, match=f"still going \\(pid {other}\\)"):
        sync.sync(tmp_path / "out")
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a PID no process can have
    (journal.root / META).write_text(json.dumps({**meta, "pid": dead}))
    assert client.get_run(run_id).data.metrics == {}  # nothing sent meanwhile

    summary = sync.sync(tmp_path / "out")  # its process is gone, without an end status
    assert "1 metric value" in summary and "FAILED (its process ended without an end status)" in summary
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.metrics == {"val/acc": 0.5}
    assert sync.sync(tmp_path / "out").startswith("Nothing to send")
