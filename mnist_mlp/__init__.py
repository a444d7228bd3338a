"""The HW9 MNIST MLP as a Lightning + Hydra project with MLflow-tracked runs."""

import warnings as _warnings

from mnist_mlp import paths as _paths

_paths.register_resolvers()
# conf/hydra/launcher/{submitit_slurm,submitit_local,joblib}.yaml give every key of the launcher
# plugins' schemas of the same names; Hydra 1.3 still validates them against those schemas (the
# types are checked) but calls that deprecated at every composition.
_warnings.filterwarnings(
    "ignore",
    message=r"\s*'hydra/launcher/(submitit_\w+|joblib)' is validated against ConfigStore schema")
