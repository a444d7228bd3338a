"""One training run from a composed config: data, module, trainer, fit, test, track.

``train.py`` only hands Hydra's config here, so tests and benchmarks drive the same code.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from mnist_mlp import console, ddp, faults, report, tracking, validation
from mnist_mlp.errors import UserError
from mnist_mlp.report import history
from mnist_mlp.slurm import requeue
from mnist_mlp.speed import PhaseClock, apply_torch_settings

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer]:
    """DataModule, LightningModule and Trainer, each from its ``_target_`` config."""
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    if not cfg.trainer.get("enable_progress_bar", True):  # else Lightning refuses the configured bar
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if not cfg.trainer.get("enable_model_summary", True):  # else the configured one still prints
        callbacks = [c for c in callbacks if not isinstance(c, ModelSummary)]
    # A configured summary callback is the summary: Lightning's flag would only add a second
    # (and say it skipped it).
    own_summary = any(isinstance(c, ModelSummary) for c in callbacks)
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger,
                          **({"enable_model_summary": False} if own_summary else {}))
    if logger and trainer.fast_dev_run:  # Lightning swaps in a dummy logger: track smoke runs too
        trainer.loggers = [logger]
    return datamodule, model, trainer


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit and test; returns the test metrics and the optimised metric, as floats."""
    clock = PhaseClock()
    console.quiet_libraries()
    report.check_digits(cfg.get("report_digits", 4))  # a typo must not cost a training run
    report.Settings.from_config(cfg.get("report"))
    apply_torch_settings(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    clock.mark("build")
    datamodule.prepare_data()  # a bad or missing MNIST stops here, before any run is recorded
    clock.mark("data")
    # The MLflow run: store checked, params and tags logged; closed FINISHED, FAILED or KILLED.
    with tracking.tracked_run(cfg, trainer, datamodule) as tracked:
        clock.mark("tracking_start")
        results = fit_and_test(cfg, datamodule, model, trainer, clock)
        tracked.log_outputs(cfg.get("report_dir"))
        clock.mark("tracking_outputs")
        log.info("Time: %s", clock.summary())
        tracked.log_timings(clock.seconds)
    return results


def fit_and_test(cfg: DictConfig, datamodule: Any, model: Any, trainer: L.Trainer,
                 clock: PhaseClock) -> dict[str, float]:
    """Fit, then test the configured checkpoint; returns fit and test metrics as floats."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    clock.mark("fit")
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test_and_report(cfg, datamodule, model, trainer)
    clock.mark("test_and_report")
    results = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    log.info("Test loss %.4f, accuracy %.4f", results["test/loss"], results["test/acc"])
    if trainer.is_global_zero:
        print(f"Test set: average loss {results['test/loss']:.4f}, accuracy {results['test/acc']:.4f}")
    return results


def test_and_report(cfg: DictConfig, datamodule: Any, model: Any, trainer: L.Trainer) -> None:
    """Test the configured weights (``test_ckpt``) and write the report files into ``report_dir``."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    # "last" = the weights in memory; "best" by path, as the last-epoch checkpoint is a second one
    test_ckpt = best if cfg.get("test_ckpt", "best") == "best" and best else None
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True, verbose=False)
    if trainer.is_global_zero:  # every rank holds the same synced results; one writes
        report.write_report(cfg.report_dir, model.test_results, str(model.net),
                            report.train_hyperparameters(cfg), cfg.get("report_digits", 4),
                            images=datamodule.test_images(), history=history.from_trainer(trainer),
                            settings=report.Settings.from_config(cfg.get("report")))


def run_cli(cfg: DictConfig) -> float | None:
    """``run`` for the command line: user errors become one paragraph on stderr and exit 2."""
    try:
        cfg = requeue.resume_if_requeued(cfg)  # a requeued Slurm job goes on from its last epoch
        validation.check(cfg)  # before any data is read or any MLflow run is created
        results = run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except SIGTERMException:  # Lightning saved what on_exception callbacks save, then raised
        # Other DDP ranks exit 0: Lightning SIGKILLs rank 0 within seconds of a child's non-zero
        # exit, which could cut rank 0 off before it records the run as KILLED.
        sys.exit(faults.SIGTERM_EXIT if ddp.is_rank_zero() else 0)
    except KeyboardInterrupt:  # Ctrl-C outside fit (Lightning handles it inside, exit 1)
        print("Interrupted (Ctrl-C).", file=sys.stderr)
        sys.exit(130)
    return results.get(cfg.optimized_metric)
