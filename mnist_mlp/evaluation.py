"""Testing a saved checkpoint: the same test set, metrics and report files as a training run.

``evaluate(ckpt_path, cfg)`` is the core (a caller that first fetches a checkpoint, e.g. from an
MLflow run, calls it with the local path); ``python evaluate.py ckpt_path=PATH`` runs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_mlp import checkpoint, console, report, tracking
from mnist_mlp.errors import UserError, exit_on_user_error
from mnist_mlp.report import history


def evaluate(ckpt_path: str, cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's model on ``cfg.data``'s test set, write the report, return metrics."""
    digits = report.check_digits(cfg.get("report_digits", 4))
    allowed = cfg.get("allowed_targets") or checkpoint.DEFAULT_ALLOWED
    module, ckpt = checkpoint.load_module(ckpt_path, list(allowed))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    # tqdm's bar on a terminal only, as in train.py (a file or CI log gets no bar lines)
    callbacks, flags = console.display_callbacks([console.progress_bar()], cfg.trainer)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks, enable_checkpointing=False,
                          **flags)
    trainer.test(module, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        report.write_report(cfg.report_dir, module.test_results, str(module.net),
                            checkpoint_hyperparameters(ckpt_path, ckpt), digits,
                            images=datamodule.test_images(), history=history.from_checkpoint(ckpt),
                            settings=report.Settings.from_config(cfg.get("report")))
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


def evaluate_run(cfg: DictConfig) -> dict[str, float]:
    """Evaluate a tracked run's best checkpoint; the report goes to a new run nested under it.

    A new run rather than the original one: the training run stays exactly as it was recorded.
    """
    download_dir = Path(cfg.report_dir).parent / "checkpoint"
    with tracking.evaluation_run(str(cfg.run_id), cfg.logger, download_dir) as ev:
        results = evaluate(str(ev.ckpt_path), cfg)
        ev.log_report(cfg.report_dir, results)
    print(f"Recorded in MLflow run {ev.run_id} (nested under {cfg.run_id}).")
    return results


def evaluate_cli(cfg: DictConfig) -> float:
    """``evaluate`` for the command line: user errors become one paragraph and exit status 2."""
    console.quiet_libraries()
    with exit_on_user_error():
        if bool(cfg.get("ckpt_path")) == bool(cfg.get("run_id")):
            raise UserError(
                "Give exactly one of ckpt_path and run_id: `python evaluate.py ckpt_path=PATH.ckpt` "
                "or `python evaluate.py run_id=<MLflow run id>`."
            )
        OmegaConf.resolve(cfg)
        results = evaluate_run(cfg) if cfg.run_id else evaluate(cfg.ckpt_path, cfg)
    print(f"Test set: average loss {results['test/loss']:.4f}, "
          f"accuracy {results['test/acc']:.4f}; report in {cfg.report_dir}")
    return results["test/acc"]
