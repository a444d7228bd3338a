"""Lightning's ``MLFlowLogger`` with the project's run-level switches and its outage buffer."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from mnist_mlp.tracking.offline import BufferedClient, is_remote
from mnist_mlp.tracking.store import fail_fast_http, unusable


class MlflowLogger(MLFlowLogger):
    """``MLFlowLogger`` that carries what ``mnist_mlp.tracking.run`` does with the run.

    A subclass rather than extra top-level keys, so the whole logger config is one ``_target_``
    that ``hydra.utils.instantiate`` builds; Lightning's own arguments pass through unchanged.

    Args:
        system_metrics: log MLflow's system metrics (CPU, memory, disk, network; GPU where
            ``nvidia-ml-py`` finds one) while the run is open.
        system_metrics_interval: seconds between two samples.
        registered_model_name: also register the logged model under this name (None: do not).
        buffer_dir, retry_seconds, request_timeout: for an ``http(s)`` tracking server, writes go
            through a ``tracking.offline.BufferedClient``: kept in ``buffer_dir`` while the server
            does not answer within ``request_timeout`` s, and retried every ``retry_seconds``.
            Lightning calls ``log_batch`` on every ``log_metrics``, so the epoch metrics survive an
            outage, and so do the project's own writes (``TrackedRun`` uses ``experiment``).

    ``owned``: set by ``mnist_mlp.tracking.run`` when it ends the run itself (after the test, the
    report and the model are logged); ``finalize`` then leaves a successful run RUNNING instead of
    closing it after ``fit`` and again after ``test`` (which also stopped the system-metrics
    monitor after fit). Failures are still closed at once.
    """

    def __init__(self, *args: Any, system_metrics: bool = True, system_metrics_interval: float = 5.0,
                 registered_model_name: str | None = None, buffer_dir: str | None = None,
                 retry_seconds: float = 10.0, request_timeout: int = 10, **kwargs: Any) -> None:
        try:
            super().__init__(*args, **kwargs)  # opens a local (SQLite) store
        except TypeError:  # an argument it does not take: config.build names it
            raise
        except Exception as err:  # noqa: BLE001  (SQLAlchemy's, MLflow's: no usable store)
            raise unusable(kwargs.get("tracking_uri") or "(MLflow's default)", err) from None
        self.system_metrics = system_metrics
        self.system_metrics_interval = float(system_metrics_interval)
        self.registered_model_name = registered_model_name
        self.owned = False
        if buffer_dir and is_remote(self._tracking_uri):
            fail_fast_http(request_timeout)
            self._mlflow_client = BufferedClient(self._mlflow_client, buffer_dir, retry_seconds)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """As Lightning's, without its ``get_run`` (a read the server may not answer), and leaving
        a successful ``owned`` run open."""
        if not self._initialized:
            return
        status = {"success": "FINISHED", "failed": "FAILED", "finished": "FINISHED"}.get(status, status)
        if self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        if not (self.owned and status == "FINISHED"):
            self.experiment.set_terminated(self.run_id, status)
