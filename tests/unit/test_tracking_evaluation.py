"""An evaluation run: the source run's checkpoint fetched, the report in a new run nested under it
(mnist_mlp/tracking/evaluation.py)."""

from __future__ import annotations

import pytest

from mnist_mlp.errors import UserError
from mnist_mlp.tracking.evaluation import evaluation_run
from tests.helpers.runs import artifacts


def test_evaluation_gets_the_checkpoint_and_records_a_new_linked_run(store, tmp_path):
    exp = store.create_experiment("mnist-mlp", artifact_location=str(tmp_path / "art"))
    source = store.create_run(exp, run_name="lr=0.1").info.run_id
    ckpt = tmp_path / "epoch003.ckpt"
    ckpt.write_bytes(b"weights")
    store.log_artifact(source, str(ckpt), "checkpoints")
    store.log_metric(source, "test/acc", 0.9)
    store.set_terminated(source)
    empty = store.create_run(exp).info.run_id
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# report")
    lcfg = {"tracking_uri": store.tracking_uri, "experiment_name": "mnist-mlp"}

    with evaluation_run(source, lcfg, tmp_path / "dl") as ev:
        assert ev.ckpt_path.read_bytes() == b"weights"
        ev.log_report(report, {"test/acc": 0.95, "test/f1_per_class/4": 0.9})

    run = store.get_run(ev.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate lr=0.1"
    assert run.data.tags["mlflow.parentRunId"] == source
    assert run.data.tags["mnist_mlp.evaluates"] == source
    assert run.data.metrics == {"test/acc": 0.95, "test/f1_per_class/4": 0.9}
    assert artifacts(store, ev.run_id) == {"report/report.md"}
    assert store.get_run(source).data.metrics == {"test/acc": 0.9}  # the source run is untouched
    with pytest.raises(UserError, match="has no checkpoint artifact"):
        with evaluation_run(empty, lcfg, tmp_path / "dl2"):
            pass
    with pytest.raises(UserError, match="run_id=0123 is not a run"):
        with evaluation_run("0123", lcfg, tmp_path / "dl3"):
            pass
    with pytest.raises(RuntimeError), evaluation_run(source, lcfg, tmp_path / "dl4") as ev:
        raise RuntimeError("evaluation broke")
    assert store.get_run(ev.run_id).info.status == "FAILED"
