"""Configs for tests: the overrides that keep a run's outputs in a temporary folder, and the one
Hydra compose of ``conf/`` for in-process runs (train.py's job config, ``HydraConfig`` set)."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

import mnist_mlp  # noqa: F401  (registers the ${repo_root:} resolvers of conf/)
from mnist_mlp.paths import repo_root
from tests.helpers.store import new_store

ROOT = repo_root()
CONF = ROOT / "conf"


def quiet() -> list[str]:
    """Overrides for a small, quiet CPU run: no progress display, no model summary."""
    return ["~callbacks.progress_bar", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.accelerator=cpu"]


def store_overrides(tmp_path: Path, uri: str | None = None, *, experiment: str | None = None,
                    fresh: bool = False) -> list[str]:
    """Overrides keeping a run's MLflow records and outputs inside ``tmp_path``.

    The store is ``tmp_path/mlruns/mlflow.db``, ready-made from the template (``fresh``: left for
    train.py to create, as on a first run), or the server ``uri``, which then keeps the artifacts
    itself. Hydra's run and sweep folders are ``tmp_path/outputs`` and ``tmp_path/multirun``.
    """
    if uri is None:
        uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db" if fresh else new_store(tmp_path)
        where = [f"logger.tracking_uri={uri}", f"logger.artifact_location={tmp_path}/mlruns/artifacts"]
    else:
        where = [f"logger.tracking_uri={uri}", "logger.artifact_location=null"]
    if experiment is not None:
        where.append(f"logger.experiment_name={experiment}")
    return [*where, f"hydra.run.dir={tmp_path}/outputs", f"hydra.sweep.dir={tmp_path}/multirun"]


def compose_config(*overrides: str, out: Path | None = None, config: str = "train") -> DictConfig:
    """``conf/<config>.yaml`` composed as the command would get it, ``hydra`` key included.

    ``HydraConfig`` is set and its ``runtime.output_dir`` is the run folder (``out``, which wins
    over a ``hydra.run.dir`` among the overrides, or the ``hydra.run.dir`` given), so every
    ``${hydra:runtime.output_dir}`` path (checkpoints, report, MLflow buffer) lands there, as in
    ``python train.py``.
    """
    where = [f"hydra.run.dir={out}"] if out is not None else []
    GlobalHydra.instance().clear()  # a test may have left one initialised
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=[*overrides, *where], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(cfg.hydra.run.dir)
    HydraConfig().set_config(cfg)
    return cfg


def compose_job(*overrides: str, out: Path | None = None, config: str = "train") -> DictConfig:
    """The job config the command hands to ``mnist_mlp.cli`` (no ``hydra`` key); see ``compose_config``."""
    cfg = compose_config(*overrides, out=out, config=config)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def train_main(*args: str) -> None:
    """``python train.py args...`` in this process, Hydra's command line and all: a sweep's ``-m``
    runs each job here (Hydra's basic launcher) with the multirun's callbacks. SystemExit
    propagates (exit 2 on bad input)."""
    import train

    GlobalHydra.instance().clear()
    # Imported, train.py's config_path would be looked up as a package: name the folder.
    with mock.patch.object(sys, "argv", ["train.py", f"--config-path={CONF}", *args]):
        train.main()


def checkpoint_of(path: Path, **net_changes: object) -> Path:
    """A checkpoint holding the configured network's hyperparameters with ``net_changes`` (another
    architecture, say) and no weights: what the resume check reads."""
    cfg = compose_job()
    net = {**OmegaConf.to_container(cfg.model.net, resolve=True), **net_changes}
    optimizer = OmegaConf.to_container(cfg.model.optimizer, resolve=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"net": net, "optimizer": optimizer}}, path)
    return path
