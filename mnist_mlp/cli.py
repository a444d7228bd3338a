"""What each command does at the command line: checks first, one paragraph for a user error, and
a short summary at the end (the headline numbers, where the report is, the MLflow run's page).

``train.py``, ``evaluate.py``, ``compare.py`` and ``serve.py`` are Hydra apps that hand their
config here. The work itself is ``runner.train``, ``evaluation.evaluate``,
``tracking.comparison.compare_runs`` and MLflow's scoring server (``tracking.serving``), which
tests and the benchmark call in-process or start as a process. A sweep's summary is printed by its
Hydra callback (``tracking.sweep.SweepComparison``) once every job has ended.

Torch, Lightning and MLflow are imported inside the commands, not here: ``train.py`` imports this
module in every process, and the parent of a joblib sweep only launches jobs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mnist_mlp import speed
from mnist_mlp.errors import UserError, exit_on_user_error
from mnist_mlp.report.summary import headline_numbers

REPORT_FILE = "report.html"


def train(cfg: DictConfig) -> float | None:
    """``python train.py``: the run's ``optimized_metric`` for Hydra's sweepers."""
    with speed.importing_libraries():
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from mnist_mlp import console, ddp, faults, validation
        from mnist_mlp.runner import train as train_and_test
        from mnist_mlp.slurm import requeue

        if cfg.get("logger"):  # the MLflow logger is built next: its import, here with the rest
            import mlflow  # noqa: F401

    output = _select(cfg, "trainer.default_root_dir") or "the output folder (hydra.run.dir)"
    ckpts = _select(cfg, "callbacks.last_checkpoint.dirpath") or f"{output}/checkpoints"
    try:
        with exit_on_user_error(), faults.disk_full_explained(
                output, "train.py", lambda: faults.kept_checkpoints(ckpts)):
            cfg = requeue.resume_if_requeued(cfg)  # a requeued Slurm job goes on from its last epoch
            validation.check(cfg)  # before any data is read or any MLflow run is created
            trained = train_and_test(cfg)
    except SIGTERMException:  # Lightning saved what on_exception callbacks save, then raised
        # Other DDP ranks exit 0: Lightning SIGKILLs rank 0 within seconds of a child's non-zero
        # exit, which could cut rank 0 off before it records the run as KILLED.
        sys.exit(faults.SIGTERM_EXIT if ddp.is_rank_zero() else 0)
    except KeyboardInterrupt:  # Ctrl-C outside fit (Lightning handles it inside, exit 1)
        print("Interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(130)
    if ddp.is_rank_zero():  # every DDP rank runs this; one speaks
        console.summary([*_numbers(trained.results), *_report(trained.report_dir),
                         _mlflow(trained.tracking_uri, trained.experiment_id, trained.run_id)])
    return trained.results.get(cfg.optimized_metric)


def evaluate(cfg: DictConfig) -> float:
    """``python evaluate.py ckpt_path=PATH | run_id=ID``: the test accuracy."""
    with speed.importing_libraries():
        from mnist_mlp import console, faults, validation
        from mnist_mlp.evaluation import evaluate, evaluate_run

    console.quiet_libraries()
    with exit_on_user_error(), faults.disk_full_explained(
            _select(cfg, "report.dir") or "the report folder", "evaluate.py"):
        if bool(cfg.get("ckpt_path")) == bool(cfg.get("run_id")):
            raise UserError(
                "Give exactly one of ckpt_path and run_id: `python evaluate.py ckpt_path=PATH.ckpt` "
                "or `python evaluate.py run_id=<MLflow run id>`."
            )
        if cfg.evaluate.mlflow_evaluator and not cfg.run_id:
            raise UserError(
                "evaluate.mlflow_evaluator=true scores the MLflow model that a training run logged, "
                "and ckpt_path has none: give run_id=<training run id> instead, or leave "
                "evaluate.mlflow_evaluator=false to test the checkpoint file."
            )
        validation.resolve(cfg)
        if cfg.run_id:
            results, recorded = evaluate_run(cfg)
            where = _mlflow(cfg.logger.tracking_uri, recorded.experiment_id, recorded.run_id,
                            f" (nested under the evaluated run {cfg.run_id})")
        else:
            results = evaluate(cfg.ckpt_path, cfg)
            where = ("MLflow", "not recorded (evaluate.py run_id=<id> records an evaluation of a "
                               "tracked run)")
    console.summary([*_numbers(results), *_report(Path(str(cfg.report.dir))), where])
    return results["test/acc"]


def compare(cfg: DictConfig) -> None:
    """``python compare.py [runs=...]``: the comparison files, logged to MLflow."""
    from mnist_mlp import console, faults, validation
    from mnist_mlp.tracking import comparison

    with exit_on_user_error(), faults.disk_full_explained(
            _select(cfg, "comparison_dir") or "the comparison folder", "compare.py"):
        validation.resolve(cfg)
        run_ids = cfg.get("runs") or []
        run_ids = [run_ids] if isinstance(run_ids, str) else [str(r) for r in run_ids]
        client, experiment_id = comparison.store(cfg.logger)
        compared = comparison.compare_runs(client, experiment_id, run_ids, cfg.comparison_dir,
                                           cfg.report.digits)
    console.summary(compared.summary(cfg.logger.tracking_uri, experiment_id))


def refuse_null_groups(args: list[str], conf: Path) -> None:
    """``group=null`` on the command line (``logger=null``, the way to drop a logger in other
    projects) gets one paragraph that says Hydra's way, ``'~group'``, before anything is imported
    or recorded: Hydra 1.3 itself stops there with a traceback from its defaults list."""
    with exit_on_user_error():
        for arg in args:
            key, sep, value = arg.lstrip("+").partition("=")
            group = key.split("@")[0]
            if (sep and value.strip().lower() == "null" and not key.startswith("~")
                    and ((conf / group).is_dir() or group.startswith("hydra/"))):
                raise UserError(
                    f"{arg}: a config group is removed with '~{group}', not set to null (Hydra "
                    f"refuses {group}=null); run the command again with '~{group}' instead of "
                    f"{arg} (quoted, or the shell reads ~ as your home folder). Nothing was run "
                    "or recorded.")


def _select(cfg: DictConfig, key: str) -> str | None:
    """``cfg``'s value at ``key``, or None where it is missing or does not resolve (yet)."""
    value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return None if value is None else str(value)


