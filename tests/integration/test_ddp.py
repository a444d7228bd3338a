"""train.py under DDP (2 CPU processes) with tracking: one run, exact test metrics, one writer, SIGTERM.

Lightning re-launches train.py per extra rank; rank 0 alone records (``mnist_mlp.ddp``). Synthetic
data with 203 test images: the two test shards are uneven, so a padded shard would show.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, data_overrides, store_overrides, write_synthetic_mnist
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, f1_score, precision_score

from mnist_mlp import checkpoint
from mnist_mlp.datamodule import MnistDataModule

pytestmark = pytest.mark.slow
DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]


def _cmd(tmp: Path, data: list[str], *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *data, *store_overrides(tmp), *DDP,
            "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", *overrides]


def _runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name("mnist-mlp")
    return client.search_runs([exp.experiment_id]) if exp else []


def _processes_of(folder: Path) -> list[int]:
    """PIDs whose command line names ``folder`` (train.py of either rank)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(folder) in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _independent_test_metrics(ckpt: Path, data_dir: Path, md5s: dict) -> dict[str, float]:
    """The checkpoint on the whole test set in this one process, scored by scikit-learn."""
    module, _ = checkpoint.load_module(ckpt)
    dm = MnistDataModule(str(data_dir), sources=["local"], md5=md5s, val_size=100)
    dm.prepare_data()
    dm.setup()
    x, y = dm.tensors["test"]
    with torch.no_grad():
        logits = module.eval()(x)
    pred = logits.argmax(1).numpy()
    return {"n": len(y), "test/loss": float(F.cross_entropy(logits, y)),
            "test/acc": accuracy_score(y, pred),
            "test/f1_macro": f1_score(y, pred, average="macro", labels=range(10), zero_division=0),
            "test/precision_weighted": precision_score(y, pred, average="weighted", labels=range(10),
                                                       zero_division=0)}


def test_ddp_makes_one_run_with_exact_test_metrics_and_writes_once(tmp_path):
    md5s = write_synthetic_mnist(tmp_path / "data", n_train=400, n_test=203)
    data = data_overrides(tmp_path / "data", md5s)
    result = subprocess.run(_cmd(tmp_path, data, "trainer.max_epochs=2", "data.batch_size=50"),
                            cwd=ROOT, capture_output=True, text=True, timeout=400,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Test set:") == 1  # printed by rank 0 only

    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = _runs(client)  # one run, not one per rank
    rid = run.info.run_id
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    for key in ("train/loss", "val/acc"):
        assert len(client.get_metric_history(rid, key)) == 2, key  # once per epoch, not per rank

    out = tmp_path / "outputs"
    names = sorted(p.name for p in (out / "checkpoints").iterdir())  # written once, by rank 0
    assert len(names) == 2 and names[0].startswith("epoch") and names[1] == "last.ckpt", names
    tested = out / run.data.tags["best_checkpoint"]
    ref = _independent_test_metrics(tested, tmp_path / "data", md5s)
    table = np.loadtxt(out / "report" / "predictions.csv", delimiter=",", skiprows=1)
    assert len(table) == ref["n"] == 203  # every test image once: no padded shard
    assert sum(run.data.metrics[f"test/support_class_{k}"] for k in range(10)) == 203
    assert run.data.metrics["test/acc"] == pytest.approx(ref["test/acc"], abs=1e-6)
    assert run.data.metrics["test/f1_macro"] == pytest.approx(ref["test/f1_macro"], abs=1e-6)
    assert run.data.metrics["test/precision_weighted"] == pytest.approx(
        ref["test/precision_weighted"], abs=1e-6)
    assert run.data.metrics["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-5)


def test_sigterm_to_rank_zero_ends_every_rank_and_the_run_is_killed(synthetic_mnist, tmp_path):
    data_dir, md5s = synthetic_mnist
    ckpts = tmp_path / "outputs" / "checkpoints"
    proc = subprocess.Popen(_cmd(tmp_path, data_overrides(data_dir, md5s), "trainer.max_epochs=100000"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        deadline = time.monotonic() + 300
        while not (ckpts / "last.ckpt").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
        assert len(_processes_of(tmp_path)) == 2  # both ranks train
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.count("Training stopped by SIGTERM") == 1
    time.sleep(1)
    assert _processes_of(tmp_path) == []  # rank 1 ended too
    (run,) = _runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert run.info.status == "KILLED"
    assert run.data.metrics.get("val/acc") is not None
    assert (ckpts / "interrupted.ckpt").is_file() and not list(ckpts.glob(".*.tmp"))



def test_a_rank_that_dies_ends_every_rank_and_the_run_is_failed(synthetic_mnist, tmp_path):
    """Rank 1 killed (as the OOM killer does) while rank 0 is outside any collective, as with NCCL,
    whose collectives wait for a dead peer: Lightning's launcher SIGKILLs rank 0 within seconds;
    the run must not stay RUNNING."""
    data_dir, md5s = synthetic_mnist
    ckpts = tmp_path / "outputs" / "checkpoints"
    sleep = ["+callbacks.slow._target_=slow_epochs.SleepAtEpochEnd", "+callbacks.slow.seconds=15"]
    proc = subprocess.Popen(_cmd(tmp_path, data_overrides(data_dir, md5s), "trainer.max_epochs=3",
                                 *sleep),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg",
                                 "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])})
    try:
        deadline = time.monotonic() + 300
        while not (ckpts / "last.ckpt").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
        time.sleep(3)  # last.ckpt comes after the sleep: both ranks now sleep after epoch 1
        (rank_one,) = [p for p in _processes_of(tmp_path) if p != proc.pid]
        os.kill(rank_one, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, err[-3000:]  # the launcher's doing
    assert "Traceback" not in err, err[-3000:]
    error = err[err.index("error: "):].strip()
    assert error.startswith(f"error: rank 1 (PID {rank_one}) exited with code -9; Lightning stops "
                            "every DDP rank"), error
    assert f"ckpt_path={ckpts / 'last.ckpt'}" in error
    time.sleep(1)
    assert _processes_of(tmp_path) == []
    (run,) = _runs(MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db"))
    assert run.info.status == "FAILED"
    assert run.data.tags["mnist_mlp.failure"] == f"rank 1 (PID {rank_one}) exited with code -9"
