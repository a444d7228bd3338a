"""A tracking server that stops mid-run: training goes on, nothing is lost (mnist_mlp/tracking/offline.py).

The session's ``mlflow server`` (loopback, SQLite backend, proxied artifacts) is killed once a short
synthetic-data ``train.py`` run has recorded its first epoch, then (a) started again mid-run, or (b)
only after the run ended, when ``python -m mnist_mlp.tracking.sync <output dir>`` sends what the
run kept. The run's last epoch waits (``SleepAtEpochEnd``'s hold) until the test lets it finish.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mnist_mlp.errors import UserError
from mnist_mlp.tracking import sync
from mnist_mlp.tracking.journal import Journal
from tests.helpers.configs import quiet, store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import run_script, start_script, stopped, wait_for
from tests.helpers.runs import EPOCH_METRICS, artifacts, runs_in, tracking_uri

pytestmark = pytest.mark.slow
EPOCHS = 12


def _start_train(tmp_path: Path, server, experiment: str, data: list[str], hold: Path,
                 *overrides: str):
    return start_script("train.py", *data, f"trainer.max_epochs={EPOCHS}", "logger.retry_seconds=1",
                        *store_overrides(tmp_path, server.uri, experiment=experiment), *quiet(),
                        "+callbacks.slow._target_=tests.helpers.slow_epochs.SleepAtEpochEnd",
                        "+callbacks.slow.seconds=0.3", f"+callbacks.slow.hold={hold}", *overrides)


def _first_epoch(client: MlflowClient, experiment: str, proc) -> str:
    """The run's id, once its first epoch is in the store."""
    def recorded() -> str | None:
        runs = runs_in(client, experiment, "train") if client.get_experiment_by_name(experiment) else []
        if runs and client.get_metric_history(runs[0].info.run_id, "acc/val"):
            return runs[0].info.run_id
        return None

    return wait_for(recorded, "a first epoch recorded", proc, every=0.3)


def _wait_for_log(tmp_path: Path, text: str, proc) -> None:
    log = tmp_path / "outputs" / "train.log"
    wait_for(lambda: log.is_file() and text in log.read_text(), f"{text!r} in train.log", proc,
             every=0.3)


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "WARNING" in ln and "mnist_mlp.tracking" in ln]


def _assert_complete(client: MlflowClient, run_id: str, out: Path, stdout: str) -> None:
    """Everything the local record holds is in the run, and the run is FINISHED."""
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == EPOCHS and len(set(steps)) == EPOCHS, (key, steps)  # each epoch once
    report = json.loads((out / "report" / "classification_report.json").read_text())
    assert run.data.metrics["test/acc"] == pytest.approx(report["accuracy"], abs=1e-6)
    printed = next(ln for ln in stdout.splitlines() if ln.startswith("Test set:"))
    assert printed.endswith(f", loss {run.data.metrics['test/loss']:.4f}")  # the summary's line
    assert {"time/fit_s", "time/tracking_outputs_s"} <= set(run.data.metrics)
    arts = artifacts(client, run_id)
    local_report = {f"report/{p.name}" for p in (out / "report").iterdir()}
    assert {"config.yaml", "overrides.yaml", *local_report} <= arts
    best = run.data.tags["best_checkpoint"]
    assert best in arts
    downloaded = client.download_artifacts(run_id, best, str(out.parent / "download"))
    assert Path(downloaded).read_bytes() == (out / best).read_bytes()
    import mlflow.pyfunc
    import numpy as np

    with tracking_uri(client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")  # the served model, kept or not
    assert model.predict(np.zeros((2, 784))).shape == (2,)  # one class per image


def _quiet(stderr: str) -> None:
    assert "Traceback" not in stderr and "Retrying" not in stderr and "Max retries" not in stderr, \
        stderr[-3000:]


def test_server_back_mid_run_gets_everything_and_the_run_finishes(synthetic_mnist, mlflow_server,
                                                                  tmp_path):
    server, experiment = mlflow_server, "outage-mid-run"
    hold = tmp_path / "hold"  # the last epoch waits for it to go: the server is back mid-run
    hold.touch()
    proc = _start_train(tmp_path, server, experiment, data_overrides(*synthetic_mnist), hold)
    try:
        client = MlflowClient(server.uri)
        run_id = _first_epoch(client, experiment, proc)
        server.stop(signal.SIGKILL)
        _wait_for_log(tmp_path, "does not answer", proc)  # training goes on meanwhile
        server.start()
        _wait_for_log(tmp_path, "answers again", proc)  # retried every second, then sent what it kept
        hold.unlink()
        out, err = proc.communicate(timeout=600)
    finally:
        stopped(proc)
    assert proc.returncode == 0, err[-3000:]
    _quiet(out + err)
    warnings = _warnings(out + err)  # Hydra's log goes to stdout
    assert len(warnings) == 2, (warnings, out[-3000:], err[-3000:])
    assert "does not answer" in warnings[0] and "mnist_mlp.tracking.sync" in warnings[0]
    assert "answers again" in warnings[1]
    # back before the run ended (runner logs the phase times inside the run, before it closes)
    assert out.index("answers again") < out.index("[mnist_mlp.runner][INFO] - Time: ")
    _assert_complete(client, run_id, tmp_path / "outputs", out)


def test_server_back_after_the_run_then_sync_uploads_it(synthetic_mnist, mlflow_server, tmp_path,
                                                         monkeypatch):
    server, experiment = mlflow_server, "outage-after-run"
    hold = tmp_path / "hold"  # the last epoch waits for it to go: the outage starts mid-run
    hold.touch()
    proc = _start_train(tmp_path, server, experiment, data_overrides(*synthetic_mnist), hold,
                        "logger.registered_model_name=mnist-mlp-outage")
    try:
        client = MlflowClient(server.uri)
        run_id = _first_epoch(client, experiment, proc)
        server.stop(signal.SIGKILL)
        down = time.monotonic()
        _wait_for_log(tmp_path, "does not answer", proc)
        hold.unlink()
        out, err = proc.communicate(timeout=600)
    finally:
        stopped(proc)
    assert time.monotonic() - down < 120  # no minutes of retries
    assert proc.returncode == 0, err[-3000:]
    _quiet(out + err)
    (warning,) = _warnings(out + err)
    assert "does not answer" in warning
    outputs = tmp_path / "outputs"
    assert f"python -m mnist_mlp.tracking.sync {outputs}" in out + err
    assert (outputs / "report" / "report.html").is_file()
    assert (outputs / "checkpoints" / "last.ckpt").is_file()
    journal = Journal(outputs / "mlflow_buffer")
    assert journal.pending() and journal.entries()[-1]["op"] == "set_terminated"

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # sync.sync sets it in-process
    with pytest.raises(UserError, match="does not answer .* Nothing was lost"):
        sync.sync(outputs)  # the server is still down: it says so, keeps everything
    server.start()
    assert client.get_run(run_id).info.status == "RUNNING"  # what the outage left behind
    up = run_script("-m", "mnist_mlp.tracking.sync", str(outputs))
    assert up.returncode == 0, up.stderr[-3000:]
    assert f"run {run_id} FINISHED" in up.stdout
    _assert_complete(client, run_id, outputs, out)
    (version,) = client.search_model_versions("name='mnist-mlp-outage'")  # registered by sync
    assert version.run_id == run_id
    assert sync.sync(outputs).startswith("Nothing to send")  # sending twice sends nothing twice
