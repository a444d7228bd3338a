"""The search's settings checked before anything is recorded: one paragraph and exit 2 on bad input.

Hydra calls ``SearchCheck.on_multirun_start`` before ``SweepParentRun``'s (``conf/hparams_search/
optuna.yaml`` lists it first), so a bad search space, sampler, pruner or storage stops the search
before its MLflow parent run or its study exists. Every corner of the space (both ends of each range,
every choice) is put through train.py's own value checks (``mnist_mlp.validation``), and trials'
configs are composed as the launcher will compose them, with every option of a searched group.
"""

from __future__ import annotations

import re
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from mnist_mlp import validation
from mnist_mlp.errors import UserError, exit_on_user_error
from mnist_mlp.search import space as search_space
from mnist_mlp.search.study import check_resumable, open_storage

SWEEPER = "hydra_plugins.mnist_mlp_search.optuna_sweeper.OptunaSweeper"
#: What the sweeper sets in each trial's config (conf/hparams_search/optuna.yaml declares them).
TRIAL_KEY, STUDY_KEY = "optuna.trial", "optuna.study_name"
_DIRECTIONS = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}


def direction(value: Any) -> str:
    """``maximize`` or ``minimize`` from ``hydra.sweeper.direction`` (max/min as checkpoints say)."""
    if str(value).lower() not in _DIRECTIONS:
        raise UserError(
            f"hydra.sweeper.direction={value!r} is not a direction: give maximize or minimize (by "
            "default it follows callbacks.model_checkpoint.mode, max or min)."
        )
    return _DIRECTIONS[str(value).lower()]


