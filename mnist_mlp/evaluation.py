"""Testing a saved checkpoint: the same test set, metrics and report files as a training run.

``evaluate(ckpt_path, cfg)`` is the core (a caller that first fetches a checkpoint, e.g. from an
MLflow run, calls it with the local path); ``evaluate_run`` does that for a tracked run and records
the report in a new MLflow run, with MLflow's own evaluation of the run's logged model when
``evaluate.mlflow_evaluator`` is true; ``python evaluate.py`` runs them (``mnist_mlp.cli.evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_mlp import checkpoint, config, progress, report
from mnist_mlp.report import history
from mnist_mlp.tracking.evaluation import EvaluationRun, evaluation_run
from mnist_mlp.tracking.run import provenance


def evaluate(ckpt_path: str, cfg: DictConfig, run: EvaluationRun | None = None) -> dict[str, float]:
    """Test the checkpoint's model on ``cfg.data``'s test set, write the report, return metrics.

    ``run``: the MLflow run recording this evaluation (``evaluate_run``); none: not tracked.
    """
    return _test(ckpt_path, cfg, run)[0]


def _test(ckpt_path: str, cfg: DictConfig, run: EvaluationRun | None = None
          ) -> tuple[dict[str, float], Any, Any]:
    """``evaluate``'s metrics, and the data module and module it tested."""
    settings = config.build(cfg.report, "report")
    allowed = cfg.get("allowed_targets") or checkpoint.DEFAULT_ALLOWED
    module, ckpt = checkpoint.load_module(ckpt_path, list(allowed))
    datamodule = config.build(cfg.data, "data", _convert_="all")
    datamodule.prepare_data()
    # tqdm's bar on a terminal only, as in train.py (a file or CI log gets no bar lines)
    callbacks, flags = progress.display_callbacks([progress.progress_bar()], cfg.trainer)
    trainer = config.build(cfg.trainer, "trainer", logger=False, callbacks=callbacks,
                           enable_checkpointing=False, **flags)
    trainer.test(module, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        tested = checkpoint_weights(ckpt_path, ckpt, run.source_run_id if run else None)
        where = (provenance(datamodule, tested, run.run_id, run.url, run.store) if run
                 else provenance(datamodule, tested))
        report.write_report(settings, module.test_results, str(module.net),
                            checkpoint_hyperparameters(ckpt),
                            images=datamodule.test_images(), history=history.from_checkpoint(ckpt),
                            provenance=where)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}, datamodule, module


def checkpoint_hyperparameters(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint records of its training (batch size and epoch count are not in it;
    the file and its epochs head the report, ``checkpoint_weights``)."""
    hp = ckpt["hyper_parameters"]
    return {
        "learning_rate": hp.get("lr"),
        "optimizer": report.target_text(hp.get("optimizer")),
        "scheduler": report.target_text(hp.get("scheduler")),
        "global_step": ckpt.get("global_step"),
    }


def checkpoint_weights(ckpt_path: str, ckpt: dict[str, Any],
                       source_run: str | None = None) -> report.TestedWeights:
    """The checkpoint tested, its epochs, and, where the ``ModelCheckpoint`` that saved it counted
    it as its best, the metric and value that made it so (that callback's ``state_dict`` in the
    file's ``callbacks``)."""
    monitor = score = None
    for state in (ckpt.get("callbacks") or {}).values():
        best = state.get("best_model_path") if isinstance(state, dict) else None
        if best and Path(best).name == Path(ckpt_path).name and state.get("monitor"):
            monitor, value = state["monitor"], state.get("best_model_score")
            score = None if value is None else float(value)
    epoch = ckpt.get("epoch")
    return report.TestedWeights("given", str(ckpt_path),
                                epochs_trained=None if epoch is None else int(epoch) + 1,
                                monitor=monitor, score=score, source_run=source_run)


def evaluate_run(cfg: DictConfig) -> tuple[dict[str, float], EvaluationRun]:
    """Evaluate a tracked run's best checkpoint; the report goes to a new run nested under it
    (returned with the metrics).

    A new run rather than the original one: the training run stays exactly as it was recorded.
    MLflow's evaluator scores the run's logged model on the same test set, in the same new run.
    """
    from mnist_mlp.tracking.model import evaluation_frame

    report_dir = str(cfg.report.dir)
    mlflow_evaluator = bool(cfg.evaluate.mlflow_evaluator)
    with evaluation_run(str(cfg.run_id), cfg.logger, Path(report_dir).parent / "checkpoint",
                        needs_model=mlflow_evaluator) as ev:
        results, datamodule, module = _test(str(ev.ckpt_path), cfg, ev)
        ev.log_report(report_dir, results)
        if mlflow_evaluator:
            settings = OmegaConf.to_container(cfg.evaluate.evaluator_config, resolve=True)
            scores = ev.mlflow_evaluate(evaluation_frame(datamodule), settings,
                                        module.net.who.out_features)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(scores.items()) if k.endswith("_score"))
            print(f"MLflow's evaluator ({settings.get('average', 'weighted')} averages): {shown}")
    return results, ev
