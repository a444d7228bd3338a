"""What a report is a report of: the run, the code, the data and the weights that were tested.

Plain values handed in by the caller (``runner``, ``evaluation``), which reads them from the
trainer, the checkpoint, git and the MLflow run; the report only says them, at the top of
``report.md``/``report.html`` and under ``provenance`` in ``summary.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mnist_mlp.paths import default_tracking_uri


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class TestedWeights:
    """Which weights the test set saw, and why.

    Attributes:
        choice: ``best`` or ``last`` (train.py's ``test_ckpt``), or ``given`` (evaluate.py).
        checkpoint: the file tested; None for the weights in memory when training ended.
        epochs_trained: epochs of training behind these weights.
        epochs_run: epochs the training ran (train.py; None where unknown).
        monitor, score: the metric that made the checkpoint the best one, and its value.
        source_run: the MLflow run the checkpoint comes from (``evaluate.py run_id=...``).
    """

    __test__ = False  # not a pytest test class

    choice: str
    checkpoint: str | None = None
    epochs_trained: int | None = None
    epochs_run: int | None = None
    monitor: str | None = None
    score: float | None = None
    source_run: str | None = None


@dataclass(frozen=True)
class Provenance:
    """The report's header.

    Attributes:
        run_id, run_url, store: the MLflow run of this test, its page and its tracking URI;
            None when the run is not tracked (``~logger``, ``evaluate.py ckpt_path=...``).
        date: when the test ran (ISO 8601, local time with its offset).
        git_commit, git_dirty: the code that ran; dirty = tracked files changed since the commit.
        data_md5: the verified MD5 of each MNIST file.
        tested: the weights tested.
    """

    run_id: str | None = None
    run_url: str | None = None
    store: str | None = None
    date: str = field(default_factory=_now)
    git_commit: str | None = None
    git_dirty: bool | None = None
    data_md5: Mapping[str, str] = field(default_factory=dict)
    tested: TestedWeights | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``summary.json``)."""
        return {**dataclasses.asdict(self), "data_md5": dict(self.data_md5)}


def _epochs(n: int | None) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def weights_text(t: TestedWeights) -> str:
    """``epoch017.ckpt, saved after 18 of the 30 epochs: the best by acc/val (0.9852)``, ..."""
    n, m = t.epochs_trained, t.epochs_run
    if n is None:
        after = ""
    elif m is None:
        after = f", saved after {_epochs(n)}"
    elif m == n:
        after = ", saved after its only epoch" if n == 1 else f", saved after the last of the {n} epochs"
    else:
        after = f", saved after {n} of the {m} epochs"
    best = (f": the best by {t.monitor} ({t.score:.4f})"
            if t.monitor and t.score is not None else "")
    if t.checkpoint is None:
        trained = f" after {_epochs(t.epochs_trained)}" if t.epochs_trained is not None else ""
        why = ("test_ckpt=last" if t.choice == "last"
               else "no checkpoint was saved to pick the best from")
        return f"the weights at the end of training{trained} ({why})"
    name = Path(t.checkpoint).name
    if t.source_run:
        return f"{name}, the best checkpoint of MLflow run {t.source_run}{after}{best}"
    how = {"best": " (test_ckpt=best)", "given": " (evaluate.py ckpt_path)"}.get(t.choice, "")
    return f"{name}{after}{best}{how}"


def run_text(p: Provenance) -> str:
    """The run and where to see it; ``not tracked`` without one."""
    if not p.run_id:
        return "not tracked in MLflow ('~logger', or evaluate.py ckpt_path=...)"
    text = f"MLflow run {p.run_id}"
    if p.run_url:
        text += f", {p.run_url}"
    if p.store and urlparse(p.store).scheme not in ("http", "https"):
        serve = ("make ui" if p.store == default_tracking_uri()
                 else f"mlflow ui --backend-store-uri {p.store}")
        text += f" (while `{serve}` serves the store)"
    return text


def fields(p: Provenance) -> list[tuple[str, str]]:
    """The header's named lines."""
    if p.git_commit in (None, "unknown"):
        code = "git commit unknown (not a git checkout, or git missing)"
    else:
        state = {True: "with uncommitted changes (dirty)", False: "clean",
                 None: "dirty state unknown"}[p.git_dirty]
        code = f"git commit {p.git_commit}, {state}"
    out = [("Run", run_text(p)), ("Date", p.date), ("Code", code)]
    if p.data_md5:
        out.append(("Data (verified MD5)", ", ".join(f"{k} {v}" for k, v in p.data_md5.items())))
    if p.tested is not None:
        out.append(("Tested weights", weights_text(p.tested)))
        if p.tested.checkpoint:
            out.append(("Checkpoint file", p.tested.checkpoint))
    return out
