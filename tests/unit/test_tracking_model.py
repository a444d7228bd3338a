"""The logged model under MLflow's classifier convention: classes from ``predict``, probabilities
on request, every pixel form, refusals MLflow turns into HTTP 400, and ``mlflow.models.evaluate``
giving the run's own report numbers (also through ``evaluate.py evaluate.mlflow_evaluator=true``).

The run is the session's ``trained_run``; its learning rate is low enough that the test set keeps
mistakes (so equal numbers are not all 1.0).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mnist_mlp import cli
from mnist_mlp.datamodule import MnistDataModule
from mnist_mlp.tracking.model import PIXEL_COLUMNS, evaluation_frame
from tests.helpers.configs import compose_job, store_overrides
from tests.helpers.data import VAL_SIZE

pytestmark = pytest.mark.slow
PROBS = [f"prob_{k}" for k in range(10)]


@pytest.fixture(scope="module")
def trained(trained_run):
    """The session's trained run and what these tests read of it: its test set as MLflow's
    evaluation frame, its report's predictions and numbers."""
    dm = MnistDataModule(str(trained_run.data_dir), val_size=VAL_SIZE, sources=("local",),
                         md5=trained_run.md5s)
    dm.prepare_data()
    dm.setup()
    return {"tmp": trained_run.out.parent, "data": trained_run.data, "client": trained_run.client,
            "run_id": trained_run.run.info.run_id, "run": trained_run.run,
            "uri": trained_run.client.tracking_uri,
            "frame": evaluation_frame(dm),
            "predictions": pd.read_csv(trained_run.report / "predictions.csv"),
            "report": json.loads((trained_run.report / "classification_report.json").read_text())}


@pytest.fixture(scope="module")
def model(trained):
    import mlflow

    mlflow.set_tracking_uri(trained["uri"])
    return mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model")


def _pixels(trained) -> pd.DataFrame:
    return trained["frame"][PIXEL_COLUMNS]


def test_predict_gives_the_reports_classes_and_probabilities_on_request(trained, model):
    expected = trained["predictions"]
    assert trained["report"]["accuracy"] < 1.0  # mistakes to get right, not a trivial 100 %
    classes = model.predict(_pixels(trained))
    assert classes.dtype == np.int64 and classes.shape == (len(expected),)
    np.testing.assert_array_equal(classes, expected["pred"])
    probs = model.predict(_pixels(trained), params={"output": "probabilities"})
    assert list(probs.columns) == ["pred", *PROBS]  # predictions.csv's own columns
    np.testing.assert_array_equal(probs["pred"], expected["pred"])
    np.testing.assert_allclose(probs[PROBS], expected[PROBS], atol=1e-6)


def test_the_models_config_sits_beside_the_training_params_without_changing_them(trained):
    """MLflow logs a model's model_config as its run's params: the served model's keys must not
    collide with the training's (``threads`` did: "Changing param values is not allowed")."""
    params = trained["run"].data.params
    assert params["threads"] == "1"  # the training's torch threads (conf/train.yaml)
    assert params["torch_threads"] == "0" and int(params["max_rows"]) > 0


def test_every_input_form_gives_the_same_classes(trained, model):
    pixels = _pixels(trained).to_numpy()[:20]
    raw = [row.astype(np.uint8).tobytes() for row in pixels]
    forms = {
        "uint8": pixels.astype(np.uint8), "int64": pixels.astype(np.int64),
        "float32": pixels.astype(np.float32), "float64": pixels.astype(np.float64),
        "lists": pixels.tolist(), "frame of ints": pd.DataFrame(pixels),
        "image bytes": {"image": raw},
        "image base64": pd.DataFrame({"image": [base64.b64encode(b).decode() for b in raw]}),
    }
    expected = trained["predictions"]["pred"].to_numpy()[:20]
    for name, form in forms.items():
        np.testing.assert_array_equal(model.predict(form), expected, err_msg=name)


