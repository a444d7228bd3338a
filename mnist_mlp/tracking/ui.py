"""``make ui``'s address: the MLflow UI's runs table of the project's experiment.

MLflow 3's UI opens a new browser on its GenAI pages (traces, a pop-up), not on the runs; the
``workflowType=machine_learning`` query shows the runs table whatever the browser remembers. The
experiment also gets MLflow's experiment-kind tag (new experiments get it in ``store.open_store``;
this sets it on ones created before), so the UI's own links open on runs too.

``python -m mnist_mlp.tracking.ui [--host H] [--port P] [--tracking-uri URI] [--experiment NAME]``
"""

from __future__ import annotations

import argparse
from urllib.parse import urlparse

from mnist_mlp.paths import default_tracking_uri
from mnist_mlp.tracking.store import EXPERIMENT_KIND, open_store

#: Where ``make ui`` serves the UI by default (the Makefile's UI_HOST and UI_PORT).
HOST, PORT = "127.0.0.1", "5000"


def runs_url(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page: on the server for an http(s) store, else where ``make ui`` serves it."""
    remote = urlparse(tracking_uri).scheme in ("http", "https")
    base = tracking_uri if remote else f"http://{HOST}:{PORT}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def experiment_id(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    """The experiment's id (created if missing), tagged as a model-training experiment."""
    client, exp_id = open_store(tracking_uri, name, artifact_location)
    tags = client.get_experiment(exp_id).tags
    for key, value in EXPERIMENT_KIND.items():
        if tags.get(key) != value:
            client.set_experiment_tag(exp_id, key, value)
    return exp_id


def main(argv: list[str] | None = None) -> None:
    from mnist_mlp.paths import repo_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", default=PORT)
    parser.add_argument("--tracking-uri", default=default_tracking_uri())
    parser.add_argument("--experiment", default="mnist-mlp")
    args = parser.parse_args(argv)
    exp_id = experiment_id(args.tracking_uri, args.experiment, str(repo_root() / "mlruns" / "artifacts"))
    print(f"MLflow UI, runs of experiment {args.experiment}: "
          f"{runs_url(f'http://{args.host}:{args.port}', exp_id)}", flush=True)


if __name__ == "__main__":
    main()
