"""One training run from a composed config: data, module, trainer, fit, test, report, track.

``train.py`` hands Hydra's config to ``mnist_mlp.cli.train``, which calls ``run``; tests and
benchmarks drive the same code in-process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from mnist_mlp import config, console, report
from mnist_mlp.report import history
from mnist_mlp.speed import PhaseClock, apply_torch_settings
from mnist_mlp.tracking.run import tracked_run

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer]:
    """DataModule, LightningModule and Trainer, each from its ``_target_`` config."""
    datamodule = config.build(cfg.data, "data", _convert_="all")
    model = config.build(cfg.model, "model", _convert_="all")
    callbacks = [config.build(c, f"callbacks.{name}") for name, c in cfg.get("callbacks", {}).items()
                 if c is not None]
    callbacks, flags = console.display_callbacks(callbacks, cfg.trainer)
    logger = config.build(cfg.logger, "logger") if cfg.get("logger") else False
    trainer = config.build(cfg.trainer, "trainer", callbacks=callbacks, logger=logger, **flags)
    if logger and trainer.fast_dev_run:  # Lightning swaps in a dummy logger: track smoke runs too
        trainer.loggers = [logger]
    return datamodule, model, trainer


@dataclass(frozen=True)
class Trained:
    """What a training run leaves: its metrics, its report folder and its MLflow run (if tracked)."""

    results: dict[str, float]
    report_dir: Path
    tracking_uri: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit and test; returns the fit and test metrics as floats."""
    return train(cfg).results


def train(cfg: DictConfig) -> Trained:
    """Fit and test; the metrics, and where the report and the MLflow run are (``cli.train``)."""
    clock = PhaseClock()
    console.quiet_libraries()
    settings = config.build(cfg.report, "report")  # a typo there must not cost a training run
    apply_torch_settings(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    clock.mark("build")
    datamodule.prepare_data()  # a bad or missing MNIST stops here, before any run is recorded
    clock.mark("data")
    # The MLflow run: store checked, params and tags logged; closed FINISHED, FAILED or KILLED.
    with tracked_run(cfg, trainer, datamodule) as tracked:
        clock.mark("tracking_start")
        results = fit_and_test(cfg, datamodule, model, trainer, settings, clock)
        tracked.log_outputs(settings.dir)
        clock.mark("tracking_outputs")
        log.info("Time: %s", clock.summary())
        tracked.log_timings(clock.seconds)
    return Trained(results, Path(settings.dir), cfg.logger.tracking_uri if tracked.run_id else None,
                   tracked.experiment_id, tracked.run_id)


def fit_and_test(cfg: DictConfig, datamodule: Any, model: Any, trainer: L.Trainer,
                 settings: report.Settings, clock: PhaseClock) -> dict[str, float]:
    """Fit, then test the configured checkpoint; returns fit and test metrics as floats."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    clock.mark("fit")
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test_and_report(cfg, datamodule, model, trainer, settings)
    clock.mark("test_and_report")
    results = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    results.pop("step", None)  # the MLflow step the module logs with its metrics (module)
    return results


def test_and_report(cfg: DictConfig, datamodule: Any, model: Any, trainer: L.Trainer,
                    settings: report.Settings) -> None:
    """Test the configured weights (``test_ckpt``) and write the report files into ``report.dir``."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    # "last" = the weights in memory; "best" by path, as the last-epoch checkpoint is a second one
    test_ckpt = best if cfg.get("test_ckpt", "best") == "best" and best else None
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True, verbose=False)
    if trainer.is_global_zero:  # every rank holds the same synced results; one writes
        report.write_report(settings, model.test_results, str(model.net),
                            report.train_hyperparameters(cfg), images=datamodule.test_images(),
                            history=history.from_trainer(trainer))
