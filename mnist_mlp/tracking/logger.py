"""Lightning's ``MLFlowLogger`` with the run-level switches of ``conf/logger/mlflow.yaml``."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import MLFlowLogger


class MlflowLogger(MLFlowLogger):
    """``MLFlowLogger`` that also carries what ``mnist_mlp.tracking.run`` does with the run.

    A subclass rather than extra top-level keys, so the whole logger config is one ``_target_``
    that ``hydra.utils.instantiate`` builds; Lightning's own arguments pass through unchanged.

    Args:
        system_metrics: log MLflow's system metrics (CPU, memory, disk, network; GPU where
            ``nvidia-ml-py`` finds one) while the run is open.
        system_metrics_interval: seconds between two samples.
        registered_model_name: also register the logged model under this name (None: do not).

    ``owned``: set by ``mnist_mlp.tracking.run`` when it ends the run itself (after the test, the
    report and the model are logged); Lightning's ``finalize`` then leaves a successful run
    RUNNING instead of closing it after ``fit`` and again after ``test`` (which also stopped the
    system-metrics monitor after fit). Failures are still closed at once.
    """

    def __init__(self, *args: Any, system_metrics: bool = True, system_metrics_interval: float = 5.0,
                 registered_model_name: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.system_metrics = system_metrics
        self.system_metrics_interval = float(system_metrics_interval)
        self.registered_model_name = registered_model_name
        self.owned = False

    def finalize(self, status: str = "success") -> None:
        if not (self.owned and status in ("success", "finished")):
            super().finalize(status)
        elif self._initialized and self._checkpoint_callback:  # what finalize does besides ending
            self._scan_and_log_checkpoints(self._checkpoint_callback)
