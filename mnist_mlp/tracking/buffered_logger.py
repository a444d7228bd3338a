"""Lightning's MLflow logger, writing through ``offline.BufferedClient`` (``conf/logger/mlflow.yaml``)."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from mnist_mlp.tracking.logger import MlflowLogger
from mnist_mlp.tracking.offline import BufferedClient, is_remote


class BufferedMLFlowLogger(MlflowLogger):
    """Lightning's ``MLFlowLogger`` writing through a ``BufferedClient`` to an ``http(s)`` server.

    Lightning calls ``log_batch`` on every ``log_metrics``; with this client those calls, and the
    project's own writes (``TrackedRun`` uses ``logger.experiment``), survive an outage. The run is
    still created directly: the store is checked before training (``store.open_store``).
    """

    def __init__(self, *args: Any, buffer_dir: str | None = None, retry_seconds: float = 10.0,
                 request_timeout: int = 10, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if buffer_dir and is_remote(self._tracking_uri):
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(request_timeout)))
            self._mlflow_client = BufferedClient(self._mlflow_client, buffer_dir, retry_seconds)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """As Lightning's, without its ``get_run`` (a read the server may not answer); a successful
        run that ``tracking.run`` ends itself stays open (``MlflowLogger.owned``)."""
        if not self._initialized:
            return
        status = {"success": "FINISHED", "failed": "FAILED", "finished": "FINISHED"}.get(status, status)
        if self._checkpoint_callback:
            self._scan_and_log_checkpoints(self._checkpoint_callback)
        if not (self.owned and status == "FINISHED"):
            self.experiment.set_terminated(self.run_id, status)
