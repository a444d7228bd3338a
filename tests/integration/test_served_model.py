"""The logged model through MLflow's own command line: ``mlflow models predict`` on a CSV of pixels
gives the checkpoint's classes (mnist_mlp/tracking/served_model.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers.processes import script_env
from tests.helpers.runs import checkpoint_probabilities, mnist_test_images


def test_mlflow_models_predict_scores_a_csv_of_images(train_process, synthetic_mnist, tmp_path):
    images = mnist_test_images(synthetic_mnist[0])[:5]
    csv = tmp_path / "images.csv"
    pd.DataFrame(images.reshape(len(images), -1)).to_csv(csv, index=False)  # integer pixels
    out = tmp_path / "predictions.json"
    rid = train_process.run.info.run_id
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "predict", "-m", f"runs:/{rid}/model",
         "-i", str(csv), "-t", "csv", "-o", str(out), "--env-manager", "local"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=script_env({"MLFLOW_TRACKING_URI": train_process.client.tracking_uri}),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = np.asarray(json.loads(out.read_text())["predictions"])
    expected = checkpoint_probabilities(train_process.client, train_process.run, images, tmp_path / "c")
    np.testing.assert_array_equal(predictions, expected.argmax(axis=1))
