"""The MLflow side of every run: what is recorded, how runs are grouped and how they end.

Lightning's ``MLFlowLogger`` (``conf/logger/mlflow.yaml``) creates the run and logs the epoch
metrics; this package adds what it does not, one module per job:

* ``store``: the store checked before training (a server that is down is reported in seconds),
  batched writes, and how a run is closed (FINISHED, FAILED or KILLED);
* ``naming``: every tag key and run name;
* ``record``: the resolved config as dotted params, git state, Hydra's overrides;
* ``run``: one training job's run (params, tags, config files, report, best checkpoint, model);
* ``sweep``: a parent run per Hydra multirun;
* ``evaluation``: ``evaluate.py run_id=<id>``'s checkpoint download and its new, linked run;
* ``logger``: ``MLFlowLogger`` with the run-level switches of ``conf/logger/mlflow.yaml``;
* ``datasets``: MNIST's splits as the run's dataset inputs;
* ``system``: MLflow's system-metrics monitor for the run;
* ``describe``: the run's description, its headline;
* ``model`` (with ``served_model``, the model's code): the network as a pickle-free pyfunc model;
* ``ui``: the MLflow UI's address of the runs table (``make ui``);
* ``offline``, ``buffered_logger``, ``sync``: a tracking server that stops answering mid-run costs
  nothing: writes are kept in the run's output folder and sent when it answers again, or later by
  ``python -m mnist_mlp.tracking.sync <output dir>``.

Layout in the store (``logger.tracking_uri``, experiment ``logger.experiment_name``):

* one run per training job, tagged ``mnist_mlp.role=train``; artifacts ``config.yaml``,
  ``overrides.yaml``, ``report/*``, ``checkpoints/<best>.ckpt``; the model as logged model ``model``
  (``mlflow.pyfunc.load_model("runs:/<run_id>/model")``); dataset inputs, system metrics and a
  description;
* a Hydra multirun adds one parent run (``mnist_mlp.role=sweep``, named after the sweep overrides)
  and nests each job under it (``mlflow.parentRunId``); jobs are named by their swept values
  (``lr=0.01,seed=1``) and share the tag ``sweep.dir``;
* ``evaluate.py run_id=<id>`` records into a *new* run nested under the evaluated run
  (``mnist_mlp.role=evaluate``, ``mnist_mlp.evaluates=<id>``): recorded runs are never changed.
"""

from mnist_mlp.tracking.evaluation import EvaluationRun, evaluation_run, run_checkpoint
from mnist_mlp.tracking.naming import (
    BEST_CKPT_TAG,
    CKPT_DIR,
    EVALUATES_TAG,
    MODEL_NAME,
    PARENT_TAG,
    REPORT_DIR,
    ROLE_TAG,
    RUN_NAME_TAG,
    SWEEP_DIR_TAG,
    SWEEP_JOB_TAG,
    SWEEP_KEYS_TAG,
    job_run_name,
    single_run_name,
    swept_keys,
)
from mnist_mlp.tracking.record import config_params, git_tags
from mnist_mlp.tracking.run import TrackedRun, tracked_run
from mnist_mlp.tracking.store import end_run, ending, log_batch, open_store
from mnist_mlp.tracking.sweep import SweepParentRun, find_sweep_parent

__all__ = [
    "BEST_CKPT_TAG", "CKPT_DIR", "EVALUATES_TAG", "MODEL_NAME", "PARENT_TAG", "REPORT_DIR",
    "ROLE_TAG", "RUN_NAME_TAG", "SWEEP_DIR_TAG", "SWEEP_JOB_TAG", "SWEEP_KEYS_TAG",
    "EvaluationRun", "SweepParentRun", "TrackedRun", "config_params", "end_run", "ending",
    "evaluation_run", "find_sweep_parent", "git_tags", "job_run_name", "log_batch", "open_store",
    "run_checkpoint", "single_run_name", "swept_keys", "tracked_run",
]
