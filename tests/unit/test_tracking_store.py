"""Opening the tracking store: an unreachable server, credentials in the URI and a refused
experiment each stop with one paragraph before any work (mnist_mlp/tracking/store.py)."""

from __future__ import annotations

import time

import pytest

from mnist_mlp.errors import UserError
from mnist_mlp.tracking import store
from mnist_mlp.tracking.serving import free_port


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
