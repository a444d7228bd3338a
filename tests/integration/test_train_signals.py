"""SIGTERM and Ctrl-C to ``python train.py``: it stops promptly, saves checkpoints to resume from,
says how, and leaves its MLflow run KILLED with the epochs it finished.

The signal comes while the run waits at the end of its second epoch (``SleepAtEpochEnd``'s hold),
outside any MLflow write: a fixed point of a run that has recorded and checkpointed an epoch.
"""

from __future__ import annotations

import signal
import time

import pytest
import torch

from mnist_mlp import validation
from tests.helpers.configs import compose_job, quiet, store_overrides
from tests.helpers.data import data_overrides
from tests.helpers.processes import start_script, stopped, wait_for
from tests.helpers.runs import runs_in

MAX_EPOCHS = 100_000  # "forever": the signal ends it


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_checkpoints_exits_promptly_and_the_run_is_killed(synthetic_mnist, tmp_path,
                                                                         store, sig):
    ckpts, hold = tmp_path / "outputs" / "checkpoints", tmp_path / "hold"
    hold.touch()
    proc = start_script("train.py", *data_overrides(*synthetic_mnist), *store_overrides(tmp_path),
                        *quiet(), f"trainer.max_epochs={MAX_EPOCHS}",
                        "+callbacks.slow._target_=tests.helpers.slow_epochs.SleepAtEpochEnd",
                        f"+callbacks.slow.hold={hold}", "+callbacks.slow.epoch=1", cwd=tmp_path)
    try:
        wait_for(hold.with_name("hold.rank0").exists, "the run waiting after its second epoch", proc)
        assert (ckpts / "last.ckpt").exists()  # the first epoch's
        proc.send_signal(sig)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        stopped(proc)
    # Lightning stops after the current batch; the rest is interpreter shutdown (slow when loaded).
    assert time.monotonic() - sent < 30
    assert proc.returncode == (143 if sig == signal.SIGTERM else 1), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "Training stopped by" in err and "ckpt_path=" in err and "hydra.run.dir=" in err
    assert "weights_only" not in err  # Lightning's note on how the interrupt checkpoint was saved
    for name in ("last.ckpt", "interrupted.ckpt"):
        ckpt = torch.load(ckpts / name, map_location="cpu", weights_only=True)
        assert "state_dict" in ckpt and "RngStateInCheckpoint" in ckpt["callbacks"]
    assert not list(ckpts.glob(".*.tmp"))
    # The interrupted state resumes (mid-epoch); validation accepts it.
    validation.check_ckpt_path(compose_job(f"ckpt_path={ckpts / 'interrupted.ckpt'}"))

    (run,) = runs_in(store, "mnist-mlp", "train")
    assert run.info.status == "KILLED"
    assert store.get_metric_history(run.info.run_id, "acc/val")
    assert run.data.params["trainer.max_epochs"] == str(MAX_EPOCHS)
