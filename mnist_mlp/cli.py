"""What each command does at the command line: checks first, one paragraph for a user error.

``train.py``, ``evaluate.py``, ``compare.py`` and ``serve.py`` are Hydra apps that hand their
config here. The work itself is ``runner.run``, ``evaluation.evaluate``,
``tracking.comparison.compare_runs`` and MLflow's scoring server (``tracking.serving``), which
tests and the benchmark call in-process or start as a process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from mnist_mlp import console, ddp, faults, validation
from mnist_mlp.errors import UserError, exit_on_user_error


def train(cfg: DictConfig) -> float | None:
    """``python train.py``: the run's ``optimized_metric`` for Hydra's sweepers."""
    from mnist_mlp.runner import run
    from mnist_mlp.slurm import requeue

    try:
        with exit_on_user_error():
            cfg = requeue.resume_if_requeued(cfg)  # a requeued Slurm job goes on from its last epoch
            validation.check(cfg)  # before any data is read or any MLflow run is created
            results = run(cfg)
    except SIGTERMException:  # Lightning saved what on_exception callbacks save, then raised
        # Other DDP ranks exit 0: Lightning SIGKILLs rank 0 within seconds of a child's non-zero
        # exit, which could cut rank 0 off before it records the run as KILLED.
        sys.exit(faults.SIGTERM_EXIT if ddp.is_rank_zero() else 0)
    except KeyboardInterrupt:  # Ctrl-C outside fit (Lightning handles it inside, exit 1)
        print("Interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(130)
    return results.get(cfg.optimized_metric)


def evaluate(cfg: DictConfig) -> float:
    """``python evaluate.py ckpt_path=PATH | run_id=ID``: the test accuracy."""
    from mnist_mlp.evaluation import evaluate, evaluate_run

    console.quiet_libraries()
    with exit_on_user_error():
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
        results = evaluate_run(cfg) if cfg.run_id else evaluate(cfg.ckpt_path, cfg)
    print(f"Test set: average loss {results['test/loss']:.4f}, "
          f"accuracy {results['test/acc']:.4f}; report in {cfg.report.dir}")
    return results["test/acc"]


def compare(cfg: DictConfig) -> None:
    """``python compare.py [runs=...]``: the comparison files, logged to MLflow."""
    from mnist_mlp.tracking import comparison

    with exit_on_user_error():
        validation.resolve(cfg)
        run_ids = cfg.get("runs") or []
        run_ids = [run_ids] if isinstance(run_ids, str) else [str(r) for r in run_ids]
        client, experiment_id = comparison.store(cfg.logger)
        target, files = comparison.compare_runs(client, experiment_id, run_ids, cfg.comparison_dir,
                                                cfg.report.digits)
    print(f"Comparison in {Path(files['comparison.html']).parent}; logged to MLflow run {target} "
          f"(artifacts {comparison.ARTIFACT_DIR}/).")




def serve(cfg: DictConfig) -> None:
    """``python serve.py model_uri=URI``: this process becomes MLflow's scoring server for the model."""
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
