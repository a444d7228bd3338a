"""``python -m bench cost`` end to end on a synthetic MNIST: one round of whole processes (the import
floor, train.py, a sweep, evaluate.py) and the joblib sweep's memory, printed with the target and
written to the JSON of the figures. No timing is asserted: the figures are the benchmark's.
"""

from __future__ import annotations

import json

import pytest

from bench import cli
from tests.helpers.data import data_overrides

pytestmark = pytest.mark.slow


def test_the_cost_section_prints_the_ratio_to_the_floor_and_the_memory(synthetic_mnist, tmp_path,
                                                                       capsys):
    out = tmp_path / "bench"
    code = cli.main(["cost", "--cost-rounds", "1", "--out", str(out),
                     *data_overrides(*synthetic_mnist), "logger.system_metrics=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "target <= 1.2x the floor" in printed and "import torch, lightning, mlflow" in printed
    for label in ("python train.py", "a sweep's 2nd job", "python evaluate.py", "sweep parent",
                  "joblib worker", "summed PSS", "a store's first run also creates it"):
        assert label in printed, label
    figures = json.loads(next(out.glob("bench-*.json")).read_text())["cost"]
    assert figures["target_ratio"] == 1.2
    summary = figures["summary"]
    assert set(summary) == {"project/store", "project/train", "project/sweep", "project/evaluate"}
    assert summary["project/store"]["store_s"] > 0  # the store train.py logs into existed before
    train = summary["project/train"]
    assert train["ratio"] == pytest.approx(train["fixed_s"] / train["floor_s"])  # one round
    assert 0 < train["fixed_s"] < train["wall_s"] and train["epochs"] == 2
    assert {"startup", "build", "fit", "test_and_report", "tracking_outputs"} <= set(train["phases_s"])
    rss, peak = train["memory_mb"]["fit"]
    assert 0 < rss <= peak <= train["max_rss_mb"] + 1  # the run's own figure, within the outside one
    sweep = summary["project/sweep"]
    assert sweep["phases_s"]["startup"] < train["phases_s"]["startup"]  # it found the imports done
    joblib = figures["joblib_sweep"]
    assert len(joblib["peak_rss_mb_by_role"]["joblib worker"]) == 2
    # the parent only launches: it holds no torch, Lightning or MLflow model code of its own
    assert max(joblib["peak_rss_mb_by_role"]["sweep parent"]) < min(
        joblib["peak_rss_mb_by_role"]["joblib worker"])
