"""MLflow's system metrics (``system/...``) for a run opened by Lightning's logger, not ``start_run``.

``mlflow.start_run(log_system_metrics=True)`` starts the monitor only for the fluent active run,
which ``MLFlowLogger`` never creates; the monitor itself takes a run id, so it is started here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def system_metrics(run_id: str, tracking_uri: str, interval: float) -> Iterator[None]:
    """Sample CPU, memory, disk, network (and NVIDIA GPUs) every ``interval`` s while the block runs.

    The monitor's thread stops, and its last samples are written, before the block's caller
    closes the run. The monitor also stops by itself once the run is no longer RUNNING, which
    is why ``MlflowLogger`` leaves the run open after ``fit``. A monitor that cannot start costs
    the run nothing but a warning.
    """
    monitor = None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, tracking_uri=tracking_uri)
        monitor.start()
    except Exception as err:  # noqa: BLE001  (psutil missing, ...: train anyway)
        log.warning("System metrics are not recorded: %s", err)
        monitor = None
    try:
        yield
    finally:
        if monitor is not None:
            monitor.finish()
