"""A run's params read as a person would write the config: no Hydra build instructions, no empty
groups, a swapped part (optimizer, scheduler) named by what it builds."""

from __future__ import annotations

import pytest
from faults_helpers import compose_job

from mnist_mlp.tracking.record import config_params

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
