"""What a command prints around its work: the libraries' noise removed, and the ``summary`` it
ends with (what it found, where its files and MLflow run are).

No Lightning here (its progress display is ``mnist_mlp.progress``): a sweep's parent process prints
the sweep's summary and imports no torch for it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

_TIP = "💡 Tip:"  # Lightning's advertisements for its cloud products (litlogger, litmodels)


def _no_tips(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_TIP)


def quiet_libraries() -> None:
    """Remove messages that tell a user of this project nothing; idempotent.

    * Lightning's ``💡 Tip: ... litlogger`` advertisement, logged by every ``Trainer``;
    * Lightning's hint to prefix the command with ``srun`` wherever Slurm is installed;
    * torch's FutureWarning about ``LeafSpec`` raised inside Lightning's own code (not ours to fix),
      and MLflow's advice to type-hint the served model's ``predict`` (it has a signature);
    * Lightning's messages twice (``_lightning_messages_once``);
    * MLflow's artifact download bars (``evaluate.py run_id=...``: 25 redraws on one line) and the
      system-metrics monitor's messages.
    """
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _no_tips not in logger.filters:
            logger.addFilter(_no_tips)
    _lightning_messages_once()
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Lightning's hint to start train.py with srun wherever Slurm is installed: this project's
    # Slurm jobs run under srun through hydra/launcher=submitit_slurm (mnist_mlp/slurm); a run
    # started outside Slurm is meant to run there.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # MLflow's advice to type-hint a PythonModel's predict: the served model has a signature.
    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # The monitor's start/stop chatter, and its warning when the tracking server goes away (urllib3's
    # retry text; tracking.offline reports the outage itself, and the monitor stops there).
    logging.getLogger("mlflow.system_metrics").setLevel(logging.ERROR)


def summary(items: Sequence[tuple[str, str]], stream: Any = None) -> None:
    """What a command ends with: one ``label: text`` line per item (``Report: <path>``).

    One line each, also off a terminal, so a CI log or ``grep`` finds each item; on a terminal the
    labels are aligned and bold, after a blank line that sets the block apart from the progress.
    """
    stream = stream or sys.stdout
    tty = stream.isatty()
    width = max((len(label) for label, _ in items), default=0) + 1
    lines = []
    for label, text in items:
        head = f"{label}:".ljust(width) if tty else f"{label}:"
        lines.append(f"\033[1m{head}\033[0m {text}" if tty else f"{head} {text}")
    print(("\n" if tty else "") + "\n".join(lines), file=stream, flush=True)


def _lightning_messages_once() -> None:
    """Lightning's messages ("Seed set to 1", "`Trainer.fit` stopped") printed once, plainly.

    Imported before logging is configured, ``lightning.pytorch`` and ``lightning.fabric`` print
    through handlers of their own and stop there; imported later (the commands import it inside,
    after Hydra has set up the root logger), they add none, and each message reaches both the
    ``lightning`` package's ``INFO:`` handler and Hydra's root handler. This gives them what an
    early import would have.
    """
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if logger.propagate and not logger.handlers:
            logger.addHandler(logging.StreamHandler())
            logger.propagate = False
