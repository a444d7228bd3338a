"""train.py against a real ``mlflow server`` (loopback, SQLite backend, proxied artifacts): a smoke
run started from any folder is recorded, and read back over HTTP."""

from __future__ import annotations

from mlflow import MlflowClient

from tests.helpers.configs import store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import run_train
from tests.helpers.runs import artifacts, runs_in


def test_a_smoke_run_from_any_folder_is_recorded_on_a_real_server(synthetic_mnist, mlflow_server,
                                                                 tmp_path):
    result = run_train(
        "trainer.fast_dev_run=true", *data_overrides(*synthetic_mnist),
        *store_overrides(tmp_path, mlflow_server.uri, experiment="smoke"),
        "trainer.enable_progress_bar=false",  # the configured bar callback is dropped, not refused
        cwd=tmp_path,  # any working directory
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test set: accuracy" in result.stdout
    client = MlflowClient(mlflow_server.uri)
    (run,) = runs_in(client, "smoke", "train")
    assert run.info.status == "FINISHED" and run.data.params["trainer.fast_dev_run"] == "True"
    assert {"loss/train", "acc/val", "test/acc"} <= set(run.data.metrics)
    assert {"config.yaml", "overrides.yaml"} <= artifacts(client, run.info.run_id)
