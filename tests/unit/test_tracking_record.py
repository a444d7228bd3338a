"""What a run records of its config and how it is named (mnist_mlp/tracking/record.py)."""

from __future__ import annotations

import pytest

from mnist_mlp.tracking import record
from mnist_mlp.tracking.record import config_params
from tests.helpers.configs import compose_job


def test_params_are_the_resolved_config_with_dotted_keys_overrides_included():
    params = record.config_params(compose_job("model.lr=0.05", "seed=3", "model/optimizer=adam"))
    assert params["model.lr"] == "0.05" and params["seed"] == "3"
    assert params["data.batch_size"] == "100" and params["trainer.max_epochs"] == "30"
    assert params["model.optimizer"] == "torch.optim.Adam"  # the part swapped, not Hydra's key
    assert params["model.net.num_classes"] == "10"  # interpolations resolved


def test_sweep_jobs_are_named_by_their_swept_values():
    keys = record.swept_keys(["model.lr=0.01,0.1", "seed=1,2", "trainer.max_epochs=2"])
    assert keys == ["model.lr", "seed"]
    assert record.single_run_name([], "19-08-43-352778") == "defaults 19-08-43"
    assert record.single_run_name(["model.lr=0.05"], "19-08-43-352778") == "lr=0.05 19-08-43"
    where = ["logger.tracking_uri=sqlite:////tmp/a/mlflow.db", "data.data_dir=/tmp/data",
             "+logger.artifact_location=/tmp/a/artifacts"]
    assert record.single_run_name([*where, "seed=3"], "19-08-43-352778") == "seed=3 19-08-43"
    assert record.single_run_name(where, "19-08-43-352778") == "defaults 19-08-43"
    name = record.job_run_name(["model.lr=0.01", "seed=1", "trainer.max_epochs=2"], keys)
    assert name == "lr=0.01,seed=1"
    assert record.job_run_name(["model/optimizer=adam"], ["model/optimizer"]) == "optimizer=adam"


# A run's params read as a person would write the config: no Hydra build instructions, no empty
# groups, a swapped part (optimizer, scheduler) named by what it builds.


HYDRA_INTERNALS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


@pytest.mark.parametrize(("overrides", "optimizer", "scheduler"), [
    ((), "torch.optim.SGD", "none"),
    (("model/optimizer=adam", "model/scheduler=cosine"), "torch.optim.Adam",
     "torch.optim.lr_scheduler.CosineAnnealingLR"),
])
def test_params_hold_settings_not_hydra_internals(overrides, optimizer, scheduler):
    params = config_params(compose_job(*overrides))
    assert not [k for k in params if any(part in HYDRA_INTERNALS for part in k.split("."))]
    assert not [k for k, v in params.items() if v in ("{}", "[]") or "_target_" in v]
    assert params["model.optimizer"] == optimizer
    assert params["model.scheduler"] == scheduler
    assert params["trainer.plugins"] == "['mnist_mlp.faults.AtomicCheckpointIO']"
    # The settings themselves stay, overrides in.
    assert params["model.lr"] == str(compose_job(*overrides).model.lr)
    assert params["model.net.hidden1"] == "200" and params["data.batch_size"] == "100"


def test_an_override_of_a_parts_target_shows_what_ran():
    params = config_params(compose_job("model.optimizer._target_=torch.optim.RMSprop"))
    assert params["model.optimizer"] == "torch.optim.RMSprop"
