"""The Optuna sweeper as Hydra sees it (``hydra/sweeper=optuna``); the search is ``mnist_mlp.search``.

Hydra imports every module of ``hydra_plugins`` when it starts (train.py, evaluate.py, compare.py),
so this one imports nothing heavy: Optuna and the search load in ``setup``, for a search only.
"""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Settings: ``conf/hydra/sweeper/optuna.yaml``, read from ``config.hydra.sweeper`` in ``setup``
    (the node ``mnist_mlp.search.check`` validated before anything was recorded)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.search: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from mnist_mlp.search.sweeper import OptunaSearch, TrialTask

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=TrialTask(task_function), config=config)
        self.search = OptunaSearch(config, self.launcher)

    def sweep(self, arguments: list[str]) -> Any:
        return self.search.sweep(arguments)
