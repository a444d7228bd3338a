"""Training faults in-process: a resumed run ends bitwise as an uninterrupted one; a checkpoint is
never half-written. (NaN loss and signals, as train.py meets them: tests/integration.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_mlp import runner, validation
from mnist_mlp.faults import AtomicCheckpointIO
from tests.helpers.configs import compose_job, quiet
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