def _numbers(results: dict[str, float]) -> list[tuple[str, str]]:
    return [("Test set", headline_numbers(results))] if "test/acc" in results else []


def _report(folder: Path) -> list[tuple[str, str]]:
    report = folder / REPORT_FILE
    return [("Report", str(report))] if report.is_file() else []


def _mlflow(tracking_uri: str | None, experiment_id: str | None, run_id: str | None,
            note: str = "") -> tuple[str, str]:
    from mnist_mlp.tracking import ui

    if not (tracking_uri and experiment_id and run_id):
        return "MLflow", "not recorded (the logger group was removed: '~logger')"
    return "MLflow run", ui.address(tracking_uri, experiment_id, run_id) + note


def serve(cfg: DictConfig) -> None:
    """``python serve.py model_uri=URI``: this process becomes MLflow's scoring server for the model."""
    from mnist_mlp import console, validation
    from mnist_mlp.tracking import serving

    console.quiet_libraries()
    with exit_on_user_error():
        validation.resolve(cfg)
        command, env = serving.prepare(cfg)
    url = f"http://{cfg.host}:{cfg.port}"
    workers = f"{cfg.workers} worker" + ("s" if int(cfg.workers) > 1 else "")
    print(f"Starting MLflow's scoring server for {cfg.model_uri} of {cfg.logger.tracking_uri} at "
          f"{url} ({workers}). Once GET {url}/ping answers, POST images to {url}/invocations "
          "(docs/serving.md). Ctrl-C stops it.", flush=True)
    if int(cfg.workers) > 1:
        print("note: with workers > 1, uvicorn leaves Nagle's algorithm on (uvicorn issue 3149): "
              "each request on a kept-alive connection waits ~40 ms for a delayed ACK; clients "
              "that open a connection per request do not (docs/serving.md).", file=sys.stderr,
              flush=True)
    os.execve(command[0], command, env)
