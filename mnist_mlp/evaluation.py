"""Testing a saved checkpoint: the same test set, metrics and report files as a training run.

``evaluate(ckpt_path, cfg)`` is the core (a caller that first fetches a checkpoint, e.g. from an
MLflow run, calls it with the local path); ``python evaluate.py ckpt_path=PATH`` runs it.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_mlp import checkpoint, report
from mnist_mlp.errors import UserError


def evaluate(ckpt_path: str, cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's model on ``cfg.data``'s test set, write the report, return metrics."""
    digits = report.check_digits(cfg.get("report_digits", 4))
    allowed = cfg.get("allowed_targets") or checkpoint.DEFAULT_ALLOWED
    module, ckpt = checkpoint.load_module(ckpt_path, list(allowed))
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    trainer.test(module, datamodule=datamodule, verbose=False)
    if trainer.is_global_zero:
        report.write_report(cfg.report_dir, module.test_results, str(module.net),
                            checkpoint_hyperparameters(ckpt_path, ckpt), digits)
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


def evaluate_cli(cfg: DictConfig) -> float:
    """``evaluate`` for the command line: user errors become one paragraph and exit status 2."""
    try:
        if OmegaConf.is_missing(cfg, "ckpt_path"):
            raise UserError("No checkpoint given: run `python evaluate.py ckpt_path=PATH.ckpt`.")
        OmegaConf.resolve(cfg)
        results = evaluate(cfg.ckpt_path, cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"Test set: average loss {results['test/loss']:.4f}, "
          f"accuracy {results['test/acc']:.4f}; report in {cfg.report_dir}")
    return results["test/acc"]
