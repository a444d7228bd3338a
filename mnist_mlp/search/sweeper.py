"""The search loop: ask Optuna for ``n_jobs`` trials, launch them as ordinary jobs, tell the results.

Hydra's own Optuna sweeper (hydra-optuna-sweeper) cannot be used: 1.3 needs optuna < 3, whose SQL
storage breaks beside SQLAlchemy 2, and 1.4 exists only as release candidates that never hand the
trial to the job, so nothing can prune (docs/search.md). Here each trial is a job of whatever
``hydra/launcher`` is configured (basic, joblib, submitit), given its parameters as overrides plus
``optuna.trial`` and ``optuna.study_name``; in the job, ``mnist_mlp.search.pruning`` reports each
epoch to the same study in the RDB storage and stops the trial when the pruner says so.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mnist_mlp.errors import USER_ERROR_EXIT, UserError, exit_on_user_error
from mnist_mlp.search import check, record
from mnist_mlp.search import space as search_space
from mnist_mlp.search.study import PRUNED_ATTR, open_storage

log = logging.getLogger(__name__)

class TrialFailed(Exception):
    """A trial's job stopped with a user error; its ``error:`` paragraph was printed above."""


class TrialTask:
    """train.py's task function for a trial: exit status 2 becomes a failed trial, not a stopped search.

    ``runner.run_cli`` exits 2 on a user error, e.g. a loss that became NaN at a learning rate the
    search tried: in a search that is one failed trial. Hydra's launchers record an exception as
    a failed job but let ``SystemExit`` end the whole sweep, which is kept for Ctrl-C and SIGTERM.
    """

    def __init__(self, task_function: Callable[[DictConfig], Any]) -> None:
        self.task_function = task_function

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.task_function(cfg)
        except SystemExit as exit_:
            if exit_.code == USER_ERROR_EXIT:
                raise TrialFailed("train.py stopped with a user error (printed above)") from None
            raise


def _mlflow_parent(config: DictConfig) -> tuple[Any, str] | None:
    """The MLflow client and the sweep's parent run (``SweepParentRun``); None without tracking."""
    from mnist_mlp.tracking.store import open_store
    from mnist_mlp.tracking.sweep import find_sweep_parent

    lcfg = config.get("logger")
    if not lcfg or "tracking_uri" not in lcfg:
        return None
    client, experiment_id = open_store(lcfg.tracking_uri, lcfg.experiment_name,
                                       lcfg.get("artifact_location"))
    parent = find_sweep_parent(client, experiment_id, str(config.hydra.sweep.dir))
    if parent is None:
        log.warning("No sweep parent run: the study is not recorded in MLflow.")
        return None
    return client, parent.info.run_id


