"""A disk that fills up mid-run: one ``error:`` paragraph naming the folder and the cause, exit 2,
the run FAILED in MLflow, and the checkpoints finished before intact (none half-written)."""

from __future__ import annotations

import errno
import os

import pytest
import torch
from conftest import data_overrides, store_overrides
from faults_helpers import compose_job, quiet
from mlflow import MlflowClient

from mnist_mlp import cli, faults
from mnist_mlp.atomic import write_atomic


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
                      "trainer.max_epochs=3", "logger.system_metrics=false",
                      f"hydra.runtime.output_dir={out}", out=out)
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
