"""Training faults: NaN loss, SIGTERM/Ctrl-C, exact resume, checkpoints never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, ctrl_c_as_in_a_terminal, data_overrides
from faults_helpers import assert_one_paragraph, cli_overrides, compose_job, quiet, run_train

from mnist_mlp import runner, validation
from mnist_mlp.errors import UserError
from mnist_mlp.faults import AtomicCheckpointIO


def test_non_finite_loss_stops_in_the_first_epoch_with_a_message(synthetic_mnist, tmp_path):
    data_dir, md5s = synthetic_mnist
    result = run_train(*cli_overrides(data_dir, md5s, tmp_path), "model.lr=1e30",
                       "trainer.max_epochs=50", cwd=tmp_path)
    assert_one_paragraph(result, "Training stopped in epoch 0", "NaN or infinite", "model.lr")
    assert not list((tmp_path / "outputs" / "checkpoints").glob("*.ckpt"))  # none of NaN weights


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_checkpoints_and_exits_promptly(synthetic_mnist, tmp_path, sig):
    data_dir, md5s = synthetic_mnist
    ckpts = tmp_path / "outputs" / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *cli_overrides(data_dir, md5s, tmp_path),
         "trainer.max_epochs=100000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MPLBACKEND": "Agg"}, preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.monotonic() + 240
    while not (ckpts / "last.ckpt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.1)
    proc.send_signal(sig)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=60)
    # Lightning stops after the current batch; the rest is interpreter shutdown (slow when loaded).
    assert time.monotonic() - sent < 30
    assert proc.returncode == (143 if sig == signal.SIGTERM else 1), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "Training stopped by" in err and "ckpt_path=" in err and "hydra.run.dir=" in err
    for name in ("last.ckpt", "interrupted.ckpt"):
        ckpt = torch.load(ckpts / name, map_location="cpu", weights_only=True)
        assert "state_dict" in ckpt and "RngStateInCheckpoint" in ckpt["callbacks"]
    assert not list(ckpts.glob(".*.tmp"))
    # The interrupted state resumes (mid-epoch); validation accepts it.
    validation.check_ckpt_path(compose_job(f"ckpt_path={ckpts / 'interrupted.ckpt'}"))


def _run(out: Path, data: list[str], *overrides: str) -> dict[str, float]:
    cfg = compose_job(*data, "~logger", *quiet(), *overrides, out=out)
    validation.check(cfg)
    return runner.run(cfg)


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
    for key in ("test/loss", "test/acc", "val/loss", "train/loss", "train/acc"):
        assert resumed[key] == straight[key], key  # exact: same batches, dropout, optimizer state


def _checkpoint(path: Path, **net_changes) -> Path:
    cfg = compose_job()
    net = {**validation.OmegaConf.to_container(cfg.model.net, resolve=True), **net_changes}
    optimizer = validation.OmegaConf.to_container(cfg.model.optimizer, resolve=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"net": net, "optimizer": optimizer}}, path)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing.ckpt", "does not exist"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "junk.ckpt").write_bytes(b"\x00" * 64) and p / "junk.ckpt",
         "not a checkpoint written by train.py"),
        (lambda p: torch.save({"weights": torch.ones(2)}, p / "w.ckpt") or p / "w.ckpt",
         "not a checkpoint written by train.py"),
        (lambda p: _checkpoint(p / "other.ckpt", hidden1=64), "model.net.hidden1=64"),
    ],
    ids=["missing", "folder", "junk", "foreign", "other-architecture"],
)
def test_bad_resume_checkpoint_is_named(tmp_path, make, expected):
    path = make(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(UserError) as err:
        validation.check_ckpt_path(compose_job(f"ckpt_path={path}"))
    assert str(path) in str(err.value) and expected in str(err.value)
    assert (path.read_bytes() if path.is_file() else None) == before


def test_matching_checkpoint_passes(tmp_path):
    validation.check_ckpt_path(compose_job(f"ckpt_path={_checkpoint(tmp_path / 'ok.ckpt')}"))


def test_other_architecture_stops_train_py_before_training(tmp_path):
    path = _checkpoint(tmp_path / "other.ckpt", hidden1=64)
    result = run_train(f"ckpt_path={path}", f"data.data_dir={tmp_path / 'none'}", cwd=tmp_path)
    assert_one_paragraph(result, str(path), "model.net.hidden1=64")
    assert not (tmp_path / "none").exists()


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
