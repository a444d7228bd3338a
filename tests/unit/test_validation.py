"""Bad config values and resume checkpoints are refused before any work, naming the key and what
is allowed."""

from __future__ import annotations

import pytest
import torch

from mnist_mlp import validation
from mnist_mlp.errors import UserError
from tests.helpers.configs import checkpoint_of, compose_job

BAD = [
    ("model.lr=0", "model.lr=0", "a finite number > 0"),
    ("model.lr=-1", "model.lr=-1", "a finite number > 0"),
    ("model.lr=true", "model.lr=True", "a finite number > 0"),
    ("data.batch_size=0", "data.batch_size=0", "an integer >= 1"),
    ("data.batch_size=abc", "data.batch_size='abc'", "an integer >= 1"),
    ("data.eval_batch_size=1.5", "data.eval_batch_size=1.5", "an integer >= 1"),
    ("data.val_size=0", "data.val_size=0", "smaller than the training set"),
    ("model.net.dropout1=1.0", "model.net.dropout1=1.0", "in [0, 1)"),
    ("model.net.dropout3=-0.1", "model.net.dropout3=-0.1", "in [0, 1)"),
    ("model.net.hidden1=0", "model.net.hidden1=0", "an integer >= 1"),
    ("model.net.hidden3=-5", "model.net.hidden3=-5", "an integer >= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0", "-1: no limit"),
    ("test_ckpt=worst", "test_ckpt='worst'", "best or last"),
    ("model.optimizer._target_=torch.optim.Nope", "model.optimizer._target_='torch.optim.Nope'",
     "cannot be imported"),
    ("model/optimizer=adam", None, None),  # a valid choice passes
    # keys that reach torch only when fit configures the optimizer: refused before any run
    ("+model.optimizer.momentun=0.5", "model.optimizer.momentun is not a setting of torch.optim.SGD",
     "Did you mean model.optimizer.momentum?"),
    ("model/scheduler=plateau", None, None),
]

OPTIMIZER_ERRORS = [
    (["model/scheduler=cosine", "+model.scheduler.bar=2"],
     "model.scheduler.bar is not a setting of torch.optim.lr_scheduler.CosineAnnealingLR"),
    (["model/scheduler=plateau", "model.scheduler.factor=2"],
     "The settings under model.scheduler cannot build torch.optim.lr_scheduler.ReduceLROnPlateau "
     "(ValueError: Factor should be < 1.0.)"),
]


@pytest.mark.parametrize(("overrides", "message"), OPTIMIZER_ERRORS)
def test_a_scheduler_setting_torch_refuses_is_named_before_training(overrides, message):
    with pytest.raises(UserError) as err:
        validation.check(compose_job(*overrides))
    assert message in str(err.value) and "run again" in str(err.value)


@pytest.mark.parametrize(("override", "shown", "allowed"), BAD)
def test_each_bad_value_is_refused_naming_key_and_range(override, shown, allowed):
    cfg = compose_job(override)
    if shown is None:
        validation.check(cfg)
        return
    with pytest.raises(UserError) as err:
        validation.check(cfg)
    assert shown in str(err.value) and allowed in str(err.value)
    assert "run again" in str(err.value)


def test_defaults_pass():
    validation.check(compose_job())


def test_broken_interpolation_is_one_message():
    with pytest.raises(UserError, match="cannot be resolved"):
        validation.check(compose_job("model.lr=${nope}"))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p / "missing.ckpt", "does not exist"),
        (lambda p: p, "is a folder"),
        (lambda p: (p / "junk.ckpt").write_bytes(b"\x00" * 64) and p / "junk.ckpt",
         "not a checkpoint written by train.py"),
        (lambda p: torch.save({"weights": torch.ones(2)}, p / "w.ckpt") or p / "w.ckpt",
         "not a checkpoint written by train.py"),
        (lambda p: checkpoint_of(p / "other.ckpt", hidden1=64), "model.net.hidden1=64"),
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
    validation.check_ckpt_path(compose_job(f"ckpt_path={checkpoint_of(tmp_path / 'ok.ckpt')}"))
