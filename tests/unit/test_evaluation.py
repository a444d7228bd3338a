"""evaluate.py's code in-process: the training report equals scikit-learn on its own predictions,
and testing the checkpoint again reproduces every file of it."""

from __future__ import annotations

import json

import numpy as np
from sklearn.metrics import classification_report

from mnist_mlp import cli
from tests.helpers.configs import compose_job
from tests.helpers.data import N_TEST


def test_training_report_matches_scikit_learn_and_evaluate_reproduces_it(trained_run, evaluated_run,
                                                                          tmp_path):
    folder = trained_run.report
    table = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1)
    assert len(table) == N_TEST and sorted(table[:, 0]) == list(range(N_TEST))
    y, p = table[:, 1].astype(int), table[:, 2].astype(int)
    ref = classification_report(y, p, labels=list(range(10)), digits=4, zero_division=0)
    assert (folder / "classification_report.txt").read_text() == ref
    page = (folder / "report.html").read_text()
    assert "<h2>Conclusions</h2>" in page and "data:image/png;base64," in page

    out = evaluated_run.report  # the best checkpoint, tested again by evaluate.py's code
    assert "Testing DataLoader" not in evaluated_run.console  # no bar off a terminal
    unbarred = compose_job(f"ckpt_path={trained_run.best_checkpoint}", *trained_run.data,
                           "trainer.enable_progress_bar=false", out=tmp_path, config="evaluate")
    assert cli.evaluate(unbarred) > 0  # the switch drops the bar callback, Lightning no longer refuses
    again = json.loads((out / "classification_report.json").read_text())
    first = json.loads((folder / "classification_report.json").read_text())
    assert again == first  # same accuracy, same every other number
    assert (out / "predictions.csv").read_text() == (folder / "predictions.csv").read_text()
    # the learning curves up to the checkpoint's own epoch, as the training report drew them
    assert (out / "learning_curves.csv").read_text() == (folder / "learning_curves.csv").read_text()
