"""A sweep's ``champion`` served by a real ``python serve.py`` (``make serve``) on loopback.

The module's fixtures: one two-job sweep on the synthetic MNIST with
``logger.registered_model_name`` (``train.py -m`` in this process, Hydra's basic launcher: the
multirun's callbacks are what is tested), then one scoring server for ``models:/<name>@champion``,
started with a PATH that lacks the venv's ``bin`` (as from a shell that did not activate it) and
``max_rows=150`` (the test set has 200 images, so the whole set in one request is an oversized
body). The server is stopped after the module, also when a test fails.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from mlflow import MlflowClient

from mnist_mlp import fetch, idx
from mnist_mlp.tracking.serving import image_body, pixels_body, scoring_server
from tests.helpers.configs import quiet, store_overrides, train_main
from tests.helpers.data import data_overrides, write_synthetic_mnist

pytestmark = pytest.mark.slow
NAME = "mnist-mlp-served"
PROBS = [f"prob_{k}" for k in range(10)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    md5s = write_synthetic_mnist(tmp / "data")
    # Two learning rates: one learns the synthetic digits in an epoch, one does not.
    train_main("-m", "model.lr=0.002,0.05", "trainer.max_epochs=1",
               f"logger.registered_model_name={NAME}", "logger.system_metrics=false",
               *data_overrides(tmp / "data", md5s), *store_overrides(tmp), *quiet())
    uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mnist-mlp").experiment_id
    (parent,) = client.search_runs([exp], "tags.`mnist_mlp.role` = 'sweep'")
    jobs = client.search_runs([exp], "tags.`mnist_mlp.role` = 'train'",
                              order_by=["attributes.start_time ASC"])
    path = fetch.raw_dir(tmp / "data") / fetch.FILES["test_images"][0]
    images = idx.parse(idx.read_bytes(path), path, 3).reshape(-1, 784)
    return {"tmp": tmp, "uri": uri, "client": client, "parent": parent, "jobs": jobs,
            "images": images}


def _best_run(client, jobs):
    """The job with the highest acc/val at any epoch (its model holds that best checkpoint)."""
    scores = [max(m.value for m in client.get_metric_history(j.info.run_id, "acc/val"))
              for j in jobs]
    assert len(set(scores)) == len(scores), scores  # a real choice, not a tie
    return jobs[int(np.argmax(scores))]


def _predictions(client, run_id, tmp) -> pd.DataFrame:
    folder = client.download_artifacts(run_id, "report", str(tmp / run_id))
    return pd.read_csv(f"{folder}/predictions.csv").sort_values("index")


@pytest.fixture(scope="module")
def server(sweep):
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    log = sweep["tmp"] / "serve.log"
    with scoring_server(f"models:/{NAME}@champion", sweep["uri"], overrides=["max_rows=150"],
                        log=log, env={**os.environ, "PATH": path}) as running:
        yield running


def _post(server, body, content_type="application/json") -> requests.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{server.url}/invocations", data=data, timeout=120,
                         headers={"Content-Type": content_type})


def test_a_sweep_points_champion_at_its_best_run_and_compare_names_the_version(sweep):
    client, jobs, parent = sweep["client"], sweep["jobs"], sweep["parent"]
    versions = {v.run_id: v for v in client.search_model_versions(f"name = '{NAME}'")}
    assert set(versions) == {j.info.run_id for j in jobs}  # each run's model is a version
    best = _best_run(client, jobs)
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.run_id == best.info.run_id
    assert client.get_run(parent.info.run_id).data.tags["mnist_mlp.champion"] == (
        f"models:/{NAME}/{champion.version}")
    folder = client.download_artifacts(parent.info.run_id, "comparison", str(sweep["tmp"] / "cmp"))
    rows = {r["run_id"]: r for r in pd.read_csv(f"{folder}/comparison.csv").to_dict("records")}
    assert rows[best.info.run_id]["model_version"] == f"{NAME} v{champion.version} @champion"
    markdown = Path(folder, "comparison.md").read_text()
    assert (f"Alias champion of registered model {NAME} is version {champion.version}, run "
            f"{best.info.run_name} ({best.info.run_id})") in markdown


def test_the_served_champion_gives_its_runs_predictions_in_both_request_forms(sweep, server):
    best = _best_run(sweep["client"], sweep["jobs"])
    expected = _predictions(sweep["client"], best.info.run_id, sweep["tmp"])
    images = sweep["images"]
    for body in (pixels_body, image_body):
        got = []
        for start in range(0, len(images), 100):  # max_rows=150: two requests
            response = _post(server, body(images[start:start + 100]))
            assert response.status_code == 200, response.text[:500]
            got += response.json()["predictions"]
        np.testing.assert_array_equal(got, expected["pred"], err_msg=body.__name__)
    probs = _post(server, image_body(images[:100], {"output": "probabilities"})).json()
    table = pd.DataFrame(probs["predictions"])
    np.testing.assert_array_equal(table["pred"], expected["pred"][:100])
    np.testing.assert_allclose(table[PROBS], expected[PROBS][:100], atol=1e-6)


def test_a_csv_body_is_scored_as_its_json_twin(sweep, server):
    images = sweep["images"][:7]
    csv = pd.DataFrame(images).to_csv(index=False)
    response = _post(server, csv, "text/csv")
    assert response.status_code == 200, response.text[:500]
    assert response.json() == _post(server, pixels_body(images)).json()


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"inputs": [[0] * 783]}, 400, "must be one row of 784 pixel values"),
    ({"inputs": [["white"] * 784]}, 400, "Pixel values must be numbers"),
    ({"inputs": []}, 400, "No images in the input"),
    ({"dataframe_split": {"data": []}}, 400, "No images in the input"),
    ("oversized", 400, "200 images in one request; this model takes at most 150"),
    ({"inputs": {"image": ["AAAA"]}}, 400, "must hold 784 bytes"),
    ({"inputs": [[0] * 784], "params": {"output": "logits"}}, 400, "give one of class, probabilities"),
    ("{not json", 400, "Ensure that input is a valid JSON formatted string"),
    ({"pixels": [[0] * 784]}, 400, "The input must be a JSON dictionary with exactly one of"),
], ids=["width", "strings", "empty_list", "empty_frame", "oversized", "short_image", "bad_param",
        "not_json", "no_format_key"])
def test_bad_bodies_get_a_4xx_with_mlflows_message_and_the_server_keeps_answering(
        sweep, server, body, status, message):
    if body == "oversized":
        body = pixels_body(sweep["images"])  # the whole test set: over max_rows=150
    response = _post(server, body)
    assert response.status_code == status, response.text[:500]
    error = response.json()
    assert error["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert message in error["message"], error["message"][:800]
    assert requests.get(f"{server.url}/ping", timeout=30).status_code == 200
    again = _post(server, image_body(sweep["images"][:3]))
    assert again.status_code == 200 and len(again.json()["predictions"]) == 3


def test_ping_and_health_answer(server):
    for route in ("/ping", "/health"):
        assert requests.get(f"{server.url}{route}", timeout=30).status_code == 200