def _counts(sweeper: DictConfig) -> None:
    for key, low in (("n_trials", 1), ("n_jobs", 1)):
        value = sweeper.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"hydra.sweeper.{key}={value!r} is not allowed: it must be an integer "
                            f">= {low}. Set e.g. hydra.sweeper.{key}=4.")
    rate = sweeper.get("max_failure_rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
        raise UserError(f"hydra.sweeper.max_failure_rate={rate!r} is not allowed: it must be a "
                        "number in [0, 1] (the share of failed trials at which the search stops).")


def build(sweeper: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.sweeper.sampler`` or ``.pruner`` built from its ``_target_``, or a UserError."""
    import optuna
    from hydra._internal.utils import _locate
    from hydra.utils import instantiate

    base = {"sampler": optuna.samplers.BaseSampler, "pruner": optuna.pruners.BasePruner}[key]
    node = sweeper.get(key)
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    group = f"hydra/sweeper/{key}"
    try:
        cls = _locate(str(target))  # what instantiate uses (hydra.utils.get_class logs an ERROR)
    except Exception:  # noqa: BLE001  (ImportError or ValueError)
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise UserError(
            f"hydra.sweeper.{key}._target_={target!r} is not an Optuna {key}: choose one of "
            f"conf/{group}/ ({group}=...) or name a class of optuna.{key}s."
        )
    try:
        return instantiate(node, **kwargs)
    except Exception as err:  # noqa: BLE001  (a wrong argument: TypeError, ValueError...)
        cause = err.__cause__ or err
        raise UserError(
            f"hydra.sweeper.{key} ({target}) cannot be built: {type(cause).__name__}: "
            f"{_sentence(str(cause).splitlines()[0]) if str(cause) else ''}. Fix its keys "
            f"(conf/{group}/) and run again."
        ) from None


def _rule_refusal(key: str, value: Any) -> str | None:
    """What train.py allows for ``key`` when ``value`` is outside it (``validation.RULES``)."""
    one = OmegaConf.create()
    OmegaConf.update(one, key, value, force_add=True)
    try:
        validation.check_values(one)
    except UserError:
        return next(r.allowed for r in validation.RULES if r.key == key)
    return None


def check_values(space: search_space.SearchSpace) -> None:
    """Every corner of every range lies where train.py accepts the key's value."""
    for key, entry in space.entries.items():
        for value in entry.corners():
            allowed = _rule_refusal(key, value)
            if allowed:
                raise UserError(
                    f"The search space's {key}={entry.spec} ({entry.origin}) reaches {value!r}, "
                    f"which train.py refuses for {key} (it must be {allowed}): narrow the range to "
                    "what it accepts. Nothing was run or recorded."
                )


def _sentence(text: str) -> str:
    return " ".join(text.split()).rstrip(".")


def _composition_error(space: search_space.SearchSpace, err: Exception,
                       overrides: list[str]) -> UserError:
    text = _sentence(str(err).split("Config search path:")[0])
    groups = [o for o in overrides if "/" in o.split("=", 1)[0]]
    given = f" (with {' '.join(groups)})" if groups else ""
    keys = [k for k in space.entries if re.search(rf"'{re.escape(k)}[/']", str(err))]
    if not keys:
        return UserError(f"A trial's config cannot be composed: {text}. Fix the overrides and run "
                         "again; nothing was run or recorded.")
    entry = space.entries[keys[0]]
    problem = (f"{entry.key} is not a key of the training config{given}"
               if "Could not override" in text else text)
    return UserError(
        f"The search space's {entry.key}={entry.spec} ({entry.origin}) does not fit the training "
        f"config: {problem}. Search keys that train.py has (python train.py --cfg job lists them; "
        "a group such as model/scheduler takes the option names of its conf/ folder); nothing was "
        "run or recorded."
    )


def _compose(config: DictConfig, space: search_space.SearchSpace, corner: list[str]) -> DictConfig:
    from hydra import compose

    base = [*space.fixed, f"{TRIAL_KEY}=0", f"{STUDY_KEY}=check"]
    try:
        return compose(config_name=config.hydra.job.config_name, overrides=[*base, *corner])
    except HydraException as err:
        if f"'{TRIAL_KEY}'" in str(err):
            raise UserError(
                "hydra/sweeper=optuna needs the trial keys of hparams_search=optuna: run the "
                "search as python train.py -m hparams_search=optuna [overrides]."
            ) from None
        raise _composition_error(space, err, corner) from None


def _check_values_not_nodes(base: DictConfig, space: search_space.SearchSpace) -> None:
    """No searched key names a whole node (``model.net``): an override would replace the node."""
    for key, entry in space.entries.items():
        node = (OmegaConf.select(base, key, default=None, throw_on_resolution_failure=False)
                if "/" not in key else None)
        if OmegaConf.is_config(node):
            raise UserError(
                f"The search space's {key}={entry.spec} ({entry.origin}) names a config node, not "
                f"a value: search one of its keys ({key}.<key>) or, for a config group, "
                f"{key.replace('.', '/')}=choice(...). Nothing was run or recorded."
            )


def check_trial_configs(config: DictConfig, space: search_space.SearchSpace) -> None:
    """Compose trials' configs (every group option once) and run train.py's checks on them.

    ``config`` (the multirun's) is the trials' config without the searched values (Hydra leaves
    sweeps out of it); the searched values' ranges are ``check_values``' job.
    """
    _check_values_not_nodes(config, space)
    for overrides in space.composed_overrides():
        cfg = _compose(config, space, overrides)
        validation.check_values(cfg)
        validation.check_manual_optimization(cfg)
        validation.check_targets(cfg)


def check_search(config: DictConfig) -> search_space.SearchSpace:
    """All of the search's settings, cheapest first; the storage (a connection) last."""
    sweeper = config.hydra.sweeper
    _counts(sweeper)
    wanted = direction(sweeper.direction)
    space = search_space.parse(sweeper.get("params"), list(config.hydra.overrides.task))
    check_values(space)
    check_trial_configs(config, space)
    build(sweeper, "sampler")
    build(sweeper, "pruner")
    storage = open_storage(sweeper.storage)
    if sweeper.get("study_name"):
        check_resumable(storage, sweeper.study_name, wanted, space.distributions)
    return space


class SearchCheck(HydraCallback):
    """Hydra callback: ``check_search`` before the multirun records anything."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.sweeper._target_") != SWEEPER:
            return
        with exit_on_user_error():  # the same words and exit status as train.py's
            check_search(config)
