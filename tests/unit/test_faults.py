"""Training faults in-process: a resumed run ends bitwise as an uninterrupted one; a checkpoint is
never half-written; a disk that fills up mid-run ends it with one paragraph. (NaN loss and
signals, as train.py meets them: tests/integration.)"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from mnist_mlp import cli, faults, runner, validation
from mnist_mlp.atomic import write_atomic
from mnist_mlp.faults import AtomicCheckpointIO
from mnist_mlp.tracking.record import FAILURE_TAG
from tests.helpers.configs import compose_job, quiet, store_overrides
from tests.helpers.data import data_overrides


def _run(out: Path, data: list[str], *overrides: str) -> dict[str, float]:
    cfg = compose_job(*data, "~logger", *quiet(), *overrides, out=out)
    validation.check(cfg)
    return runner.run(cfg)


@pytest.mark.usefixtures("undrawn_figures")
@pytest.mark.parametrize("steps", [1, 3], ids=["one-step", "3-steps-per-iteration"])
def test_resume_from_last_ckpt_ends_exactly_as_an_uninterrupted_run(synthetic_mnist, tmp_path, steps):
    data_dir, md5s = synthetic_mnist
    data = [*data_overrides(data_dir, md5s), "data.batch_size=50", "model.net.hidden1=64",
            f"model.steps_per_iteration={steps}"]
    data.append("test_ckpt=last")  # the final weights, tested as they are in memory
    straight = _run(tmp_path / "a", data, "trainer.max_epochs=4")
    _run(tmp_path / "b", data, "trainer.max_epochs=2")
    resumed = _run(tmp_path / "b", data, "trainer.max_epochs=4",  # same folder, as the hint says
                   f"ckpt_path={tmp_path / 'b' / 'checkpoints' / 'last.ckpt'}")
    for key in ("test/loss", "test/acc", "loss/val", "loss/train", "acc/train"):
        assert resumed[key] == straight[key], key  # exact: same batches, dropout, optimizer state


def test_failed_checkpoint_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)
    before = target.read_bytes()

    def dies_halfway(obj, f, *a, **k):
        f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# A disk that fills up mid-run: one ``error:`` paragraph naming the folder and the cause, exit 2,
# the run FAILED in MLflow, and the checkpoints finished before intact (none half-written).


class _FullDisk:
    """A file on a disk with ``room`` bytes left: the write after that fails as the OS's does."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def test_a_full_disk_ends_the_run_with_one_paragraph_and_keeps_the_checkpoints(
        synthetic_mnist, tmp_path, monkeypatch, capsys):
    saves = []

    def write_until_full(path, data):  # the first two checkpoints (epoch 1) fit, then the disk is full
        saves.append(path)
        if len(saves) <= 2:
            return write_atomic(path, data)
        return write_atomic(path, lambda f: data(_FullDisk(f, room=100_000)))

    monkeypatch.setattr(faults, "write_atomic", write_until_full)
    data_dir, md5s = synthetic_mnist
    out = tmp_path / "out"
    cfg = compose_job(*data_overrides(data_dir, md5s), *store_overrides(tmp_path), *quiet(),
                      "trainer.max_epochs=3", "logger.system_metrics=false", out=out)
    with pytest.raises(SystemExit) as stopped:
        cli.train(cfg)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    error = err[err.index("error: "):].strip()
    assert "\n" not in error and "Traceback" not in err
    assert f"The disk holding {out} is full: OSError: [Errno 28] No space left on device" in error
    assert "hydra.run.dir=<a folder with room>" in error
    assert f"intact in {out / 'checkpoints'}" in error and "resume with" in error
    assert "inline_container" not in error  # torch's wrapper, not the cause

    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["epoch001.ckpt", "last.ckpt"]  # no half-written file, no temporary left
    for name in kept:
        ckpt = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["epoch"] == 0 and "state_dict" in ckpt
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist-mlp").experiment_id])
    assert run.info.status == "FAILED"
    why = run.data.tags[FAILURE_TAG]  # the cause the paragraph names, not torch's wrapper
    assert why.startswith("OSError: [Errno 28] No space left on device") and "inline_container" not in why


def test_the_cause_is_found_behind_torchs_error_and_other_errors_pass(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904
    except RuntimeError as wrapped:
        assert faults.no_space(wrapped).errno == errno.ENOSPC  # torch's way: the context
    with pytest.raises(PermissionError):
        with faults.disk_full_explained(tmp_path):
            raise PermissionError(errno.EACCES, "Permission denied")