class OptunaSearch:
    """One invocation of the search: its settings are ``config.hydra.sweeper``, as ``check`` reads them."""

    def __init__(self, config: DictConfig, launcher: Any) -> None:
        self.config = config
        self.settings = config.hydra.sweeper
        self.launcher = launcher
        self.job_idx = 0

    def sweep(self, arguments: list[str]) -> Any:
        """Run the search; a user error is one paragraph on stderr and exit 2, as in train.py."""
        with exit_on_user_error():
            return self._sweep(arguments)

    def _study(self) -> Any:
        import optuna

        s = self.settings
        storage = open_storage(s.storage)
        done = 0
        if s.get("study_name"):
            try:
                done = len(storage.get_all_trials(storage.get_study_id_from_name(s.study_name)))
            except KeyError:
                done = 0
        # A resumed study must not replay the first trials' random start: its seed moves on.
        seed = OmegaConf.select(s, "sampler.seed", default=None)
        reseed = {"seed": seed + done} if isinstance(seed, int) and done else {}
        return optuna.create_study(
            storage=storage, study_name=s.get("study_name"), load_if_exists=True,
            sampler=check.build(s, "sampler", **reseed), pruner=check.build(s, "pruner"),
            direction=check.direction(s.direction))

    def _sweep(self, arguments: list[str]) -> list[Any]:
        space = search_space.parse(self.settings.get("params"), arguments)
        study = self._study()
        tracked = _mlflow_parent(self.config)
        if tracked:
            record.name_parent(*tracked, study.study_name, self.settings.storage)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("Study %s in %s: %d trials, %d at a time through %s", study.study_name,
                 self.settings.storage, self.settings.n_trials, self.settings.n_jobs,
                 type(self.launcher).__name__)
        start, returns, states, stop = time.perf_counter(), [], {}, None
        while len(states) < self.settings.n_trials and stop is None:
            batch = min(self.settings.n_jobs, self.settings.n_trials - len(states))
            told = self._run_batch(study, space, batch)
            states.update(told)
            returns.append(told)
            if tracked:
                record.tag_states(*tracked, study.study_name, told)
            stop = self._failing(study, list(states.values()))
        if tracked:
            record.log_study(*tracked, study, sweep_dir / record.ARTIFACT_DIR,
                             str(self.config.optimized_metric))
        self._summary(study, states, time.perf_counter() - start, record.best_trial(study))
        if stop is not None:
            raise stop
        return returns

    def _run_batch(self, study: Any, space: search_space.SearchSpace, batch: int) -> dict[int, str]:
        from optuna.trial import TrialState

        trials = [study.ask(space.distributions) for _ in range(batch)]
        overrides = [self._overrides(space, t, study.study_name) for t in trials]
        try:  # composed by the launcher (SearchCheck composed every group option before)
            results = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        except BaseException:  # Ctrl-C, SIGTERM: no trial of the batch stays RUNNING in the study
            for t in trials:
                study.tell(t, state=TrialState.FAIL, skip_if_finished=True)
            raise
        self.job_idx += len(results)
        # Read back what the jobs wrote (a Trial object keeps the state it was asked with).
        stored = {t.number: t for t in study.get_trials(deepcopy=False)}
        return {t.number: self._tell(study, t, r, stored[t.number].user_attrs)
                for t, r in zip(trials, results, strict=True)}

    def _overrides(self, space: search_space.SearchSpace, trial: Any, study_name: str) -> list[str]:
        return [*space.fixed, *(search_space.override(k, trial.params[k]) for k in space.entries),
                search_space.override(check.TRIAL_KEY, trial.number),
                search_space.override(check.STUDY_KEY, study_name)]

    def _tell(self, study: Any, trial: Any, result: Any, user_attrs: dict[str, Any]) -> str:
        from optuna.trial import TrialState

        try:
            value = result.return_value  # re-raises the job's exception (Hydra prints its overrides)
        except Exception as err:  # noqa: BLE001
            log.warning("Trial %d failed: %s: %s", trial.number, type(err).__name__, err)
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL.name
        if user_attrs.get(PRUNED_ATTR) is not None:
            study.tell(trial, state=TrialState.PRUNED)
            return TrialState.PRUNED.name
        if not isinstance(value, int | float) or not math.isfinite(value):
            log.warning("Trial %d returned %r for %s, not a number: told FAIL", trial.number, value,
                        self.config.optimized_metric)
            study.tell(trial, state=TrialState.FAIL)
            return TrialState.FAIL.name
        study.tell(trial, float(value))
        return TrialState.COMPLETE.name

    def _failing(self, study: Any, states: list[str]) -> UserError | None:
        """The error that stops the search once too many of its trials failed, else None."""
        failed, rate = states.count("FAIL"), self.settings.max_failure_rate
        if failed / len(states) <= rate:
            return None
        return UserError(
                f"{failed} of the {len(states)} trials run so far failed (their errors are printed "
                f"above), more than hydra.sweeper.max_failure_rate={rate}: the search stops. Fix "
                f"the cause, then add trials to the same study with "
                f"hydra.sweeper.study_name={study.study_name}."
            )

    def _summary(self, study: Any, states: dict[int, str], seconds: float, best: Any) -> None:
        counts = ", ".join(f"{sum(v == s for v in states.values())} {word}" for s, word in
                           (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed")))
        print(f"Search {study.study_name}: {len(states)} trials in {seconds:.0f} s ({counts}); "
              f"{len(study.trials)} in the study.")
        if best is not None:
            values = " ".join(search_space.override(k, v) for k, v in best.params.items())
            print(f"Best {self.config.optimized_metric} {best.value:.4f} (trial {best.number}): "
                  f"{values}")
        print(f"More trials for this study: add hydra.sweeper.study_name={study.study_name} to the "
              "same command.")
