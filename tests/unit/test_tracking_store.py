"""Opening the tracking store: an unreachable server, credentials in the URI and a refused
experiment each stop with one paragraph before any work (mnist_mlp/tracking/store.py)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from mnist_mlp import runner
from mnist_mlp.errors import UserError
from mnist_mlp.tracking import store
from mnist_mlp.tracking.serving import free_port
from tests.helpers.configs import compose_job, quiet


def test_unreachable_server_is_a_user_error_within_seconds():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(UserError, match=rf"logger.tracking_uri={uri} cannot be used"):
        store.open_store(uri, "mnist-mlp")
    assert time.monotonic() - start < 20


def test_credentials_inside_the_tracking_uri_are_refused_unsent():
    with pytest.raises(UserError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") as err:
        store.open_store("http://alice:s3cret-pw@127.0.0.1:9/", "mnist-mlp")
    assert "s3cret-pw" not in str(err.value)


def test_a_refused_experiment_names_the_user_and_the_experiment(monkeypatch):
    """403 (the member lacks permission on the experiment); the servers here grant READ to all, so
    the refusal is MLflow's own exception raised by a stand-in client."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    class Refusing:
        def __init__(self, uri: str) -> None:
            pass

        def get_experiment_by_name(self, name: str):
            raise MlflowException("Permission denied", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(mlflow, "MlflowClient", Refusing)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    with pytest.raises(UserError, match=r"HTTP 403.*user bob may not use "
                       r"logger.experiment_name=shared.*EDIT permission"):
        store.open_store("http://127.0.0.1:9", "shared")


# A store file that is not an SQLite database, or one cut short: the project's one paragraph
# naming logger.tracking_uri and the file, before anything is trained, and the file left as it was.


def _not_a_database(path: Path) -> Path:
    path.write_bytes(b"these are not the bytes of an SQLite database\n" * 100)
    return path


def _truncated(path: Path) -> Path:
    with sqlite3.connect(path) as db:  # a real store's first pages, the rest cut off
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 400)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("make", [_not_a_database, _truncated], ids=["not-sqlite", "truncated"])
def test_a_damaged_store_file_is_named_and_left_untouched(tmp_path, make):
    store = make(tmp_path / "mlflow.db")
    before = _digest(store)
    cfg = compose_job(f"logger.tracking_uri=sqlite:///{store}", *quiet(), out=tmp_path / "out")
    with pytest.raises(UserError) as caught:
        runner.build(cfg)  # the logger opens the store: before any data is read or trained
    message = str(caught.value)
    assert "\n" not in message
    assert f"logger.tracking_uri=sqlite:///{store}" in message
    assert f"names {store}, which is not a usable SQLite database" in message
    assert "left as it is" in message and "nothing was trained" in message
    assert _digest(store) == before
