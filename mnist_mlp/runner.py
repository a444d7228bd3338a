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

from mnist_mlp import checkpoint, config, console, ddp, progress, report
from mnist_mlp.report import background, history
from mnist_mlp.speed import PhaseClock, apply_torch_settings
from mnist_mlp.tracking.run import TrackedRun, provenance, tracked_run

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer]:
    """DataModule, LightningModule and Trainer, each from its ``_target_`` config."""
    datamodule = config.build(cfg.data, "data", _convert_="all")
    model = config.build(cfg.model, "model", _convert_="all")
    callbacks = [config.build(c, f"callbacks.{name}") for name, c in cfg.get("callbacks", {}).items()
                 if c is not None]
    callbacks, flags = progress.display_callbacks(callbacks, cfg.trainer)
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
    if settings.background and ddp.is_rank_zero():
        background.start()  # the report's worker imports matplotlib while this process trains
    clock.mark("build")
    datamodule.prepare_data()  # a bad or missing MNIST stops here, before any run is recorded
    clock.mark("data")
    # The MLflow run: store checked, params and tags logged; closed FINISHED, FAILED or KILLED.
    with tracked_run(cfg, trainer, datamodule) as tracked:
        clock.mark("tracking_start")
        results, written = fit_and_test(cfg, datamodule, model, trainer, settings, clock, tracked)
        tracked.log_outputs(settings.dir, written.wait)  # checkpoint and model while it is drawn
        written.wait()  # untracked (no logger): log_outputs returned at once
        clock.mark("tracking_outputs")
        log.info("Time: %s", clock.summary())
        tracked.log_timings(clock.metrics())
    return Trained(results, Path(settings.dir), cfg.logger.tracking_uri if tracked.run_id else None,
                   tracked.experiment_id, tracked.run_id)


def fit_and_test(cfg: DictConfig, datamodule: Any, model: Any, trainer: L.Trainer,
                 settings: report.Settings, clock: PhaseClock, tracked: TrackedRun | None = None
                 ) -> tuple[dict[str, float], background.PendingReport]:
    """Fit, then test the configured checkpoint; returns fit and test metrics as floats, and the
    report being written (``wait`` for its files)."""
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    clock.mark("fit")
    datamodule.release("train", "val")  # testing and the report need the test split alone
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    written = test_and_report(cfg, datamodule, model, trainer, settings, tracked)
    clock.mark("test_and_report")
    results = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    results.pop("step", None)  # the MLflow step the module logs with its metrics (module)
    return results, written


def test_and_report(cfg: DictConfig, datamodule: Any, model: Any, trainer: L.Trainer,
                    settings: report.Settings, tracked: TrackedRun | None = None
                    ) -> background.PendingReport:
    """Test the configured weights (``test_ckpt``) and start writing the report files into
    ``report.dir``, headed by ``tracked``'s run (none: not tracked); ``wait`` for them."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    # "last" = the weights in memory; "best" by path, as the last-epoch checkpoint is a second one
    test_ckpt = best if cfg.get("test_ckpt", "best") == "best" and best else None
    tested = tested_weights(cfg, trainer, test_ckpt)
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True, verbose=False)
    if not trainer.is_global_zero:  # every rank holds the same synced results; one writes
        return background.PendingReport(dict)
    where = tracked.provenance(tested) if tracked else provenance(datamodule, tested)
    return background.write(settings, model.test_results, str(model.net),
                            report.train_hyperparameters(cfg), images=datamodule.test_images().numpy(),
                            history=history.from_trainer(trainer), provenance=where)


def tested_weights(cfg: DictConfig, trainer: L.Trainer, ckpt_path: str | None) -> report.TestedWeights:
    """Which weights ``test_and_report`` tests, and why: the best checkpoint (its epoch read from
    the file, its score from the callback that chose it) or the weights in memory."""
    epochs = trainer.current_epoch  # after fit: the epochs it finished
    if ckpt_path is None:
        return report.TestedWeights(cfg.get("test_ckpt", "best"), epochs_trained=epochs,
                                    epochs_run=epochs)
    callback = trainer.checkpoint_callback
    score = getattr(callback, "best_model_score", None)
    return report.TestedWeights(
        "best", ckpt_path, epochs_trained=int(checkpoint.read(ckpt_path)["epoch"]) + 1,
        epochs_run=epochs, monitor=getattr(callback, "monitor", None),
        score=None if score is None else float(score))
