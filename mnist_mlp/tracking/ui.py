"""The MLflow UI: its addresses (the runs table, a run's page) and ``make ui``, which serves it.

MLflow 3's UI opens a new browser on its GenAI pages (traces, a pop-up), not on the runs; the
``workflowType=machine_learning`` query shows the runs table whatever the browser remembers, and
the experiment's saved view (``tracking.views``) its headline columns. The experiment gets those
tags here too (``make ui``) when it was created before they existed.

``python -m mnist_mlp.tracking.ui --serve`` (``make ui``) starts ``mlflow ui`` on the local store and
prints the address of the runs table once the server answers, so that it is the last line on the
screen: without its access log (a line per request) and the deprecation warnings its web framework
prints at start-up. Without ``--serve`` it prints the address only.

``python -m mnist_mlp.tracking.ui [--serve] [--host H] [--port P] [--tracking-uri URI]
[--experiment NAME]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from mnist_mlp.paths import default_tracking_uri
from mnist_mlp.tracking.store import open_store
from mnist_mlp.tracking.views import VIEW_ID, ensure

#: Where ``make ui`` serves the UI by default (the Makefile's UI_HOST and UI_PORT).
HOST, PORT = "127.0.0.1", "5000"


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table, in the headline view (``tracking.views``)."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?viewStateShareKey={VIEW_ID}&workflowType=machine_learning")


def run_url(tracking_uri: str, experiment_id: str, run_id: str, tab: str = "",
            base: str | None = None) -> str:
    """The run's page: on the server for an http(s) store, else where ``make ui`` serves it (or
    ``base``), in the UI's model-training layout (a new browser opens a run in its GenAI one
    otherwise). ``tab``: ``model-metrics``, ``artifacts``, ...; the overview without."""
    remote = urlparse(tracking_uri).scheme in ("http", "https")
    base = base or (tracking_uri if remote else f"http://{HOST}:{PORT}")
    page = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{page}/{tab}?workflowType=machine_learning" if tab else f"{page}?workflowType=machine_learning"


def serving_hint(tracking_uri: str) -> str:
    """What serves ``run_url``'s page: nothing to do for a server; ``make ui`` for the project's
    store; for another local store the ``mlflow ui`` command that serves it there."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return ""
    if tracking_uri == default_tracking_uri():
        return "run `make ui` to serve it"
    return f"serve it with `mlflow ui --backend-store-uri {tracking_uri} --port {PORT}`"


def address(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """``run_url`` and, where a person has to start the UI first, how (a command's summary)."""
    hint = serving_hint(tracking_uri)
    url = run_url(tracking_uri, experiment_id, run_id)
    return f"{url} ({hint})" if hint else url


def experiment_id(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id (created if missing), with the tags that open the UI on its runs."""
    client, exp_id = open_store(tracking_uri, name, artifact_location)
    ensure(client, exp_id)
    return exp_id


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status == 200
    return False


def serve(tracking_uri: str, artifacts: str, host: str, port: str, url: str) -> int:
    """``mlflow ui`` on the store until it stops (Ctrl-C); ``url`` printed once it answers."""
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", tracking_uri,
               "--default-artifact-root", artifacts, "--host", host, "--port", port,
               "--uvicorn-opts", "--no-access-log --log-level warning"]
    # The uvicorn workers inherit it: Starlette's deprecation warning about MLflow's own code.
    env = {**os.environ, "PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated"}
    proc = subprocess.Popen(command, env=env)
    try:
        while proc.poll() is None and not _answers(f"http://{host}:{port}/health"):
            time.sleep(0.5)
        if proc.poll() is None:
            print(f"\nMLflow UI, runs table (Ctrl-C stops it): {url}", flush=True)
        return proc.wait()
    except KeyboardInterrupt:  # the server got the same Ctrl-C (same process group)
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()


def main(argv: list[str] | None = None) -> None:
    from mnist_mlp.paths import repo_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="start mlflow ui on the store")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", default=PORT)
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--experiment", default="mnist-mlp")
    args = parser.parse_args(argv)
    artifacts = str(repo_root() / "mlruns" / "artifacts")
    exp_id = experiment_id(args.tracking_uri, args.experiment, artifacts)
    url = runs_url(f"http://{args.host}:{args.port}", exp_id)
    if not args.serve:
        print(f"MLflow UI, runs of experiment {args.experiment}: {url}", flush=True)
        return
    sys.exit(serve(args.tracking_uri, artifacts, args.host, args.port, url))


if __name__ == "__main__":
    main()
