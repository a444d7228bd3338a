"""The report's settings: the config group ``report``, built with ``instantiate`` and checked then.

Built before any training (``runner.run``, ``evaluate.py``), so a typo in a report setting costs no
training run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mnist_mlp.errors import UserError

#: Smallest allowed value of each whole-number setting.
_LOWEST = {"digits": 0, "bootstrap_resamples": 1, "bootstrap_seed": 0, "mistakes": 1}


@dataclass(frozen=True)
class Settings:
    """Where the report goes and its tunable numbers.

    Attributes:
        dir: the report folder (train.py: ``<run output>/report``).
        digits: decimals in ``classification_report.txt`` and the report's tables (JSON and CSV
            files are unrounded).
        bootstrap_resamples, bootstrap_seed: the percentile bootstrap of the macro F1-score.
        mistakes: images in each mistake grid.
        background: a training run writes the files in a worker process while it logs its
            checkpoint and model to MLflow (``report.background``); the same bytes either way.
    """

    dir: str | None = None
    digits: int = 4
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    mistakes: int = 25
    background: bool = True

    def __post_init__(self) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        for key, low in _LOWEST.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"report.{key}={value!r} is not allowed: it must be a whole number "
                                f">= {low} (default {defaults[key]}). Fix the value and run again.")
        if not isinstance(self.background, bool):
            raise UserError(f"report.background={self.background!r} is not allowed: it must be true "
                            "or false (default true). Fix the value and run again.")
