"""Regenerate the README's pictures of the MLflow UI: ``make docs-screenshots``.

Trains two short runs (learning rates 0.05 and 0.1, ``EPOCHS`` epochs each, on the MNIST in
``data/``; single runs, as the table shows a sweep's jobs folded under its parent) into a temporary
store, serves it with ``mlflow ui`` on a free port, and photographs in headless Chromium
(``CHROMIUM``, default ``/usr/bin/chromium``):

* ``docs/runs-table.png``: the address ``make ui`` prints, the experiment's runs table;
* ``docs/run-overview.png``: one run's page: description, datasets, tags, metrics (the
  system-metrics charts stay blank in headless Chromium, so their tab is not photographed).

The project's own store (``mlruns/``) is not touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnist_mlp.tracking.ui import runs_url  # noqa: E402
from tests.helpers.net import free_port, wait_healthy  # noqa: E402  (the tests' loopback helpers)

EPOCHS = 3
LRS = (0.05, 0.1)
# MLflow 3.17 shows a run page in its GenAI layout unless asked for the model-training one.
ML = "?workflowType=machine_learning"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _train(tmp: Path, lr: float) -> None:
    uri = f"sqlite:///{tmp}/mlflow.db"
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"model.lr={lr}", f"trainer.max_epochs={EPOCHS}",
         f"logger.run_name='lr={lr}'",  # else named after every override, the store paths too
         f"logger.tracking_uri={uri}", f"logger.artifact_location={tmp}/artifacts",
         "logger.system_metrics_interval=1", f"hydra.run.dir={tmp}/outputs/lr{lr}"],
        check=True, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"},
    )


@contextlib.contextmanager
def _server(tmp: Path, port: int):
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--host", "127.0.0.1", "--port",
         str(port), "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
         "--default-artifact-root", str(tmp / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _shoot(url: str, png: Path, window: str = "1600,900") -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=15000",
             f"--window-size={window}", "--hide-scrollbars", f"--screenshot={png}", url],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180,
        )
    print(f"{png.relative_to(ROOT)}  {png.stat().st_size // 1024} KB  <- {url}")


def main() -> None:
    from mlflow import MlflowClient

    tmp = Path(tempfile.mkdtemp(prefix="mnist-mlp-docs-"))
    try:
        for lr in LRS:
            _train(tmp, lr)
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        exp = client.get_experiment_by_name("mnist-mlp")
        run = client.search_runs([exp.experiment_id], "tags.`mnist_mlp.role` = 'train'",
                                 order_by=["metrics.`test/acc` DESC"])[0]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        page = f"{base}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}"
        docs = ROOT / "docs"
        with _server(tmp, port):
            _shoot(runs_url(base, exp.experiment_id), docs / "runs-table.png")
            _shoot(page + ML, docs / "run-overview.png", window="1600,1150")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
