"""What a run records beside Lightning's metrics: the resolved config, git state, Hydra's overrides."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_mlp.paths import repo_root

_MAX_PARAM = 6000  # MLflow 3.x's longest param value


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved job config with dotted keys (``model.lr``): exactly what ran, overrides in."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return {k: str(v)[:_MAX_PARAM] for k, v in _flatten(container).items()}


def git_tags(root: Path | None = None) -> dict[str, str]:
    """Commit and dirty flag (tracked files changed) of the code that ran."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root or repo_root()), *args],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": "unknown"}
    return {"git.commit": commit, "git.dirty": str(dirty).lower(),
            "mlflow.source.git.commit": commit}


def hydra_config() -> Any | None:
    """Hydra's runtime config, or None outside a Hydra app (tests, the benchmark)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def overrides_yaml() -> str:
    """The command line's overrides as YAML: what this run changed from the defaults."""
    hc = hydra_config()
    task = list(hc.overrides.task) if hc is not None else []
    return OmegaConf.to_yaml(OmegaConf.create(task))
