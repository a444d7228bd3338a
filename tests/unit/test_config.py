"""Every config group composes, and what it builds is what the reference asks for."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

import mnist_mlp  # noqa: F401
from mnist_mlp.paths import repo_root

CONF = repo_root() / "conf"


def _compose(overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


GROUP_CHOICES = [
    (group, option)
    for group in ("model", "model/optimizer", "model/scheduler", "data", "trainer", "callbacks",
                  "logger")
    for option in _options(group)
]


@pytest.mark.parametrize(("group", "option"), GROUP_CHOICES)
def test_every_group_option_composes_and_resolves(group, option):
    cfg = _compose([f"{group}={option}"])
    job_keys = [k for k in cfg if k != "hydra"]
    container = OmegaConf.to_container(OmegaConf.masked_copy(cfg, job_keys), resolve=True)
    assert container["seed"] == 42


def test_defaults_are_the_reference_settings():
    cfg = _compose()
    assert cfg.model.lr == 0.1
    assert cfg.data.batch_size == 100
    assert cfg.trainer.max_epochs == 30
    assert cfg.data.val_size == 5000
    assert Path(cfg.data.data_dir) == repo_root() / "data"
    assert cfg.logger.tracking_uri == f"sqlite:///{repo_root() / 'mlruns' / 'mlflow.db'}"


def test_model_and_optimizer_are_built_from_targets():
    import torch

    cfg = _compose(["model/optimizer=adam", "model/scheduler=cosine", "model.lr=0.01"])
    module = instantiate(cfg.model, _convert_="all")
    opt = module.configure_optimizers()
    assert isinstance(opt["optimizer"], torch.optim.Adam)
    assert opt["optimizer"].param_groups[0]["lr"] == 0.01
    assert isinstance(opt["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    assert opt["lr_scheduler"]["scheduler"].T_max == cfg.trainer.max_epochs


def test_default_optimizer_is_sgd_with_momentum_at_model_lr():
    import torch

    module = instantiate(_compose(["model.lr=0.05"]).model, _convert_="all")
    opt = module.configure_optimizers()
    assert type(opt) is torch.optim.SGD and opt.param_groups[0]["lr"] == 0.05
    assert opt.param_groups[0]["momentum"] == 0.9


def test_network_sizes_are_config_keys():
    cfg = _compose(["model.net.hidden1=64", "model.net.dropout2=0.1"])
    module = instantiate(cfg.model, _convert_="all")
    assert module.net.wih.out_features == 64 and module.net.dropout2.p == 0.1
