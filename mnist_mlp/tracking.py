"""The MLflow side of every run: what is recorded, how runs are grouped and how they end.

Lightning's ``MLFlowLogger`` (``conf/logger/mlflow.yaml``) creates the run and logs the epoch
metrics; this module adds what it does not: the resolved config as dotted params, the config
files, git/data/sweep tags, the report files, the best checkpoint and the model in MLflow's format,
a parent run per Hydra sweep, FAILED/KILLED endings, a fast check that the store is reachable,
and the checkpoint download that ``evaluate.py run_id=<id>`` needs.

Layout in the store (``logger.tracking_uri``, experiment ``logger.experiment_name``):

* one run per training job, tagged ``mnist_mlp.role=train``; artifacts ``config.yaml``,
  ``overrides.yaml``, ``report/*``, ``checkpoints/<best>.ckpt``; the model as logged model ``model``
  (``mlflow.pytorch.load_model("runs:/<run_id>/model")``);
* a Hydra multirun adds one parent run (``mnist_mlp.role=sweep``, named after the sweep overrides)
  and nests each job under it (``mlflow.parentRunId``); jobs are named by their swept values
  (``lr=0.01,seed=1``) and share the tag ``sweep.dir``;
* ``evaluate.py run_id=<id>`` records into a *new* run nested under the evaluated run
  (``mnist_mlp.role=evaluate``, ``mnist_mlp.evaluates=<id>``): recorded runs are never changed.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from mnist_mlp.errors import UserError
from mnist_mlp.paths import repo_root

log = logging.getLogger(__name__)

ROLE_TAG = "mnist_mlp.role"
EVALUATES_TAG = "mnist_mlp.evaluates"
SWEEP_DIR_TAG = "sweep.dir"
SWEEP_JOB_TAG = "sweep.job"
SWEEP_KEYS_TAG = "sweep.keys"
BEST_CKPT_TAG = "best_checkpoint"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
CKPT_DIR, REPORT_DIR, MODEL_NAME = "checkpoints", "report", "model"
_BATCH = 100  # MLflow's limit of params/tags per log_batch call
_MAX_PARAM = 6000  # MLflow 3.x's longest param value


# ---------------------------------------------------------------- store ---------------------------


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def open_store(uri: str, experiment_name: str, artifact_location: str | None = None):
    """Client and experiment id (created if missing), or a UserError naming ``logger.tracking_uri``.

    Called before training, so a server that is down is reported in seconds, not after the last
    epoch; a sweep calls it once before launching, so parallel jobs never race on creating the
    SQLite schema or the experiment. HTTP stores are probed without MLflow's minutes of retries.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    remote = urlparse(uri).scheme in ("http", "https")
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    try:
        client = MlflowClient(uri)
        with _env(**quick) if remote else contextlib.nullcontext():
            experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                return client, client.create_experiment(experiment_name, artifact_location)
            except MlflowException:  # created meanwhile by a job started beside this one
                experiment = client.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
    except Exception as err:  # noqa: BLE001  (any failure here means: no usable store)
        raise UserError(
            f"logger.tracking_uri={uri} cannot be used ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else ''}). Start the tracking server "
            "(`mlflow server`, or `make ui` for the local store) or point logger.tracking_uri at "
            "a reachable store; nothing was trained or recorded."
        ) from None
    if experiment.lifecycle_stage == "deleted":
        raise UserError(
            f"logger.experiment_name={experiment_name} names a deleted experiment in {uri}: "
            f"restore it (`mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`) or choose another logger.experiment_name."
        )
    return client, experiment.experiment_id


# ---------------------------------------------------------------- what a run records --------------


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


def _hydra() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _overrides_yaml() -> str:
    hc = _hydra()
    task = list(hc.overrides.task) if hc is not None else []
    return OmegaConf.to_yaml(OmegaConf.create(task))


