"""Testing a saved checkpoint: the same test set, metrics and report files as a training run.

``evaluate(ckpt_path, cfg)`` is the core (a caller that first fetches a checkpoint, e.g. from an
MLflow run, calls it with the local path); ``evaluate_run`` does that for a tracked run and records
the report in a new MLflow run; ``python evaluate.py`` runs them (``mnist_mlp.cli.evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnist_mlp import checkpoint, config, console, report
from mnist_mlp.report import history
from mnist_mlp.tracking.evaluation import EvaluationRun, evaluation_run


def evaluate(ckpt_path: str, cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's model on ``cfg.data``'s test set, write the report, return metrics."""
    settings = config.build(cfg.report, "report")
    allowed = cfg.get("allowed_targets") or checkpoint.DEFAULT_ALLOWED
    module, ckpt = checkpoint.load_module(ckpt_path, list(allowed))
    datamodule = config.build(cfg.data, "data", _convert_="all")
    datamodule.prepare_data()
    # tqdm's bar on a terminal only, as in train.py (a file or CI log gets no bar lines)
    callbacks, flags = console.display_callbacks([console.progress_bar()], cfg.trainer)
    trainer = config.build(cfg.trainer, "trainer", logger=False, callbacks=callbacks,
                           enable_checkpointing=False, **flags)
    trainer.test(module, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        report.write_report(settings, module.test_results, str(module.net),
                            checkpoint_hyperparameters(ckpt_path, ckpt),
                            images=datamodule.test_images(), history=history.from_checkpoint(ckpt))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def checkpoint_hyperparameters(ckpt_path: str, ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint records of its training (batch size and epoch count are not in it)."""
    hp = ckpt["hyper_parameters"]
    return {
        "checkpoint": str(ckpt_path),
        "learning_rate": hp.get("lr"),
        "optimizer": report.target_text(hp.get("optimizer")),
        "scheduler": report.target_text(hp.get("scheduler")),
        "epochs trained": ckpt.get("epoch", -1) + 1,
        "global_step": ckpt.get("global_step"),
    }


def evaluate_run(cfg: DictConfig) -> tuple[dict[str, float], EvaluationRun]:
    """Evaluate a tracked run's best checkpoint; the report goes to a new run nested under it
    (returned with the metrics).

    A new run rather than the original one: the training run stays exactly as it was recorded.
    """
    report_dir = str(cfg.report.dir)
    with evaluation_run(str(cfg.run_id), cfg.logger, Path(report_dir).parent / "checkpoint") as ev:
        results = evaluate(str(ev.ckpt_path), cfg)
        ev.log_report(report_dir, results)
    return results, ev
