"""Hyperparameter search with Optuna through Hydra: ``python train.py -m hparams_search=optuna``.

One module per job:

* ``space``: the search space in Hydra's sweep syntax as Optuna distributions, trials as overrides;
* ``check``: every setting checked before the sweep records anything (``SearchCheck``);
* ``study``: the study's RDB storage, opened by the sweeper and by each trial's job;
* ``sweeper``: ask ``n_jobs`` trials, launch them through the configured Hydra launcher, tell;
* ``pruning``: in each trial's job, report every epoch and stop when the pruner says so;
* ``record``: the study in the search's MLflow parent run, each trial's state on its run.

The Hydra plugin itself (``hydra/sweeper=optuna``) is ``hydra_plugins/mnist_mlp_search``.
"""
