"""Where the project keeps data and runs, independent of the working directory.

Hydra changes nothing about the working directory with ``version_base="1.3"``, but users start
``train.py`` from anywhere and multirun jobs get their own output folders; data and the MLflow store
must still be the one at the repository root, or runs scatter and MNIST is fetched twice.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def repo_root() -> Path:
    """The project's root: ``MNIST_MLP_ROOT`` if set, else the folder holding the package."""
    env = os.environ.get("MNIST_MLP_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parent.parent


def default_tracking_uri() -> str:
    """SQLite store at ``<root>/mlruns/mlflow.db``: MLflow 3.x refuses a bare ``./mlruns`` store."""
    return f"sqlite:///{repo_root() / 'mlruns' / 'mlflow.db'}"


def register_resolvers() -> None:
    """``${repo_root:}`` and ``${default_tracking_uri:}`` for the YAML configs."""
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(repo_root()))
    if not OmegaConf.has_resolver("default_tracking_uri"):
        OmegaConf.register_new_resolver("default_tracking_uri", default_tracking_uri)
