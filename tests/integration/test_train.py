"""``python train.py`` as a process: what its console shows, and how it stops on bad input.

Each refusal is one paragraph, ``error: ...``, on stderr with exit status 2 and no traceback,
before any training; nothing the user had is touched.
"""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from mnist_mlp import fetch, idx
from mnist_mlp.tracking.serving import free_port
from tests.helpers.configs import checkpoint_of, compose_job, quiet, store_overrides
from tests.helpers.data import data_overrides, snapshot, synthetic_arrays, write_synthetic_mnist
from tests.helpers.processes import assert_one_paragraph, run_script, run_train
from tests.helpers.trained import TRAINED_EPOCHS


def test_the_log_of_a_run_is_short_and_says_only_what_matters(train_process):
    log = train_process.log
    lines = log.splitlines()
    assert len(lines) <= 40, log
    for noise in ("Tip:", "litlogger", "Pickle", "pickle", "Skipping setting a default",
                  "Downloading artifacts", "LeafSpec", "it/s]"):
        assert noise not in log, noise
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == [
        f"Epoch {e}/{TRAINED_EPOCHS}" for e in range(1, TRAINED_EPOCHS + 1)]
    history = train_process.client.get_metric_history(train_process.run.info.run_id, "acc/val")
    assert f"acc/val {history[-1].value:.4f}" in epoch_lines[-1]  # the epoch's logged value
    assert "Total params" in log  # the model summary, once
    assert log.count("Total params") == 1


# ------------------------------------------------------------------ refusals ----------------------


def _cli(data_dir, md5s, tmp_path, fresh=False) -> list[str]:
    return [*data_overrides(data_dir, md5s), *store_overrides(tmp_path, fresh=fresh), *quiet()]


def test_bad_value_stops_before_data_and_tracking(tmp_path):
    """The data folder does not exist: the config error comes first and nothing is created."""
    missing = tmp_path / "no-data"
    result = run_train(*_cli(missing, {}, tmp_path, fresh=True), "model.lr=-1", cwd=tmp_path)
    assert_one_paragraph(result, "model.lr=-1", "a finite number > 0")
    assert not missing.exists() and not (tmp_path / "mlruns").exists()


def test_logger_null_is_refused_in_one_paragraph_saying_to_remove_the_group(tmp_path):
    result = run_train("logger=null", cwd=tmp_path)
    assert_one_paragraph(result, "logger=null", "'~logger'", "Nothing was run or recorded")
    assert not list(tmp_path.iterdir())  # not even Hydra's output folder


def test_unknown_key_is_refused_by_hydra_without_traceback(tmp_path):
    result = run_train("model.lrr=1", cwd=tmp_path)
    assert result.returncode != 0
    assert "model.lrr" in result.stderr and "Traceback" not in result.stderr


def test_bad_data_stops_before_training_with_one_paragraph(synthetic_mnist, tmp_path):
    data_dir, _ = synthetic_mnist  # checked against the real MNIST's MD5s, which it is not
    result = run_train("trainer.fast_dev_run=true", f"data.data_dir={data_dir}", "data.sources=[local]",
                       *store_overrides(tmp_path))
    assert result.returncode == 2
    assert "error: MNIST file" in result.stderr and "Traceback" not in result.stderr
    assert "Epoch 1" not in result.stdout + result.stderr


