"""The search's MLflow side: its parent run shows the study, each trial's run its final state.

The parent run is the sweep's (``tracking.sweep.SweepParentRun``), renamed ``search <study>``. After
the last trial it gets, for the whole study (earlier invocations of a resumed study included):

* params ``best.<key>`` (the best trial's values), metrics ``best/<optimized_metric>``,
  ``trials/{total,complete,pruned,failed}`` and ``importance/<key>``, tags ``optuna.study``,
  ``optuna.storage``, ``optuna.best_trial`` and ``optuna.best_run`` (the best trial's run);
* artifacts ``study/``: ``trials.csv`` (Optuna's ``trials_dataframe``), ``study.md`` (best trial,
  importances, the trials table) and the figures of ``optuna.visualization.matplotlib``:
  ``optimization_history.png``, ``param_importances.png``, ``intermediate_values.png``.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mnist_mlp.atomic import write_files
from mnist_mlp.report.render import Section, to_markdown
from mnist_mlp.search.study import PRUNED_ATTR
from mnist_mlp.tracking.record import PARENT_TAG, RUN_NAME_TAG
from mnist_mlp.tracking.store import log_batch

log = logging.getLogger(__name__)

ARTIFACT_DIR = "study"
#: MLflow tags of a trial's run (its trial's number, study and final state) and of the parent run.
TRIAL_TAG, STUDY_TAG, STATE_TAG = "optuna.trial", "optuna.study", "optuna.state"
STORAGE_TAG, BEST_TRIAL_TAG, BEST_RUN_TAG = "optuna.storage", "optuna.best_trial", "optuna.best_run"


def name_parent(client: Any, parent_id: str, study_name: str, storage_url: str) -> None:
    """The sweep's parent run as the search's: named after the study, tagged with where it lives."""
    for key, value in ((RUN_NAME_TAG, f"search {study_name}"), (STUDY_TAG, study_name),
                       (STORAGE_TAG, storage_url)):
        client.set_tag(parent_id, key, value)


def _trial_runs(client: Any, parent: Any, study_name: str) -> dict[int, Any]:
    """This study's trial runs in the parent's experiment, by trial number (newest run wins)."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{TRIAL_TAG}` != ''",
        order_by=["attributes.start_time ASC"],
    )
    return {int(r.data.tags[TRIAL_TAG]): r for r in runs}


def tag_states(client: Any, parent_id: str, study_name: str, states: Mapping[int, str]) -> None:
    """``optuna.state`` (COMPLETE, PRUNED, FAIL) on the runs of the trials just told."""
    runs = _trial_runs(client, client.get_run(parent_id), study_name)
    for number, state in states.items():
        run = runs.get(number)
        if run is not None and run.data.tags.get(PARENT_TAG) == parent_id:
            client.set_tag(run.info.run_id, STATE_TAG, state)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else ""
    return "" if x is None else str(x)


def _table(study: Any) -> tuple[list[str], list[list[str]]]:
    keys = sorted({k for t in study.trials for k in t.params})
    header = ["trial", "state", "value", "pruned at epoch", "seconds", *keys]
    rows = []
    for t in study.trials:
        seconds = t.duration.total_seconds() if t.duration else None
        pruned = t.user_attrs.get(PRUNED_ATTR)
        rows.append([str(t.number), t.state.name, _cell(t.value),
                     "" if pruned is None else str(pruned + 1), _cell(seconds),
                     *(_cell(t.params.get(k)) for k in keys)])
    return header, rows


def importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator); empty with too few finished trials."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError) as err:
        log.warning("No parameter importances: %s", err)
        return {}


def _figure_png(draw: Callable[..., Any], study: Any, **kwargs: Any) -> bytes | None:
    """One ``optuna.visualization.matplotlib`` plot as PNG; None where the study cannot draw it.

    Optuna's plots switch pyplot's global style (``plt.style.use``): ``rc_context`` undoes that,
    so the reports drawn later in the same process look as always.
    """
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", module=r"optuna\.")  # e.g. "importances will be equal"
        try:
            ax = draw(study, **kwargs)
        except (ValueError, RuntimeError) as err:
            log.warning("Figure %s skipped: %s", draw.__name__, err)
            return None
        fig = ax.figure
        try:
            fig.set_layout_engine("constrained")
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            return buf.getvalue()
        finally:
            plt.close(fig)


def write_study(study: Any, folder: Path, metric: str, weights: Mapping[str, float]) -> list[str]:
    """``trials.csv``, the figures and ``study.md`` into ``folder``; returns the figure names."""
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as vis

    files: dict[str, str | bytes] = {"trials.csv": study.trials_dataframe().to_csv(index=False)}
    named = {"target_name": metric}
    plots = [("optimization_history.png", vis.plot_optimization_history, named),
             ("param_importances.png", vis.plot_param_importances, named),
             ("intermediate_values.png", vis.plot_intermediate_values, {})]
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        log.warning("No trial of study %s finished: no figures.", study.study_name)
        plots = []
    figures = []
    for name, draw, kwargs in plots:
        png = _figure_png(draw, study, **kwargs)
        if png is not None:
            files[name] = png
            figures.append(name)
    files["study.md"] = study_markdown(study, metric, weights, figures)
    write_files(folder, files)
    return figures


def study_markdown(study: Any, metric: str, weights: Mapping[str, float], figures: list[str]) -> str:
    """The study as a page: best trial, importances, figures, every trial."""
    best = best_trial(study)
    if best is None:
        top = Section("Best trial", [("p", "No trial completed.")])
    else:
        top = Section("Best trial", [("p", f"Trial {best.number}: {metric} {best.value:.4f}."),
                                     ("table", ["key", "value"],
                                      [[k, _cell(v)] for k, v in best.params.items()])])
    parts = [top]
    if weights:
        rows = [[k, f"{v:.3f}"] for k, v in weights.items()]
        parts.append(Section("Parameter importances", [("table", ["key", "importance"], rows)]))
    parts.append(Section("Figures", [("img", f, f.removesuffix(".png").replace("_", " "))
                                     for f in figures]))
    parts.append(Section("Trials", [("table", *_table(study))]))
    return to_markdown(f"Study {study.study_name} ({study.direction.name.lower()} {metric})", parts)


def best_trial(study: Any) -> Any | None:
    """The study's best trial; None while no trial completed."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def log_study(client: Any, parent_id: str, study: Any, folder: Path, metric: str) -> None:
    """Everything of the module docstring into the parent run (files also kept in ``folder``)."""
    from optuna.trial import TrialState

    weights = importances(study)
    write_study(study, folder, metric, weights)
    counts = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    metrics = {"trials/total": len(study.trials), "trials/complete": counts[TrialState.COMPLETE],
               "trials/pruned": counts[TrialState.PRUNED], "trials/failed": counts[TrialState.FAIL],
               **{f"importance/{k}": v for k, v in weights.items() if _finite(v)}}
    best = best_trial(study)
    params = {}
    if best is not None:
        metrics[f"best/{metric}"] = best.value
        params = {f"best.{k}": v for k, v in best.params.items()}
        client.set_tag(parent_id, BEST_TRIAL_TAG, str(best.number))
        run = _trial_runs(client, client.get_run(parent_id), study.study_name).get(best.number)
        if run is not None:
            client.set_tag(parent_id, BEST_RUN_TAG, run.info.run_id)
    log_batch(client, parent_id, params=params, metrics=metrics)
    client.log_artifacts(parent_id, str(folder), ARTIFACT_DIR)
