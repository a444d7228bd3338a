"""Every config group composes, and what it builds is what the reference asks for."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

import mnist_mlp  # noqa: F401
from mnist_mlp import config
from mnist_mlp.errors import UserError
from mnist_mlp.paths import repo_root
from tests.helpers.configs import compose_job

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


# Config mistakes and choices: a key the model does not take is named with the ones it takes; an
# optimizer option brings its own learning rate, which every override form still changes.


def test_an_unknown_model_key_is_one_paragraph_naming_it_and_the_valid_keys():
    cfg = compose_job("+model.lrr=0.1")  # Hydra's own advice for a key it does not know
    with pytest.raises(UserError) as caught:
        config.build(cfg.model, "model", _convert_="all")
    message = str(caught.value)
    assert "\n" not in message
    assert "model.lrr is not a setting of mnist_mlp.module.MnistLitModule" in message
    assert "Did you mean model.lr?" in message and "model.lr=0.1" in message
    assert "net, optimizer, lr, scheduler" in message  # what it takes, in its order
    assert "TypeError" not in message and "unexpected keyword" not in message


@pytest.mark.parametrize(("overrides", "kind", "lr"), [
    ((), torch.optim.SGD, 0.1),  # the reference
    (("model/optimizer=adam",), torch.optim.Adam, 0.001),  # Adam's own rate, not SGD's 0.1
    (("model/optimizer=adam", "model.lr=0.01"), torch.optim.Adam, 0.01),
    (("model.lr=0.05",), torch.optim.SGD, 0.05),
    (("model/optimizer=sgd", "model.optimizer.momentum=0"), torch.optim.SGD, 0.1),
])
def test_each_optimizer_option_sets_its_learning_rate_and_overrides_win(overrides, kind, lr):
    cfg = compose_job(*overrides)
    module = config.build(cfg.model, "model", _convert_="all")
    optimizer = module.configure_optimizers()
    assert type(optimizer) is kind
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    assert cfg.model.lr == pytest.approx(lr)
