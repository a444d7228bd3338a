"""The MLflow store: opened and checked before anything is trained, and batched writes to it."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from mnist_mlp.errors import UserError, no_space
from mnist_mlp.tracking.record import FAILURE_TAG
from mnist_mlp.tracking.views import experiment_tags

log = logging.getLogger(__name__)

_BATCH = 100  # MLflow's limit of params/tags per log_batch call


def _fail_fast_settings(timeout: float) -> dict[str, str]:
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}


def fail_fast_http(timeout: float) -> None:
    """From now on in this process, an MLflow call to a server that does not answer fails within
    ``timeout`` s instead of retrying for minutes (urllib3's backoff), unless the environment
    already chose otherwise. The outage buffer and ``sync`` are the retry."""
    for key, value in _fail_fast_settings(timeout).items():
        os.environ.setdefault(key, value)


@contextlib.contextmanager
def failing_fast(timeout: float = 10) -> Iterator[None]:
    """``fail_fast_http`` for the block only (the store check before training)."""
    values = _fail_fast_settings(timeout)
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def open_store(uri: str, experiment_name: str, artifact_location: str | None = None):
    """Client and experiment id (created if missing), or a UserError naming ``logger.tracking_uri``.

    Called before training, so a server that is down is reported in seconds, not after the last
    epoch; a sweep calls it once before launching, so parallel jobs never race on creating the
    SQLite schema or the experiment. HTTP stores are probed without MLflow's minutes of retries.
    A server with authentication takes credentials from MLflow's environment variables only: a
    refusal (401/403) says which to set, and credentials inside the URI (a param of every run) are
    refused before they are sent.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    parsed = urlparse(uri)
    remote = parsed.scheme in ("http", "https")
    if remote and (parsed.username or parsed.password):
        raise UserError(
            "logger.tracking_uri holds a user name or password, which would be recorded in every "
            "run's params and config.yaml: give the server's address alone and set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment instead."
        )
    try:
        client = MlflowClient(uri)
        with failing_fast() if remote else contextlib.nullcontext():
            experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            try:
                return client, client.create_experiment(experiment_name, artifact_location,
                                                        tags=experiment_tags())
            except MlflowException:  # created meanwhile by a job started beside this one
                experiment = client.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise
    except MlflowException as err:
        if err.get_http_status_code() in (401, 403):
            raise _refused(uri, experiment_name, err.get_http_status_code()) from None
        raise unusable(uri, err) from None
    except Exception as err:  # noqa: BLE001  (any failure here means: no usable store)
        raise unusable(uri, err) from None
    if experiment.lifecycle_stage == "deleted":
        raise UserError(
            f"logger.experiment_name={experiment_name} names a deleted experiment in {uri}: "
            f"restore it (`mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`) or choose another logger.experiment_name."
        )
    return client, experiment.experiment_id


def unusable(uri: str, err: Exception) -> UserError:
    """Why the store at ``uri`` cannot be opened, and what to do: one paragraph naming the key."""
    first = str(err).splitlines()[0][:300] if str(err) else ""
    damaged = _damaged_sqlite(uri, err)
    if damaged:
        return UserError(
            f"logger.tracking_uri={uri} names {damaged}, which is not a usable SQLite database "
            f"({first.removeprefix('(sqlite3.DatabaseError) ')}: not an SQLite file, or one cut "
            "short or damaged); it was left as it is, and nothing was trained or recorded. Point "
            "logger.tracking_uri at another file (sqlite:///<absolute path>.db: a new store is "
            f"created there), or restore {damaged} from a backup."
        )
    return UserError(
        f"logger.tracking_uri={uri} cannot be used ({type(err).__name__}: {first}). Start the "
        "tracking server (`mlflow server`, or `make ui` for the local store) or point "
        "logger.tracking_uri at a reachable store; nothing was trained or recorded."
    )


def _damaged_sqlite(uri: str, err: Exception) -> str | None:
    """The file of a ``sqlite:///`` store that SQLite refused to read (not a database, malformed)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    text = f"{err} {err.__cause__ or ''}"
    refused = any(words in text for words in ("file is not a database", "malformed"))
    return path if refused and os.path.isfile(path) else None


def _refused(uri: str, experiment_name: str, status: int, where: str | None = None) -> UserError:
    """401 (no or wrong credentials) and 403 (no permission) of a server run with authentication.

    ``where``: what the user may not write to, when it is not ``logger.experiment_name`` (an
    evaluation run goes into the evaluated run's experiment).
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401:
        who = (f"the password of MLFLOW_TRACKING_USERNAME={user} was not accepted" if user
               else "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are not set")
        return UserError(
            f"logger.tracking_uri={uri} refused the request (HTTP 401, not authenticated): {who}. "
            "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment to your "
            "account on that server (not as overrides: those are recorded in the run's params); "
            "nothing was trained or recorded."
        )
    instead = "" if where else ", or choose another logger.experiment_name"
    return UserError(
        f"logger.tracking_uri={uri} refused the request (HTTP 403, permission denied): user "
        f"{user or '(none)'} may not use {where or f'logger.experiment_name={experiment_name}'}. "
        f"Ask the server's admin for EDIT permission on that experiment{instead}; nothing was "
        "trained or recorded."
    )


@contextlib.contextmanager
def refusals_explained(uri: str, experiment_name: str, where: str | None = None) -> Iterator[None]:
    """Around creating a run: a 401/403 there gets the store check's one-paragraph error.

    A server with authentication checks each request: READ, which every user may have on an
    experiment and which is all ``open_store`` needs, does not allow creating a run in it.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        status = err.get_http_status_code()
        if status in (401, 403):
            raise _refused(uri, experiment_name, status, where) from None
        raise


def get_run(client: Any, run_id: str, key: str = "run_id") -> Any:
    """The run, or a UserError saying that ``key=run_id`` is not a run of this store."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise UserError(
            f"{key}={run_id} is not a run in {client.tracking_uri}: copy the run ID from the MLflow "
            "UI (`make ui`) or `mlflow runs list`, and check logger.tracking_uri."
        ) from None


def log_batch(client: Any, run_id: str, params: Mapping[str, Any] | None = None,
              metrics: Mapping[str, float] | None = None, step: int = 0) -> None:
    """Params and metrics in as few calls as MLflow's per-call limit allows."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = [("params", Param(k, str(v))) for k, v in (params or {}).items()]
    items += [("metrics", Metric(k, float(v), now, step)) for k, v in (metrics or {}).items()]
    for i in range(0, len(items), _BATCH):
        chunk = items[i : i + _BATCH]
        client.log_batch(run_id, params=[x for kind, x in chunk if kind == "params"],
                         metrics=[x for kind, x in chunk if kind == "metrics"])


def end_run(client: Any, run_id: str | None, status: str) -> None:
    """Close a run as FINISHED, FAILED or KILLED; never raise over the error that ended it."""
    if client is None or run_id is None:
        return
    try:
        client.set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001
        log.warning("Could not mark MLflow run %s as %s: %s", run_id, status, err)


@contextlib.contextmanager
def ending(client: Any, run_id: str | None, killed: Any = lambda: False) -> Iterator[None]:
    """Close ``run_id`` by how the block ends: KILLED (Ctrl-C, SystemExit, ``killed()``), FAILED, FINISHED.

    Lightning turns Ctrl-C inside fit into ``sys.exit(1)`` and SIGTERM into ``SIGTERMException``
    (a ``SystemExit``), so any ``KeyboardInterrupt``/``SystemExit`` here means KILLED.
    """
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        end_run(client, run_id, "KILLED")
        raise
    except BaseException as err:
        _tag_failure(client, run_id, err)
        end_run(client, run_id, "FAILED")
        raise
    end_run(client, run_id, "KILLED" if killed() else "FINISHED")


def _tag_failure(client: Any, run_id: str | None, err: BaseException) -> None:
    """Why the run failed, as tag ``mnist_mlp.failure``: the UI shows it beside the status (a user
    error's message is the one the console printed; a full disk's, the ``OSError`` that the
    console's paragraph names, not the library error wrapped around it)."""
    if client is None or run_id is None:
        return
    cause = no_space(err) or err
    reason = str(err) if isinstance(err, UserError) else f"{type(cause).__name__}: {cause}"
    try:
        client.set_tag(run_id, FAILURE_TAG, reason[:5000])
    except Exception as tag_err:  # noqa: BLE001  (never hide the error that ended the run)
        log.warning("Could not tag MLflow run %s with its failure: %s", run_id, tag_err)
