"""Fixtures of the whole suite, markers by folder, and a repository that the tests leave as it was.

Layout (tests/README.md): ``unit/`` runs in-process, ``integration/`` starts the project's
commands as processes, ``services/`` starts servers. Each test gets the marker of its folder.

Fixtures here: ``synthetic_mnist`` (session: read-only IDX files), ``store`` (a ready SQLite
MLflow store in the test's folder), ``trained_run`` (session: one short training run, in-process,
tracked) and ``evaluated_run`` (session: its best checkpoint through ``evaluate.py``'s code).
Helpers are plain functions in ``tests.helpers``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from tests.helpers.configs import ROOT, compose_job, quiet, store_overrides
from tests.helpers.data import N_TEST, N_TRAIN, data_overrides, write_synthetic_mnist
from tests.helpers.runs import runs_in
from tests.helpers.store import new_store
from tests.helpers.trained import TRAINED_EPOCHS, TRAINED_LR, EvaluatedRun, TrainedRun

os.environ.setdefault("MPLBACKEND", "Agg")
LAYERS = ("unit", "integration", "services")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The marker of each test's folder, and the order the tests run in.

    In one process: unit tests first (the quickest to fail), then the rest. Under pytest-xdist
    (``make test`` runs two workers, each taking a whole file at a time, in this order): the slow
    files first, servers before processes, and the many short unit files last, so that both
    workers end at about the same time instead of one finishing a long file alone.
    """
    tests = Path(__file__).parent

    def layer(item: pytest.Item) -> int:
        part = item.path.relative_to(tests).parts[0]
        return LAYERS.index(part) if part in LAYERS else len(LAYERS)

    for item in items:
        if layer(item) < len(LAYERS):
            item.add_marker(LAYERS[layer(item)])
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: (item.get_closest_marker("slow") is None, -layer(item)))
    else:
        items.sort(key=layer)


# ------------------------------------------------------------------ the repository stays clean ----


def _untracked() -> set[str] | None:
    """Untracked and ignored files of the checkout, each one (``None`` outside a git checkout)."""
    try:
        done = subprocess.run(["git", "ls-files", "--others", "-z", "--", ".", ":!:.venv", ":!:data"],
                              cwd=ROOT, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode:
        return None
    return {p for p in done.stdout.decode().split("\0")
            if p and not any(part in {"__pycache__", ".pytest_cache", ".ruff_cache"}
                             for part in Path(p).parts)}


@pytest.fixture(scope="session", autouse=True)
def repository_left_clean():
    """Fails the session if a test wrote into the repository (``outputs/`` from a run without
    ``hydra.run.dir``, a stray ``mlruns/``): every output belongs in a temporary folder.

    ``data/`` is where the real MNIST lives; the real-MNIST tests may fetch it there.
    """
    before = _untracked()
    yield
    after = _untracked()
    if before is not None and after is not None:
        written = sorted(after - before)
        assert not written, f"tests wrote into the repository {ROOT}: {written}"


@pytest.fixture(autouse=True)
def _no_hydra_config_left():
    """Each test starts without the ``HydraConfig`` an earlier test composed."""
    yield
    HydraConfig.instance().cfg = None


# ------------------------------------------------------------------ data and stores ---------------


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """``(data_dir, md5s)`` of a synthetic MNIST (``N_TRAIN``/``N_TEST`` images) in IDX files.

    Shared by the session: tests only read it. A test that damages files writes its own
    (``tests.helpers.data.write_synthetic_mnist``).
    """
    data_dir = tmp_path_factory.mktemp("mnist")
    return data_dir, write_synthetic_mnist(data_dir, n_train=N_TRAIN, n_test=N_TEST)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def undrawn_figures(monkeypatch):
    """The report's figures built but not rendered: each PNG is the bare signature.

    For tests of the report's numbers and of training, which never look at a picture (rendering is
    most of a report's cost). The pictures are tested where they are drawn: the report's sections
    and mistake grids (tests/unit/test_report_*.py) and every trained run.
    """
    from mnist_mlp.report import figures

    monkeypatch.setattr(figures, "_png", lambda fig, dpi=90: PNG_SIGNATURE)


@pytest.fixture
def store(tmp_path: Path):
    """A ready SQLite store where ``store_overrides(tmp_path)`` points train.py; its client."""
    from mlflow import MlflowClient

    return MlflowClient(new_store(tmp_path))


# ------------------------------------------------------------------ one trained run ---------------


@pytest.fixture(scope="session")
def trained_run(synthetic_mnist, tmp_path_factory) -> TrainedRun:
    """One short training run, in this process as ``python train.py`` runs it (``cli.train``),
    tracked in its own SQLite store, model registered, system metrics sampled.

    Shared by every test that only reads a run's records, report or checkpoints. Its best
    checkpoint is its last epoch's (checked here), so testing either gives the same report.
    """
    from mnist_mlp import cli

    tmp = tmp_path_factory.mktemp("trained")
    data_dir, md5s = synthetic_mnist
    overrides = (f"trainer.max_epochs={TRAINED_EPOCHS}", f"model.lr={TRAINED_LR}",
                 "logger.system_metrics_interval=0.1", "logger.registered_model_name=mnist-mlp-test",
                 *data_overrides(data_dir, md5s), *store_overrides(tmp), *quiet())
    cli.train(compose_job(*overrides))
    client = _client(tmp)
    (run,) = runs_in(client, "mnist-mlp", "train")
    trained = TrainedRun(data_dir, md5s, tmp / "outputs", client, run, overrides)
    assert trained.best_checkpoint.name == f"epoch{TRAINED_EPOCHS:03d}.ckpt", trained.best_checkpoint
    return trained


def _client(tmp: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")


@pytest.fixture(scope="session")
def evaluated_run(trained_run, tmp_path_factory) -> EvaluatedRun:
    """``python evaluate.py ckpt_path=<trained_run's best checkpoint>`` in this process
    (``cli.evaluate``), its console captured as a file or CI log gets it (not a terminal)."""
    from mnist_mlp import cli

    out = tmp_path_factory.mktemp("evaluated")
    cfg = compose_job(f"ckpt_path={trained_run.best_checkpoint}", *trained_run.data, out=out,
                      config="evaluate")
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        cli.evaluate(cfg)
    return EvaluatedRun(out / "report", console.getvalue())


@pytest.fixture
def search(tmp_path, synthetic_mnist):
    """An Optuna search's arguments, store and study storage under ``tmp_path`` (``Search``)."""
    from tests.helpers.search import Search

    return Search(tmp_path, synthetic_mnist)
