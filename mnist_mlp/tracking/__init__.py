"""The MLflow side of every run: what is recorded, how runs are grouped and how they end.

Lightning's ``MLFlowLogger`` (``conf/logger/mlflow.yaml``) creates the run and logs the epoch
metrics; this package adds what it does not, one module per job, each imported where it is used
(nothing is imported here, so ``python -m mnist_mlp.tracking.sync`` starts without torch):

* ``store``: the store checked before training (a server that is down is reported in seconds),
  batched writes, how a run is read and closed (FINISHED, FAILED or KILLED);
* ``record``: every tag key and run name; the resolved config as dotted params, git state, Hydra's
  overrides;
* ``run``: one training job's run (params, tags, config files, datasets, system metrics, report,
  best checkpoint, description, model);
* ``logger``: ``MLFlowLogger`` with the run-level switches and the outage buffer;
* ``datasets``: MNIST's splits as the run's dataset inputs;
* ``model`` (with ``served_model``, the model's code): the network as a pickle-free pyfunc model
  under MLflow's classifier convention (docs/serving.md);
* ``serving``: ``make serve``'s MLflow scoring server, checked, started and stopped;
* ``registry``: the registered versions of runs' models, and a sweep's alias ``champion``;
* ``sweep``: a parent run per Hydra multirun, and at its end the champion and the comparison;
* ``comparison``: which runs ``compare.py`` compares, their predictions, where the result goes;
* ``evaluation``: ``evaluate.py run_id=<id>``'s checkpoint download and its new, linked run,
  with MLflow's own evaluation of the run's model (``evaluate.mlflow_evaluator``);
* ``ui``: the MLflow UI's address of the runs table (``make ui``);
* ``offline``, ``journal``, ``sync``: a tracking server that stops answering mid-run costs
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
  (``mnist_mlp.role=evaluate``, ``mnist_mlp.evaluates=<id>``): recorded runs are never changed;
* with ``logger.registered_model_name``, each run's model is a version of that registered model;
  a multirun moves the alias ``champion`` and tags its parent ``mnist_mlp.champion``.
"""