def find_sweep_parent(client: Any, experiment_id: str, sweep_dir: str) -> Any | None:
    """The parent run the Hydra callback opened for this sweep folder, newest first."""
    quoted = sweep_dir.replace("'", "\\'")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{SWEEP_DIR_TAG}` = '{quoted}' and tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


# ---------------------------------------------------------------- one training run ----------------


def _mlflow_logger(trainer: Any) -> Any | None:
    from lightning.pytorch.loggers import MLFlowLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)


@dataclass
class TrackedRun:
    """The MLflow run of one training job; ``None`` logger (``logger=null``) makes it a no-op."""

    cfg: DictConfig
    trainer: Any
    datamodule: Any
    logger: Any | None
    client: Any = None
    run_id: str | None = None

    def start(self) -> None:
        """Check the store, create the run with its name and tags, log params and config files."""
        if self.logger is None:
            return
        lcfg = self.cfg.logger
        self.client, experiment_id = open_store(
            lcfg.tracking_uri, lcfg.experiment_name, lcfg.get("artifact_location")
        )
        tags = {ROLE_TAG: "train", **git_tags(), **self._data_tags(), **self._sweep_tags(
            experiment_id)}
        self.logger.tags = {**tags, **(self.logger.tags or {})}
        self.run_id = self.logger.run_id  # MLFlowLogger creates the run here
        params = config_params(self.cfg)
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
            Path(tmp, "overrides.yaml").write_text(_overrides_yaml())
            self.client.log_artifacts(self.run_id, tmp)
        log.info("MLflow run %s in %s", self.run_id, lcfg.tracking_uri)

    def _data_tags(self) -> dict[str, str]:
        return {f"data.md5.{k}": v for k, v in self.datamodule.checksums().items()}

    def _sweep_tags(self, experiment_id: str) -> dict[str, str]:
        """Name, hydra folders and, for a multirun job, the sweep parent and job number."""
        from hydra.types import RunMode

        hc = _hydra()
        tags: dict[str, str] = {}
        if self.cfg.logger.get("run_name"):
            tags[RUN_NAME_TAG] = str(self.cfg.logger.run_name)
        if hc is None:
            return tags
        tags["hydra.output_dir"] = str(hc.runtime.output_dir)
        if hc.mode != RunMode.MULTIRUN:
            # MLflow's random names repeat here: seed_everything seeds the generator they come from.
            tags.setdefault(RUN_NAME_TAG, single_run_name(list(hc.overrides.task),
                                                          Path(hc.runtime.output_dir).name))
            return tags
        sweep_dir = str(hc.sweep.dir)
        tags.update({SWEEP_DIR_TAG: sweep_dir, SWEEP_JOB_TAG: str(hc.job.num)})
        parent = find_sweep_parent(self.client, experiment_id, sweep_dir)
        keys = parent.data.tags.get(SWEEP_KEYS_TAG, "").split(",") if parent else []
        if parent is not None:
            tags[PARENT_TAG] = parent.info.run_id
        tags.setdefault(RUN_NAME_TAG, job_run_name(list(hc.overrides.task), [k for k in keys if k]))
        return tags

    def log_outputs(self, report_dir: str | os.PathLike | None) -> None:
        """Report files, best checkpoint and the network as an MLflow model, after testing."""
        if self.logger is None:
            return
        if report_dir and Path(report_dir).is_dir():
            self.client.log_artifacts(self.run_id, str(report_dir), REPORT_DIR)
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        if best and Path(best).is_file():
            self.client.log_artifact(self.run_id, best, CKPT_DIR)
            self.client.set_tag(self.run_id, BEST_CKPT_TAG, f"{CKPT_DIR}/{Path(best).name}")
        self.log_model(self.trainer.lightning_module.net)

    def log_model(self, net: Any) -> None:
        """The bare network, on CPU in eval mode, as logged model ``model`` of this run.

        ``mlflow.pytorch.log_model`` files the model under the active run's experiment, so the run
        is resumed for the call (its ending is then set by ``end``). Pickle serialisation with
        explicit requirements and signature avoids MLflow's slow requirement inference; the package
        goes along as code so the model loads without this project installed.
        """
        import mlflow
        import mlflow.pytorch
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        net = copy.deepcopy(net).cpu().eval()
        n_in, n_out = net.wih.in_features, net.who.out_features
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_in))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_out))]),
        )
        requirements = [f"torch=={torch.__version__.split('+')[0]}",
                        f"omegaconf=={_version('omegaconf')}"]
        mlflow.set_tracking_uri(self.cfg.logger.tracking_uri)
        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(
                net, name=MODEL_NAME, signature=signature, serialization_format="pickle",
                pip_requirements=requirements, code_paths=[str(Path(__file__).parent)],
            )

    def log_timings(self, seconds: Mapping[str, float]) -> None:
        """Wall seconds per phase of the run (``mnist_mlp.speed.PhaseClock``) as ``time/<phase>_s``."""
        if self.logger is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(f"time/{phase}_s", float(s), now, 0) for phase, s in seconds.items()])

    def end(self, status: str) -> None:
        """Close the run as FINISHED, FAILED or KILLED; never raise over the original error."""
        if self.client is None or self.run_id is None:
            return
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as err:  # noqa: BLE001
            log.warning("Could not mark MLflow run %s as %s: %s", self.run_id, status, err)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, trainer: Any, datamodule: Any) -> Iterator[TrackedRun]:
    """The MLflow run around fit and test, closed as FINISHED, FAILED or KILLED.

    Lightning closes the run itself when fit or test raise, always as FAILED, and turns Ctrl-C into
    ``sys.exit(1)``; SIGTERM arrives as ``SIGTERMException`` (a ``SystemExit``). So any
    ``KeyboardInterrupt``/``SystemExit`` here, or a SIGTERM seen by the trainer, means KILLED.
    """
    run = TrackedRun(cfg, trainer, datamodule, _mlflow_logger(trainer))
    run.start()
    try:
        yield run
    except (KeyboardInterrupt, SystemExit):
        run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    run.end("KILLED" if trainer.received_sigterm else "FINISHED")


# ---------------------------------------------------------------- sweeps --------------------------


class SweepParentRun(HydraCallback):
    """Hydra callback: before a multirun launches, prepare the store and open one parent run.

    Preparing here, once, keeps parallel jobs (``hydra/launcher=joblib``) from racing on a fresh
    SQLite store. Jobs find the parent by the sweep folder (tag ``sweep.dir``), so any launcher
    works. The parent ends FINISHED after the sweep, or at exit with the worst status of its jobs.
    """

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        lcfg = config.get("logger")
        if not lcfg or "tracking_uri" not in lcfg:
            return
        try:
            self.client, experiment_id = open_store(
                lcfg.tracking_uri, lcfg.experiment_name, lcfg.get("artifact_location")
            )
        except UserError as err:  # same words and exit status as runner.run_cli
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        overrides = list(config.hydra.overrides.task)
        keys = swept_keys(overrides)
        swept = [o for o in overrides if o.split("=", 1)[0] in set(keys)]
        tags = {ROLE_TAG: "sweep", SWEEP_DIR_TAG: str(config.hydra.sweep.dir),
                SWEEP_KEYS_TAG: ",".join(keys), **git_tags()}
        run = self.client.create_run(
            experiment_id, run_name="sweep " + (" ".join(swept) or "(no swept keys)"), tags=tags
        )
        self.run_id = run.info.run_id
        atexit.register(self._end_if_open)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._end(self._children_status() or "FINISHED")

    def _children_status(self) -> str | None:
        run = self.client.get_run(self.run_id)
        children = self.client.search_runs(
            [run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.run_id}'"
        )
        statuses = {c.info.status for c in children}
        return next((s for s in ("KILLED", "FAILED") if s in statuses), None)

    def _end_if_open(self) -> None:
        if self.run_id and self.client.get_run(self.run_id).info.status == "RUNNING":
            self._end(self._children_status() or "FAILED")

    def _end(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            with contextlib.suppress(Exception):
                self.client.set_terminated(self.run_id, status)


# ---------------------------------------------------------------- evaluate.py run_id=<id> --------


@dataclass
class EvaluationRun:
    """A new run nested under the evaluated one, and that run's checkpoint on local disk.

    ``log_report`` records the report files and the test metrics in the new run.
    """

    client: Any
    run_id: str
    ckpt_path: Path

    def log_report(self, report_dir: str | os.PathLike | None,
                   metrics: Mapping[str, float] | None = None) -> None:
        from mlflow.entities import Metric

        if report_dir and Path(report_dir).is_dir():
            self.client.log_artifacts(self.run_id, str(report_dir), REPORT_DIR)
        if metrics:
            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
            for i in range(0, len(items), _BATCH):
                self.client.log_batch(self.run_id, metrics=items[i : i + _BATCH])


def run_checkpoint(client: Any, run_id: str, dst: str | os.PathLike, uri: str = "") -> Path:
    """Download the best checkpoint of a training run; a UserError says why there is none."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(
            f"run_id={run_id} is not a run in {uri or 'this store'}: copy the run ID from the "
            "MLflow UI (`make ui`) or `mlflow runs list`, and check logger.tracking_uri."
        ) from None
    path = run.data.tags.get(BEST_CKPT_TAG) or next(
        (a.path for a in client.list_artifacts(run_id, CKPT_DIR) if a.path.endswith(".ckpt")), None
    )
    if path is None:
        raise UserError(
            f"run_id={run_id} ({run.info.run_name}, {run.info.status}) has no checkpoint artifact "
            f"under {CKPT_DIR}/: it was a fast_dev_run or ended before its first validation. "
            "Pick a finished training run, or evaluate a local file with ckpt_path=<file.ckpt>."
        )
    return Path(client.download_artifacts(run_id, path, str(dst)))


@contextlib.contextmanager
def evaluation_run(run_id: str, logger_cfg: Mapping[str, Any],
                   dst: str | os.PathLike) -> Iterator[EvaluationRun]:
    """For ``evaluate.py run_id=<id>``: the run's checkpoint and a new run linked to it.

    The report goes into a new run (same experiment, nested under ``run_id`` via
    ``mlflow.parentRunId``, tagged ``mnist_mlp.evaluates=<id>``), so the training run keeps exactly
    what it recorded (``evaluation.evaluate_run`` is the caller).
    """
    uri = logger_cfg["tracking_uri"]
    client, _ = open_store(uri, logger_cfg["experiment_name"], logger_cfg.get("artifact_location"))
    ckpt = run_checkpoint(client, run_id, dst, uri)
    source = client.get_run(run_id)
    tags = {ROLE_TAG: "evaluate", EVALUATES_TAG: run_id, PARENT_TAG: run_id,
            RUN_NAME_TAG: f"evaluate {source.info.run_name}", **git_tags()}
    run = client.create_run(source.info.experiment_id, tags=tags)
    client.log_param(run.info.run_id, "source_checkpoint", f"runs:/{run_id}/{CKPT_DIR}/{ckpt.name}")
    ev = EvaluationRun(client, run.info.run_id, ckpt)
    try:
        yield ev
    except (KeyboardInterrupt, SystemExit):
        client.set_terminated(ev.run_id, "KILLED")
        raise
    except BaseException:
        client.set_terminated(ev.run_id, "FAILED")
        raise
    client.set_terminated(ev.run_id, "FINISHED")
