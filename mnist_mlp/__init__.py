"""The HW9 MNIST MLP as a Lightning + Hydra project with MLflow-tracked runs."""

from mnist_mlp import paths as _paths

_paths.register_resolvers()
