"""Every run tracked in MLflow: what a user finds in the store after train.py, sweeps and endings.

Training runs are real ``train.py`` subprocesses on the synthetic IDX MNIST; the store is a SQLite
file in the test's temp dir (copied from one schema-initialised template: creating MLflow's schema
costs seconds), or a real ``mlflow server`` on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, ctrl_c_as_in_a_terminal, data_overrides, store_overrides
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow import MlflowClient
from mlflow_server import MlflowServer, free_port
from omegaconf import OmegaConf
from tracking_helpers import EPOCH_METRICS, artifacts, runs_in

import mnist_mlp  # noqa: F401
from mnist_mlp.errors import UserError
from mnist_mlp.tracking import record
from mnist_mlp.tracking.evaluation import evaluation_run
from mnist_mlp.tracking.store import open_store

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- helpers -------------------------


@pytest.fixture(scope="session")
def store_template(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates the schema
    return db


@pytest.fixture
def store(tmp_path, store_template) -> MlflowClient:
    """A ready SQLite store where ``store_overrides(tmp_path)`` points train.py."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(store_template, tmp_path / "mlruns" / "mlflow.db")
    return MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def _train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *overrides, "callbacks.progress_bar=null",
            "trainer.enable_model_summary=false"]


def run_train(*overrides: str, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(_train_cmd(*overrides), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MPLBACKEND": "Agg"}, cwd=ROOT)


def _runs(client: MlflowClient, role: str = "train") -> list:
    return runs_in(client, "mnist-mlp", role)


def _overrides_for(tmp_path: Path, uri: str) -> list[str]:
    """``store_overrides`` with the tracking URI replaced rather than given twice."""
    keep = [o for o in store_overrides(tmp_path) if not o.startswith("logger.")]
    return [*keep, f"logger.tracking_uri={uri}"]


# ---------------------------------------------------------------- pure pieces ---------------------


def test_params_are_the_resolved_config_with_dotted_keys_overrides_included():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model.lr=0.05", "seed=3", "model/optimizer=adam"],
                      return_hydra_config=True)
    HydraConfig().set_config(cfg)
    params = record.config_params(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    assert params["model.lr"] == "0.05" and params["seed"] == "3"
    assert params["data.batch_size"] == "100" and params["trainer.max_epochs"] == "30"
    assert params["model.optimizer._target_"] == "torch.optim.Adam"
    assert params["model.net.num_classes"] == "10"  # interpolations resolved


def test_sweep_jobs_are_named_by_their_swept_values():
    keys = record.swept_keys(["model.lr=0.01,0.1", "seed=1,2", "trainer.max_epochs=2"])
    assert keys == ["model.lr", "seed"]
    assert record.single_run_name([], "19-08-43-352778") == "defaults 19-08-43"
    assert record.single_run_name(["model.lr=0.05"], "19-08-43-352778") == "lr=0.05 19-08-43"
    name = record.job_run_name(["model.lr=0.01", "seed=1", "trainer.max_epochs=2"], keys)
    assert name == "lr=0.01,seed=1"
    assert record.job_run_name(["model/optimizer=adam"], ["model/optimizer"]) == "optimizer=adam"


def test_unreachable_server_is_a_user_error_within_seconds():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"logger.tracking_uri={uri} cannot be used"):
        open_store(uri, "mnist-mlp")
    assert time.monotonic() - start < 20


def test_evaluation_gets_the_checkpoint_and_records_a_new_linked_run(store, tmp_path):
    exp = store.create_experiment("mnist-mlp", artifact_location=str(tmp_path / "art"))
    source = store.create_run(exp, run_name="lr=0.1").info.run_id
    ckpt = tmp_path / "epoch003.ckpt"
    ckpt.write_bytes(b"weights")
    store.log_artifact(source, str(ckpt), "checkpoints")
    store.log_metric(source, "test/acc", 0.9)
    store.set_terminated(source)
    empty = store.create_run(exp).info.run_id
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report")
    lcfg = {"tracking_uri": store.tracking_uri, "experiment_name": "mnist-mlp"}

    with evaluation_run(source, lcfg, tmp_path / "dl") as ev:
        assert ev.ckpt_path.read_bytes() == b"weights"
        ev.log_report(report, {"test/acc": 0.95, "test/f1_class_4": 0.9})

    run = store.get_run(ev.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate lr=0.1"
    assert run.data.tags["mlflow.parentRunId"] == source
    assert run.data.tags["mnist_mlp.evaluates"] == source
    assert run.data.metrics == {"test/acc": 0.95, "test/f1_class_4": 0.9}
    assert artifacts(store, ev.run_id) == {"report/report.md"}
    assert store.get_run(source).data.metrics == {"test/acc": 0.9}  # the source run is untouched
    with pytest.raises(UserError, match="has no checkpoint artifact"):
        with evaluation_run(empty, lcfg, tmp_path / "dl2"):
            pass
    with pytest.raises(UserError, match="run_id=0123 is not a run"):
        with evaluation_run("0123", lcfg, tmp_path / "dl3"):
            pass
    with pytest.raises(RuntimeError), evaluation_run(source, lcfg, tmp_path / "dl4") as ev:
        raise RuntimeError("evaluation broke")
    assert store.get_run(ev.run_id).info.status == "FAILED"


# ---------------------------------------------------------------- train.py end to end -------------


def test_a_run_records_params_epoch_metrics_config_report_checkpoint_and_model(
    synthetic_mnist, tmp_path, store
):
    import mlflow.pyfunc
    import numpy as np

    data_dir, md5s = synthetic_mnist
    report = tmp_path / "report"  # stands in for the report issue's files
    report.mkdir()
    (report / "confusion_matrix.png").write_bytes(b"png")
    result = run_train("trainer.max_epochs=2", "model.lr=0.05", f"report.dir={report}",
                       *data_overrides(data_dir, md5s), *store_overrides(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    (run,) = _runs(store)
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.lr"] == "0.05" and params["trainer.max_epochs"] == "2"
    assert params["data.batch_size"] == "100" and params["seed"] == "42"
    for key in EPOCH_METRICS:
        assert len(store.get_metric_history(rid, key)) == 2, key  # one point per epoch
    assert {"test/acc", "test/loss"} <= set(run.data.metrics)
    # where the run's time went (README "Speed"): every phase in seconds; those after the run's
    # creation fit inside its recorded duration
    phases = {k[5:-2]: v for k, v in run.data.metrics.items() if k.startswith("time/")}
    assert set(phases) == {"startup", "build", "data", "tracking_start", "fit", "test_and_report",
                           "tracking_outputs"}
    assert all(v >= 0 for v in phases.values()) and phases["fit"] > 0
    after_creation = phases["fit"] + phases["test_and_report"] + phases["tracking_outputs"]
    assert after_creation <= (run.info.end_time - run.info.start_time) / 1000 + 0.5
    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in ("true", "false")
    assert {tags[f"data.md5.{k}"] for k in md5s} == set(md5s.values())
    arts = artifacts(store, rid)
    assert {"config.yaml", "overrides.yaml", "report/confusion_matrix.png"} <= arts
    assert tags["best_checkpoint"] in arts and tags["best_checkpoint"].endswith(".ckpt")
    overrides = store.download_artifacts(rid, "overrides.yaml", str(tmp_path))
    assert "model.lr=0.05" in Path(overrides).read_text()

    mlflow.set_tracking_uri(store.tracking_uri)  # the served model: tests/test_run_outputs.py
    probs = mlflow.pyfunc.load_model(f"runs:/{rid}/model").predict(np.zeros((3, 784)))
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)

    # evaluate.py run_id=...: the run's best checkpoint, the report in a new run nested under it.
    ev_dir = tmp_path / "evaluate"
    result = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), f"run_id={rid}", f"hydra.run.dir={ev_dir}",
         *data_overrides(data_dir, md5s), *store_overrides(tmp_path)[:2]],
        capture_output=True, text=True, timeout=400, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Downloading artifacts" not in result.stderr and "Tip:" not in result.stdout + result.stderr
    (evaluation,) = [r for r in store.search_runs([run.info.experiment_id])
                     if r.data.tags.get("mnist_mlp.evaluates") == rid]
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["mlflow.parentRunId"] == rid
    assert evaluation.data.metrics["test/acc"] == run.data.metrics["test/acc"]
    assert {"report/report.html", "report/predictions.csv"} <= artifacts(store, evaluation.info.run_id)
    assert store.get_run(rid).data.metrics == run.data.metrics  # the training run is untouched


def test_parallel_sweep_on_a_fresh_store_gives_one_named_grouped_run_per_job(
    synthetic_mnist, tmp_path
):
    data_dir, md5s = synthetic_mnist
    result = run_train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       "model.lr=0.01,0.1", "trainer.max_epochs=1",
                       *data_overrides(data_dir, md5s), *store_overrides(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (parent,) = _runs(client, "sweep")
    jobs = _runs(client)
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in jobs) == ["lr=0.01", "lr=0.1"]
    assert sorted(r.data.tags["sweep.job"] for r in jobs) == ["0", "1"]
    for job in jobs:
        assert job.info.status == "FINISHED"
        assert job.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert job.data.tags["sweep.dir"] == parent.data.tags["sweep.dir"]
        assert job.data.params["model.lr"] == job.info.run_name.split("=")[1]
        assert set(EPOCH_METRICS) | {"test/acc"} <= set(job.data.metrics)
        assert {"config.yaml", "overrides.yaml"} <= artifacts(client, job.info.run_id)
        assert job.data.tags["best_checkpoint"] in artifacts(client, job.info.run_id)


def test_a_failing_run_is_failed_with_its_params_kept_and_earlier_runs_unchanged(
    synthetic_mnist, tmp_path, store
):
    exp = store.create_experiment("mnist-mlp", artifact_location=str(tmp_path / "mlruns/art"))
    earlier = store.create_run(exp, run_name="earlier").info.run_id
    store.log_metric(earlier, "val/acc", 0.5)
    store.set_terminated(earlier)
    before = store.get_run(earlier)
    data_dir, md5s = synthetic_mnist
    result = run_train("trainer.max_epochs=1", "model.net.in_features=100",  # shape error in fit
                       *data_overrides(data_dir, md5s), *store_overrides(tmp_path))
    assert result.returncode != 0
    (run,) = [r for r in _runs(store) if r.info.run_id != earlier]
    assert run.info.status == "FAILED" and run.data.params["model.net.in_features"] == "100"
    after = store.get_run(earlier)
    assert (after.info.status, after.info.end_time, after.data.metrics) == (
        before.info.status, before.info.end_time, before.data.metrics)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_is_killed_with_its_epoch_metrics_kept(synthetic_mnist, tmp_path, store,
                                                                   sig):
    data_dir, md5s = synthetic_mnist
    proc = subprocess.Popen(
        _train_cmd("trainer.max_epochs=500", *data_overrides(data_dir, md5s),
                   *store_overrides(tmp_path)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
            if runs and store.get_metric_history(runs[0].info.run_id, "val/acc"):
                break
            time.sleep(1)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run,) = _runs(store)
    assert run.info.status == "KILLED"
    assert store.get_metric_history(run.info.run_id, "val/acc")
    assert run.data.params["trainer.max_epochs"] == "500"


def test_unreachable_tracking_server_stops_before_training(synthetic_mnist, tmp_path):
    data_dir, md5s = synthetic_mnist
    uri = f"http://127.0.0.1:{free_port()}"
    result = run_train("trainer.fast_dev_run=true", *data_overrides(data_dir, md5s),
                       *_overrides_for(tmp_path, uri))
    assert result.returncode == 2
    assert f"error: logger.tracking_uri={uri} cannot be used" in result.stderr
    assert "Traceback" not in result.stderr and "Epoch 0" not in result.stdout + result.stderr


def test_a_run_against_a_real_mlflow_server_reads_back_over_http(synthetic_mnist, tmp_path):
    server = MlflowServer(tmp_path).start()
    try:
        data_dir, md5s = synthetic_mnist
        result = run_train("trainer.fast_dev_run=true", *data_overrides(data_dir, md5s),
                           *_overrides_for(tmp_path, server.uri), "logger.artifact_location=null")
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(server.uri)
        (run,) = _runs(client)
        assert run.info.status == "FINISHED" and run.data.params["trainer.fast_dev_run"] == "True"
        assert {"train/loss", "val/acc", "test/acc"} <= set(run.data.metrics)
        assert {"config.yaml", "overrides.yaml"} <= artifacts(client, run.info.run_id)
    finally:
        server.stop()  # the server and its uvicorn workers
