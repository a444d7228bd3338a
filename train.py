"""Train the HW9 MNIST MLP: ``python train.py [key=value ...]``; ``-m`` sweeps."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import mnist_mlp  # noqa: F401  (registers the ${repo_root:} resolvers)
from mnist_mlp.runner import run_cli
from mnist_mlp.speed import skip_final_collection


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_cli(cfg)


if __name__ == "__main__":
    try:
        main()
    finally:
        skip_final_collection()