@pytest.mark.parametrize(("bad", "message"), [
    (np.zeros((2, 783)), "must be one row of 784 pixel values"),
    (np.zeros((2, 28, 28)), "got an input of shape (2, 28, 28)"),
    ([["a"] * 784], "Pixel values must be numbers"),
    ([], "No images in the input"),
    (np.full((1, 784), np.nan), "finite"),
    ({"image": ["not base64!"]}, "is not base64"),
    ({"image": [b"\x00" * 100]}, "must hold 784 bytes"),
    (pd.DataFrame({"image": [b"\x00" * 784], "x": [1]}), "Give the column 'image' alone"),
], ids=["width", "rank", "strings", "empty", "nan", "not_base64", "short_image", "extra_column"])
def test_bad_inputs_get_invalid_parameter_value_saying_what_to_send(model, bad, message):
    with pytest.raises(MlflowException, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        model.predict(bad)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 from a scoring server


def test_an_unknown_output_and_too_many_images_are_refused(trained):
    import mlflow

    small = mlflow.pyfunc.load_model(f"runs:/{trained['run_id']}/model",
                                     model_config={"max_rows": 5})
    with pytest.raises(MlflowException, match="6 images in one request; this model takes at most 5"):
        small.predict(np.zeros((6, 784)))
    assert len(small.predict(np.zeros((5, 784)))) == 5
    with pytest.raises(MlflowException, match="give one of class, probabilities"):
        small.predict(np.zeros((1, 784)), params={"output": "logits"})


def test_mlflow_evaluate_gives_the_reports_weighted_and_macro_numbers(trained):
    import mlflow

    mlflow.set_tracking_uri(trained["uri"])
    report, uri = trained["report"], f"runs:/{trained['run_id']}/model"
    # Not mlflow.set_experiment: that would bind this process's later runs to this experiment.
    experiment_id = trained["client"].create_experiment(  # its artifacts in tmp, not ./mlruns
        "mlflow-evaluate", artifact_location=str(trained["tmp"] / "mlruns" / "evaluate-artifacts"))
    for average, config in (("weighted", None), ("macro", {"average": "macro"})):
        with mlflow.start_run(experiment_id=experiment_id):
            result = mlflow.models.evaluate(uri, trained["frame"], targets="label",
                                            model_type="classifier", evaluator_config=config)
        m, ref = result.metrics, report[f"{average} avg"]
        assert m["example_count"] == len(trained["frame"])
        assert m["accuracy_score"] == pytest.approx(report["accuracy"], rel=1e-12)
        assert m["precision_score"] == pytest.approx(ref["precision"], rel=1e-12), average
        assert m["recall_score"] == pytest.approx(ref["recall"], rel=1e-12), average
        assert m["f1_score"] == pytest.approx(ref["f1-score"], rel=1e-12), average


def test_evaluate_py_records_mlflows_evaluation_beside_the_report(trained, tmp_path, capsys):
    capsys.readouterr()
    cli.evaluate(compose_job(f"run_id={trained['run_id']}", "evaluate.mlflow_evaluator=true",
                             *trained["data"], *store_overrides(trained["tmp"])[:2],
                             "trainer.enable_progress_bar=false", out=tmp_path, config="evaluate"))
    stdout = capsys.readouterr().out
    assert "MLflow's evaluator (weighted averages): accuracy_score" in stdout
    client = trained["client"]
    (ev,) = client.search_runs([client.get_run(trained["run_id"]).info.experiment_id],
                               filter_string="tags.`mnist_mlp.role` = 'evaluate'")
    report = trained["report"]
    assert ev.data.metrics["accuracy_score"] == pytest.approx(report["accuracy"], rel=1e-12)
    assert ev.data.metrics["f1_score"] == pytest.approx(report["weighted avg"]["f1-score"], rel=1e-12)
    assert ev.data.metrics["test/acc"] == pytest.approx(report["accuracy"], abs=1e-6)
    per_class = pd.read_csv(client.download_artifacts(ev.info.run_id, "per_class_metrics.csv",
                                                      str(tmp_path)))
    # MLflow's per-class "accuracy" is one-vs-rest; the report's is the class's recall.
    confusion = pd.read_csv(tmp_path / "report" / "confusion_matrix.csv", index_col=0).to_numpy()
    n, hits = confusion.sum(), np.diag(confusion)
    one_vs_rest = (n - confusion.sum(0) - confusion.sum(1) + 2 * hits) / n
    np.testing.assert_allclose(per_class["accuracy_score"], one_vs_rest, rtol=1e-12)
    for mlflow_key, key in (("recall_score", "recall"), ("precision_score", "precision"),
                            ("f1_score", "f1-score")):  # these agree class by class
        np.testing.assert_allclose(per_class[mlflow_key],
                                   [report[str(k)][key] for k in range(10)], rtol=1e-12)


def test_mlflow_evaluator_without_a_run_is_refused_before_any_work(tmp_path, capsys):
    cfg = compose_job(f"ckpt_path={tmp_path}/any.ckpt", "evaluate.mlflow_evaluator=true",
                      out=tmp_path, config="evaluate")
    with pytest.raises(SystemExit) as done:
        cli.evaluate(cfg)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: evaluate.mlflow_evaluator=true scores the MLflow model")
    assert "run_id=<training run id>" in err and err.count("\n") == 1
    assert not (tmp_path / "report").exists()
