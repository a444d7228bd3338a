"""Regenerate the pictures of the README and the documentation: ``make docs-screenshots``.

Trains two short runs (learning rates 0.05 and 0.1, ``EPOCHS`` epochs each, on the MNIST in
``data/``; single runs, as the table shows a sweep's jobs folded under its parent) into a temporary
store, serves it with ``mlflow ui`` on a free port, and photographs in headless Chromium
(``CHROMIUM``, default ``/usr/bin/chromium``), into ``docs/images/``:

* ``runs-table.png``: the address ``make ui`` prints, the experiment's runs table;
* ``run-overview.png``: one run's page: description, datasets, tags, metrics (the
  system-metrics charts stay blank in headless Chromium, so their tab is not photographed);
* ``report-top.png``: the top of the better run's ``report.html``, down to the confusion matrix,
  scaled down and reduced to a palette so that the README's picture stays small;
* ``roc_curves.png``, ``reliability.png``: two of that run's report figures, as written.

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
IMAGES = ROOT / "docs" / "images"
# The report page's top, title to confusion matrix, at 1100 px wide; then scaled by REPORT_SCALE.
REPORT_WINDOW, REPORT_SCALE = "1100,1905", 0.75
REPORT_FIGURES = ("roc_curves.png", "reliability.png")


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


def _shrink(png: Path) -> None:
    """Scale a screenshot down, frame it (a white page on a white page has no edge) and reduce it
    to 128 colours: text and figures stay legible at a fraction of the size."""
    from PIL import Image, ImageOps

    with Image.open(png) as im:
        small = im.convert("RGB").resize(
            (round(im.width * REPORT_SCALE), round(im.height * REPORT_SCALE)), Image.LANCZOS)
    framed = ImageOps.expand(small, border=2, fill=(160, 160, 160))
    framed.quantize(colors=128).save(png, optimize=True)
    print(f"{png.relative_to(ROOT)}  {png.stat().st_size // 1024} KB  (scaled by {REPORT_SCALE})")


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
        IMAGES.mkdir(exist_ok=True)
        with _server(tmp, port):
            _shoot(runs_url(base, exp.experiment_id), IMAGES / "runs-table.png")
            _shoot(page + ML, IMAGES / "run-overview.png", window="1600,1150")
        report = Path(run.data.tags["hydra.output_dir"]) / "report"
        _shoot((report / "report.html").as_uri(), IMAGES / "report-top.png", window=REPORT_WINDOW)
        _shrink(IMAGES / "report-top.png")
        for name in REPORT_FIGURES:
            shutil.copyfile(report / name, IMAGES / name)
            print(f"{(IMAGES / name).relative_to(ROOT)}  {(IMAGES / name).stat().st_size // 1024} KB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
