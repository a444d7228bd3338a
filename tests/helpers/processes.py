"""Helpers of the fault tests: train.py in a subprocess, and configs composed in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, data_overrides, store_overrides
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import mnist_mlp  # noqa: F401  (resolvers)


def run_train(*overrides: str, cwd: Path = ROOT, env: dict | None = None,
              timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides], cwd=cwd, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg", **(env or {})},
    )


def quiet() -> list[str]:
    """Overrides for a small, quiet CPU run."""
    return ["~callbacks.progress_bar", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "trainer.accelerator=cpu"]


def cli_overrides(data_dir: Path, md5s: dict, tmp_path: Path) -> list[str]:
    return [*data_overrides(data_dir, md5s), *store_overrides(tmp_path), *quiet()]


def compose_job(*overrides: str, out: Path | None = None) -> DictConfig:
    """The job config train.py would get (no ``hydra`` key), outputs under ``out``."""
    where = [] if out is None else [f"callbacks.model_checkpoint.dirpath={out}/checkpoints",
                                    f"trainer.default_root_dir={out}", f"report.dir={out}/report"]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*where, *overrides], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def assert_one_paragraph(result: subprocess.CompletedProcess, *needles: str, rc: int = 2) -> None:
    """Exit code, no traceback, and the ``error:`` paragraph holding every needle."""
    assert result.returncode == rc, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    error = result.stderr[result.stderr.index("error: "):]
    assert "\n" not in error.strip(), error
    for needle in needles:
        assert needle in error, error
