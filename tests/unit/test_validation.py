"""Bad config values are refused before any work, naming the key and the allowed range."""

from __future__ import annotations

import pytest
from faults_helpers import assert_one_paragraph, cli_overrides, compose_job, run_train

from mnist_mlp import validation
from mnist_mlp.errors import UserError

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
]


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


def test_bad_value_stops_before_data_and_tracking(tmp_path):
    """The data folder does not exist: the config error comes first and nothing is created."""
    missing = tmp_path / "no-data"
    result = run_train(*cli_overrides(missing, {}, tmp_path), "model.lr=-1", cwd=tmp_path)
    assert_one_paragraph(result, "model.lr=-1", "a finite number > 0")
    assert not missing.exists() and not (tmp_path / "mlruns").exists()


def test_unknown_key_is_refused_by_hydra_without_traceback(tmp_path):
    result = run_train("model.lrr=1", cwd=tmp_path)
    assert result.returncode != 0
    assert "model.lrr" in result.stderr and "Traceback" not in result.stderr
