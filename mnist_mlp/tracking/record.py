"""What a run records beside Lightning's metrics, and how runs and tags are named in the store.

One place for every tag key and run name, and for turning the resolved config, the git state and
Hydra's overrides into params, tags and files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_mlp.config import hydra_config
from mnist_mlp.paths import repo_root

ROLE_TAG = "mnist_mlp.role"
EVALUATES_TAG = "mnist_mlp.evaluates"
SWEEP_DIR_TAG = "sweep.dir"
SWEEP_JOB_TAG = "sweep.job"
SWEEP_KEYS_TAG = "sweep.keys"
BEST_CKPT_TAG = "best_checkpoint"
FAILURE_TAG = "mnist_mlp.failure"  # why a run ended FAILED (its exception, a dead rank, its Slurm job)
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI (Markdown)
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
CKPT_DIR, REPORT_DIR, MODEL_NAME = "checkpoints", "report", "model"
_MAX_PARAM = 6000  # MLflow 3.x's longest param value


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def swept_keys(overrides: Sequence[str]) -> list[str]:
    """Keys a multirun sweeps over (``model.lr=0.01,0.1`` -> ``model.lr``)."""
    return [o.key_or_group for o in _parse(overrides) if o.is_sweep_override()]


def job_run_name(job_overrides: Sequence[str], keys: Sequence[str]) -> str:
    """``lr=0.01,seed=1``: the swept values of a job, keys cut to their last part when unique."""
    values = {o.key_or_group: o.get_value_element_as_str() for o in _parse(job_overrides)}
    keys = [k for k in keys if k in values] or list(values)
    short = [k.replace("/", ".").rsplit(".", 1)[-1] for k in keys]
    names = short if len(set(short)) == len(short) else keys
    return ",".join(f"{n}={values[k]}" for n, k in zip(names, keys, strict=True)) or "job"


def single_run_name(overrides: Sequence[str], output_dir_name: str) -> str:
    """``lr=0.05,max_epochs=2 19-08-43``: what was changed from the defaults, and when it started.

    Where things are (the store, the data folder: ``logger.*``, ``data.data_dir``) is left out:
    it says nothing about the experiment, is in the run's params, and a path would make the name
    longer than the runs table shows."""
    kept = [o for o in overrides if not _says_where(o)]
    changed = job_run_name(kept, []) if kept else "defaults"
    return f"{changed} {output_dir_name[:8]}"


def _says_where(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key.startswith("logger.") or key == "data.data_dir"


#: Hydra's instructions to ``instantiate``: how to build, not what was built.
_HYDRA_KEYS = frozenset({"_target_", "_recursive_", "_partial_", "_convert_", "_args_"})


def _readable(value: Any) -> Any:
    """A list of ``_target_`` dicts (``trainer.plugins``) as the targets they name."""
    if isinstance(value, list) and any(isinstance(v, Mapping) and "_target_" in v for v in value):
        return [v["_target_"] if isinstance(v, Mapping) and "_target_" in v else v for v in value]
    return value


def _flatten(node: Any, choices: Mapping[str, str], prefix: str = "") -> dict[str, Any]:
    path = prefix[:-1]
    out: dict[str, Any] = {}
    if path in choices and isinstance(node, Mapping):  # a swappable part: what was chosen
        out[path] = node.get("_target_") or choices[path]
    if not isinstance(node, Mapping):
        return {path: _readable(node)}
    for key, value in node.items():
        if key not in _HYDRA_KEYS:
            out.update(_flatten(value, choices, f"{prefix}{key}."))
    return out


def group_choices() -> dict[str, str]:
    """The options chosen for the config groups nested in another (``model/optimizer=sgd`` as
    ``{"model.optimizer": "sgd"}``): the parts a user swaps, shown as params by what they build.

    Top-level groups (``model``, ``trainer``, ...) each build one fixed class; Hydra's own groups
    are not the run's settings. Outside a Hydra app (no choices known) none.
    """
    hc = hydra_config()
    if hc is None:
        return {}
    return {group.replace("/", "."): str(option) for group, option in hc.runtime.choices.items()
            if "/" in group and not group.startswith("hydra") and option is not None}


def config_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved job config with dotted keys (``model.lr``), as a person would write it.

    Exactly what ran, overrides in, without Hydra's build instructions (``_target_``,
    ``_partial_``, ``_recursive_``) or empty groups: a swapped part reads ``model.optimizer =
    torch.optim.SGD`` (or ``model.scheduler = none``) beside its settings. ``config.yaml`` among
    the run's artifacts keeps the config as Hydra composed it.
    """
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return {k: str(v)[:_MAX_PARAM] for k, v in _flatten(container, group_choices()).items()}


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


def overrides_yaml() -> str:
    """The command line's overrides as YAML: what this run changed from the defaults."""
    hc = hydra_config()
    task = list(hc.overrides.task) if hc is not None else []
    return OmegaConf.to_yaml(OmegaConf.create(task))
