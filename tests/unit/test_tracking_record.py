"""What a run records of its config and how it is named (mnist_mlp/tracking/record.py)."""

from __future__ import annotations

from mnist_mlp.tracking import record
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
    name = record.job_run_name(["model.lr=0.01", "seed=1", "trainer.max_epochs=2"], keys)
    assert name == "lr=0.01,seed=1"
    assert record.job_run_name(["model/optimizer=adam"], ["model/optimizer"]) == "optimizer=adam"
