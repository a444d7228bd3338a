"""The model registry: the versions a run's model became, and a sweep's ``champion``.

With ``logger.registered_model_name``, every training run's model becomes a new version of that
registered model (``tracking.model.log_model``). At the end of a multirun (a sweep or a search,
``tracking.sweep.SweepChampion``) the alias ``champion`` moves to the version of the sweep's best
run by ``optimized_metric``, so ``models:/<name>@champion`` names the model to serve;
``compare.py`` shows which version that is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHAMPION_TAG = "mnist_mlp.champion"  # on a sweep's parent run: models:/<name>/<version>


@dataclass(frozen=True)
class Champion:
    """The version the alias now points at, and why."""

    name: str
    version: str
    run_id: str
    metric: str
    score: float

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def run_versions(client: Any, run_id: str) -> list[Any]:
    """The registered model versions made from ``run_id``'s model (usually none or one), with
    their aliases (which ``search_model_versions`` leaves empty)."""
    return [client.get_model_version(v.name, v.version)
            for v in client.search_model_versions(f"run_id = '{run_id}'")]


def score(client: Any, run: Any, metric: str, mode: str, best_epoch: bool) -> float | None:
    """``metric`` of the run: its best epoch's value when the run's model holds the best
    checkpoint's weights (``test_ckpt=best``), else its last; None when the run has none."""
    if metric not in run.data.metrics:
        return None
    if not best_epoch:
        return float(run.data.metrics[metric])
    values = [m.value for m in client.get_metric_history(run.info.run_id, metric)]
    return float(max(values) if mode == "max" else min(values))


def set_champion(client: Any, runs: Sequence[Any], name: str, metric: str, mode: str = "max",
                 best_epoch: bool = True) -> Champion | None:
    """Point alias ``champion`` of ``name`` at the version of the best of ``runs``.

    Only runs with a version of ``name`` compete (a run whose model was never logged has none);
    ties go to the earlier run. None, and the alias untouched, when no run has both.
    """
    versions = {v.run_id: v for v in client.search_model_versions(f"name = '{name}'")}
    scored = []
    for order, run in enumerate(runs):
        value = score(client, run, metric, mode, best_epoch)
        if run.info.run_id in versions and value is not None:
            scored.append(((-value if mode == "max" else value), order, run, value))
    if not scored:
        log.warning("No run of this sweep has both %s and a version of registered model %s: "
                    "alias %s not set.", metric, name, CHAMPION)
        return None
    _, _, best, value = min(scored, key=lambda s: s[:2])
    version = versions[best.info.run_id].version
    client.set_registered_model_alias(name, CHAMPION, version)
    return Champion(name, str(version), best.info.run_id, metric, value)
