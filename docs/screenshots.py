"""Regenerate the pictures of the README and the documentation: ``make docs-screenshots``.

Trains two short runs (learning rates 0.05 and 0.1, ``EPOCHS`` epochs each, on the MNIST in
``data/``; single runs, as the table shows a sweep's jobs folded under its parent) into a temporary
store, serves it with ``mlflow ui`` on a free port, and photographs in headless Chromium
(``CHROMIUM``, default ``/usr/bin/chromium``), into ``docs/images/``:

* ``runs-table.png``: the address ``make ui`` prints, the experiment's runs table in its
  headline view (test accuracy, interval, macro F1, the settings; best first);
* ``run-overview.png``: one run's page: description, datasets, tags, metrics;
* ``run-metrics.png``: its "Model metrics" tab, which opens on the learning curves (per epoch)
  and then the test metrics (the system-metrics charts stay blank in headless Chromium, so their
  tab is not photographed);
* ``report-top.png``: the top of the better run's ``report.html``, down to the confusion matrix,
  scaled down and reduced to a palette so that the README's picture stays small;
* ``roc_curves.png``, ``reliability.png``: two of that run's report figures, as written.

The browser asks for ``docs.mlflow.invalid`` (mapped to 127.0.0.1 inside Chromium, so nothing
leaves the machine): on ``localhost`` MLflow 3.17 opens its assistant panel over a third of the
page in a new browser. The project's own store (``mlruns/``) is not touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnist_mlp.tracking.serving import free_port, stop_group, wait_answering  # noqa: E402
from mnist_mlp.tracking.ui import experiment_id, run_url, runs_url  # noqa: E402

EPOCHS = 3
LRS = (0.05, 0.1)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
IMAGES = ROOT / "docs" / "images"
# The report page's top, title to confusion matrix, at 1100 px wide; then scaled by REPORT_SCALE.
REPORT_WINDOW, REPORT_SCALE = "1100,2350", 0.75
REPORT_FIGURES = ("roc_curves.png", "reliability.png")
HOST = "docs.mlflow.invalid"  # a name Chromium maps to 127.0.0.1 (.invalid never resolves)


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
         "--default-artifact-root", str(tmp / "artifacts"), "--allowed-hosts",
         f"{HOST}:{port},127.0.0.1:{port}", "--cors-allowed-origins", f"http://{HOST}:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_answering(f"http://127.0.0.1:{port}/health", proc)
        yield
    finally:
        stop_group(proc, wait_s=120)  # uvicorn's workers stop one by one: slow on a busy machine


def _shoot(url: str, png: Path, window: str = "1600,900") -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=200000",
             f"--host-resolver-rules=MAP {HOST} 127.0.0.1",
             f"--window-size={window}", "--hide-scrollbars", f"--screenshot={png}", url],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
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
        uri = f"sqlite:///{tmp}/mlflow.db"
        exp_id = experiment_id(uri, "mnist-mlp")  # as `make ui` does: the saved view is there
        run = MlflowClient(uri).search_runs([exp_id], "tags.`mnist_mlp.role` = 'train'",
                                            order_by=["metrics.`test/acc` DESC"])[0]
        port = free_port()
        base = f"http://{HOST}:{port}"
        IMAGES.mkdir(exist_ok=True)
        with _server(tmp, port):
            _shoot(runs_url(base, exp_id), IMAGES / "runs-table.png", window="1600,600")
            _shoot(run_url(uri, exp_id, run.info.run_id, base=base), IMAGES / "run-overview.png",
                   window="1600,1150")
            _shoot(run_url(uri, exp_id, run.info.run_id, "model-metrics", base=base),
                   IMAGES / "run-metrics.png", window="1600,1400")
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
