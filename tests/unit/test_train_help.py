"""``python train.py --help`` is this project's page: what a run does, the groups and their
options, the keys people change (with today's defaults), examples."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT
from faults_helpers import compose_job
from omegaconf import OmegaConf


def _help() -> str:
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_help_says_what_the_project_does_and_how_to_change_it():
    text = _help()
    assert len(text.splitlines()) < 60  # Hydra's generic page printed the whole config (154 lines)
    assert "powered by Hydra" not in text and "_target_" not in text
    for needle in ("HW9 MNIST MLP", "report.html", "MLflow", "model/optimizer: adam, sgd",
                   "model/scheduler: cosine, none, plateau", "== Examples ==", "python train.py -m",
                   "--hydra-help", "--cfg job"):
        assert needle in text, needle


def test_the_defaults_the_help_quotes_are_the_configs():
    text = _help()
    keys = text.split("== Most used keys", 1)[1].split("== Examples ==", 1)[0]
    cfg = compose_job()
    quoted = re.findall(r"^  ([a-z_.0-9]+)=(\S+)\s", keys, flags=re.M)
    assert len(quoted) >= 8
    for key, value in quoted:
        if key.startswith("hydra."):  # Hydra's own keys are not in the job's config
            continue
        actual = OmegaConf.select(cfg, key, default="<absent>")
        if value.isupper() or value.endswith(".ckpt") or "URI" in value:  # a placeholder
            assert actual != "<absent>", key
            continue
        assert str(actual) == value, key
