"""How runs and their tags are named in the store: one place for every tag key and run name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROLE_TAG = "mnist_mlp.role"
EVALUATES_TAG = "mnist_mlp.evaluates"
SWEEP_DIR_TAG = "sweep.dir"
SWEEP_JOB_TAG = "sweep.job"
SWEEP_KEYS_TAG = "sweep.keys"
BEST_CKPT_TAG = "best_checkpoint"
FAILURE_TAG = "mnist_mlp.failure"  # why a run ended FAILED (its exception, a dead rank, its Slurm job)
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
CKPT_DIR, REPORT_DIR, MODEL_NAME = "checkpoints", "report", "model"


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
    """``lr=0.05,max_epochs=2 19-08-43``: what was changed from the defaults, and when it started."""
    changed = job_run_name(overrides, []) if overrides else "defaults"
    return f"{changed} {output_dir_name[:8]}"