def test_data_dir_that_is_a_file_stops_train_py_with_one_paragraph(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_bytes(b"not a folder")
    result = run_train(*_cli(not_a_dir, {}, tmp_path), "trainer.fast_dev_run=true", cwd=tmp_path)
    assert_one_paragraph(result, str(not_a_dir), "data.data_dir")
    assert not_a_dir.read_bytes() == b"not a folder"
    assert "Epoch 1" not in result.stdout + result.stderr


def test_label_out_of_range_stops_train_py_and_files_stay(tmp_path):
    md5s = write_synthetic_mnist(tmp_path / "data")
    raw = fetch.raw_dir(tmp_path / "data")
    labels = synthetic_arrays(200, 1)[1].copy()
    labels[17] = 10
    idx.write(raw / "t10k-labels-idx1-ubyte", labels)
    md5s["test_labels"] = fetch.md5((raw / "t10k-labels-idx1-ubyte").read_bytes())
    before = snapshot(raw)
    result = run_train(*_cli(tmp_path / "data", md5s, tmp_path), "trainer.fast_dev_run=true",
                       cwd=tmp_path)
    assert_one_paragraph(result, "t10k-labels-idx1-ubyte holds label 10")
    assert snapshot(raw) == before


def test_other_architecture_stops_train_py_before_training(tmp_path):
    path = checkpoint_of(tmp_path / "other.ckpt", hidden1=64)
    result = run_train(f"ckpt_path={path}", f"data.data_dir={tmp_path / 'none'}",
                       f"hydra.run.dir={tmp_path}/outputs", cwd=tmp_path)
    assert_one_paragraph(result, str(path), "model.net.hidden1=64")
    assert not (tmp_path / "none").exists()


def test_unreachable_tracking_server_stops_before_training(synthetic_mnist, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    result = run_train("trainer.fast_dev_run=true", *data_overrides(*synthetic_mnist),
                       *store_overrides(tmp_path, uri))
    assert result.returncode == 2
    assert f"error: logger.tracking_uri={uri} cannot be used" in result.stderr
    assert "Traceback" not in result.stderr and "Epoch 1" not in result.stdout + result.stderr


def test_non_finite_loss_stops_in_the_first_epoch_with_a_message(synthetic_mnist, tmp_path):
    result = run_train(*_cli(*synthetic_mnist, tmp_path), "model.lr=1e30", "trainer.max_epochs=50",
                       cwd=tmp_path)
    assert_one_paragraph(result, "Training stopped in epoch 1/", "NaN or infinite", "model.lr")
    assert not list((tmp_path / "outputs" / "checkpoints").glob("*.ckpt"))  # none of NaN weights


# A store file that is not an SQLite database: the paragraph, the file left as it was
# (tests/unit/test_tracking_store.py has the in-process cases).
def test_a_store_file_that_is_not_a_database_stops_train_py_with_exit_2_and_no_traceback(tmp_path):
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"these are not the bytes of an SQLite database\n" * 100)
    before = store.read_bytes()
    result = run_train(f"logger.tracking_uri=sqlite:///{store}", f"hydra.run.dir={tmp_path}/out",
                       *quiet(), cwd=tmp_path)
    assert_one_paragraph(result, "logger.tracking_uri=", str(store), "not a usable SQLite database")
    assert store.read_bytes() == before
    assert not list((tmp_path / "out").rglob("*.ckpt"))


# ``python train.py --help`` is this project's page: what a run does, the groups and their
# options, the keys people change (with today's defaults), examples.


@pytest.fixture(scope="module")
def train_help() -> str:
    result = run_script("train.py", "--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_help_says_what_the_project_does_and_how_to_change_it(train_help):
    text = train_help
    assert len(text.splitlines()) < 60  # Hydra's generic page printed the whole config (154 lines)
    assert "powered by Hydra" not in text and "_target_" not in text
    for needle in ("HW9 MNIST MLP", "report.html", "MLflow", "model/optimizer: adam, sgd",
                   "model/scheduler: cosine, none, plateau", "== Examples ==", "python train.py -m",
                   "--hydra-help", "--cfg job"):
        assert needle in text, needle


def test_the_defaults_the_help_quotes_are_the_configs(train_help):
    text = train_help
    keys = text.split("== Most used keys", 1)[1].split("== Examples ==", 1)[0]
    cfg = compose_job()
    quoted = re.findall(r"^  ([a-z_.0-9]+)=(\S+)\s", keys, flags=re.M)
    assert len(quoted) >= 8
    for key, value in quoted:
        if key.startswith("hydra."):  # Hydra's own keys are not in the job's config
            continue
        actual = OmegaConf.select(cfg, key, default="<absent>")
        if value.isupper() or value.endswith(".ckpt") or "URI" in value:  # a placeholder
            assert actual != "<absent>", key
            continue
        assert str(actual) == value, key
