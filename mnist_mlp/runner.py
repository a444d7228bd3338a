"""One training run from a composed config: data, module, trainer, fit, test, track.

``train.py`` only hands Hydra's config here, so tests and benchmarks drive the same code.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_mlp import report
from mnist_mlp.errors import UserError
from mnist_mlp.speed import apply_torch_settings

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer]:
    """DataModule, LightningModule and Trainer, each from its ``_target_`` config."""
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    return datamodule, model, trainer


def run(cfg: DictConfig) -> dict[str, float]:
    """Fit and test; returns the test metrics and the optimised metric, as floats."""
    report.check_digits(cfg.get("report_digits", 4))  # a typo must not cost a training run
    apply_torch_settings(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = build(cfg)
    datamodule.prepare_data()  # a bad or missing MNIST stops here, before any run is recorded
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    test_ckpt = cfg.get("test_ckpt", "best")
    if test_ckpt == "best" and not trainer.checkpoint_callback or trainer.fast_dev_run:
        test_ckpt = None
    elif test_ckpt == "last":
        test_ckpt = None
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True, verbose=False)
    if trainer.is_global_zero:  # every rank holds the same synced results; one writes
        report.write_report(cfg.report_dir, model.test_results, str(model.net),
                            report.train_hyperparameters(cfg), cfg.get("report_digits", 4))
    results = {**fit_metrics, **{k: float(v) for k, v in trainer.callback_metrics.items()}}
    log.info("Test loss %.4f, accuracy %.4f", results["test/loss"], results["test/acc"])
    print(f"Test set: average loss {results['test/loss']:.4f}, accuracy {results['test/acc']:.4f}")
    return results


def run_cli(cfg: DictConfig) -> float | None:
    """``run`` for the command line: user errors become one paragraph on stderr and exit 2."""
    try:
        OmegaConf.resolve(cfg)
        results = run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return results.get(cfg.optimized_metric)
