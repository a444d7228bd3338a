"""train.py and evaluate.py under DDP (2 CPU processes): one run with exact test metrics and one
writer, the fused step's arithmetic across ranks, SIGTERM, a dying rank, an uneven test set.

Lightning re-launches the script per extra rank; rank 0 alone records (``mnist_mlp.ddp``). The
synthetic test set has 203 images: the two test shards are uneven, so a padded shard would show.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, f1_score, precision_score

from mnist_mlp import checkpoint
from mnist_mlp.datamodule import MnistDataModule
from tests.helpers.configs import quiet, store_overrides
from tests.helpers.data import N_TEST, TRAIN_SPLIT, VAL_SIZE, data_overrides
from tests.helpers.processes import processes_of, run_script, run_train, start_script, stopped, wait_for

pytestmark = pytest.mark.slow
DDP = ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
BATCH = 24  # per rank: 250 training images each, 11 batches of which the last holds 10
STEPS = (1, 3)  # optimizer steps per Lightning iteration


def _runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name("mnist-mlp")
    return client.search_runs([exp.experiment_id]) if exp else []


def _client(tmp: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")


@pytest.fixture(scope="module")
def ddp_runs(synthetic_mnist, tmp_path_factory) -> dict[int, tuple[Path, object]]:
    """Two tracked DDP trainings, 1 and 3 optimizer steps per iteration: their folder and output."""
    runs = {}
    for steps in STEPS:
        tmp = tmp_path_factory.mktemp(f"ddp-k{steps}")
        result = run_train(*data_overrides(*synthetic_mnist), *store_overrides(tmp), *DDP, *quiet(),
                           "trainer.max_epochs=2", f"data.batch_size={BATCH}",
                           f"model.steps_per_iteration={steps}", timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[steps] = (tmp, result)
    return runs


def _independent_test_metrics(ckpt: Path, data_dir: Path, md5s: dict) -> dict[str, float]:
    """The checkpoint on the whole test set in this one process, scored by scikit-learn."""
    module, _ = checkpoint.load_module(ckpt)
    dm = MnistDataModule(str(data_dir), sources=["local"], md5=md5s, val_size=VAL_SIZE)
    dm.prepare_data()
    dm.setup()
    x, y = dm.normalised("test")
    with torch.no_grad():
        logits = module.eval()(x)
    pred = logits.argmax(1).numpy()
    return {"n": len(y), "test/loss": float(F.cross_entropy(logits, y)),
            "test/acc": accuracy_score(y, pred),
            "test/f1_macro": f1_score(y, pred, average="macro", labels=range(10), zero_division=0),
            "test/precision_weighted": precision_score(y, pred, average="weighted", labels=range(10),
                                                       zero_division=0)}


def test_ddp_makes_one_run_with_exact_test_metrics_and_writes_once(ddp_runs, synthetic_mnist):
    tmp, result = ddp_runs[1]
    assert result.stdout.count("Test set:") == 1  # printed by rank 0 only

    client = _client(tmp)
    (run,) = _runs(client)  # one run, not one per rank
    rid = run.info.run_id
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    for key in ("loss/train", "acc/val"):
        assert len(client.get_metric_history(rid, key)) == 2, key  # once per epoch, not per rank

    out = tmp / "outputs"
    names = sorted(p.name for p in (out / "checkpoints").iterdir())  # written once, by rank 0
    assert len(names) == 2 and names[0].startswith("epoch") and names[1] == "last.ckpt", names
    tested = out / run.data.tags["best_checkpoint"]
    ref = _independent_test_metrics(tested, *synthetic_mnist)
    table = np.loadtxt(out / "report" / "predictions.csv", delimiter=",", skiprows=1)
    assert len(table) == ref["n"] == N_TEST  # every test image once: no padded shard
    assert sum(run.data.metrics[f"test/support_per_class/{k}"] for k in range(10)) == N_TEST
    assert run.data.metrics["test/acc"] == pytest.approx(ref["test/acc"], abs=1e-6)
    assert run.data.metrics["test/f1_macro"] == pytest.approx(ref["test/f1_macro"], abs=1e-6)
    assert run.data.metrics["test/precision_weighted"] == pytest.approx(
        ref["test/precision_weighted"], abs=1e-6)
    assert run.data.metrics["test/loss"] == pytest.approx(ref["test/loss"], rel=1e-5)


def test_ddp_with_k_steps_gives_the_weights_of_one_step(ddp_runs):
    """Each rank's shard is chunked, every backward syncs the gradients."""
    weights = {}
    for steps, (tmp, _) in ddp_runs.items():
        ckpt = torch.load(tmp / "outputs" / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True)
        weights[steps] = ckpt["state_dict"]
        assert ckpt["global_step"] == 2 * -(-(TRAIN_SPLIT // 2) // BATCH)  # steps of one rank
    for key, value in weights[1].items():
        assert torch.equal(value, weights[3][key]), key


def _acc_line(output: str) -> str:
    return [ln for ln in output.splitlines() if ln.startswith("Test set:")][0].split(";")[0]


def test_ddp_test_metrics_equal_one_process(trained_run, evaluated_run, tmp_path):
    out = tmp_path / "eval_ddp"
    result = run_script("evaluate.py", f"ckpt_path={trained_run.best_checkpoint}", *trained_run.data,
                        *DDP, f"hydra.run.dir={out}", timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Testing DataLoader" not in result.stdout + result.stderr  # no bar off a terminal
    one, ddp = evaluated_run.report, out / "report"  # the same checkpoint in one process
    assert _acc_line(evaluated_run.console) == _acc_line(result.stdout)
    for name in ("classification_report.json", "confusion_matrix.csv", "per_class_metrics.csv"):
        assert (one / name).read_text() == (ddp / name).read_text(), name
    a = np.loadtxt(one / "predictions.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(ddp / "predictions.csv", delimiter=",", skiprows=1)
    assert len(b) == N_TEST  # every test image once: no padding of the odd-sized set
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    np.testing.assert_allclose(a[:, 3:], b[:, 3:], atol=1e-6)
    # The ranking collection's list states are gathered across ranks: the same AUROC/AP/ECE.
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, ddp))
    for key in ("auroc", "ap", "auroc_macro", "ap_macro", "ece", "accuracy_ci", "f1_macro_ci"):
        assert s2[key] == pytest.approx(s1[key], abs=1e-6), key


def _start_ddp(synthetic_mnist, tmp: Path, *overrides: str):
    return start_script("train.py", *data_overrides(*synthetic_mnist), *store_overrides(tmp), *DDP,
                        *quiet(), *overrides)


def test_sigterm_to_rank_zero_ends_every_rank_and_the_run_is_killed(synthetic_mnist, tmp_path):
    ckpts = tmp_path / "outputs" / "checkpoints"
    proc = _start_ddp(synthetic_mnist, tmp_path, "trainer.max_epochs=100000")
    try:
        wait_for(lambda: (ckpts / "last.ckpt").exists(), "a first checkpoint", proc)
        assert len(processes_of(tmp_path)) == 2  # both ranks train
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        stopped(proc)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.count("Training stopped by SIGTERM") == 1
    assert wait_for(lambda: processes_of(tmp_path) == [], "rank 1 ending", timeout=30)  # it ended too
    (run,) = _runs(_client(tmp_path))
    assert run.info.status == "KILLED"
    assert run.data.metrics.get("acc/val") is not None
    assert (ckpts / "interrupted.ckpt").is_file() and not list(ckpts.glob(".*.tmp"))


def test_a_rank_that_dies_ends_every_rank_and_the_run_is_failed(synthetic_mnist, tmp_path):
    """Rank 1 killed (as the OOM killer does) while rank 0 is outside any collective, as with NCCL,
    whose collectives wait for a dead peer: Lightning's launcher SIGKILLs rank 0 within seconds;
    the run must not stay RUNNING."""
    ckpts, hold = tmp_path / "outputs" / "checkpoints", tmp_path / "hold"
    hold.touch()  # both ranks wait after the last epoch's training, before its checkpoints
    proc = _start_ddp(synthetic_mnist, tmp_path, "trainer.max_epochs=2",
                      "+callbacks.slow._target_=tests.helpers.slow_epochs.SleepAtEpochEnd",
                      f"+callbacks.slow.hold={hold}")
    try:
        waiting = [hold.with_name(f"hold.rank{r}") for r in (0, 1)]
        wait_for(lambda: all(w.exists() for w in waiting), "both ranks after their last epoch", proc)
        assert (ckpts / "last.ckpt").is_file()  # the first epoch's, to resume from
        (rank_one,) = [p for p in processes_of(tmp_path) if p != proc.pid]
        os.kill(rank_one, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        hold.unlink(missing_ok=True)
        stopped(proc)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]  # the launcher's doing
    assert "Traceback" not in err, err[-3000:]
    error = err[err.index("error: "):].strip()
    assert error.startswith(f"error: rank 1 (PID {rank_one}) exited with code -9; Lightning stops "
                            "every DDP rank"), error
    assert f"ckpt_path={ckpts / 'last.ckpt'}" in error
    assert wait_for(lambda: processes_of(tmp_path) == [], "every rank ending", timeout=30)
    (run,) = _runs(_client(tmp_path))
    assert run.info.status == "FAILED"
    assert run.data.tags["mnist_mlp.failure"] == f"rank 1 (PID {rank_one}) exited with code -9"
