"""``python evaluate.py`` as a process: a tracked run's best checkpoint evaluated into a new nested
run with a quiet console, and the one paragraph when there is no checkpoint to test."""

from __future__ import annotations

from tests.helpers.configs import store_overrides
from tests.helpers.processes import run_script
from tests.helpers.runs import artifacts


def test_evaluate_py_run_id_records_the_report_in_a_new_run_nested_under_it(train_process, tmp_path):
    store, run = train_process.client, train_process.run
    rid = run.info.run_id
    result = run_script("evaluate.py", f"run_id={rid}", f"hydra.run.dir={tmp_path}/evaluate",
                        *train_process.data, *store_overrides(train_process.tmp)[:2])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Downloading artifacts" not in result.stderr and "Tip:" not in result.stdout + result.stderr
    (evaluation,) = [r for r in store.search_runs([run.info.experiment_id])
                     if r.data.tags.get("mnist_mlp.evaluates") == rid]
    assert evaluation.info.status == "FINISHED"
    assert evaluation.data.tags["mlflow.parentRunId"] == rid
    assert evaluation.data.metrics["test/acc"] == run.data.metrics["test/acc"]
    assert {"report/report.html", "report/predictions.csv"} <= artifacts(store, evaluation.info.run_id)
    assert store.get_run(rid).data.metrics == run.data.metrics  # the training run is untouched


def test_evaluate_cli_without_a_usable_checkpoint_says_so(tmp_path):
    result = run_script("evaluate.py", f"ckpt_path={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert f"error: ckpt_path={tmp_path}/nope.ckpt does not exist" in result.stderr
    assert "Traceback" not in result.stderr
