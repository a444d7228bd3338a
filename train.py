"""Train the HW9 MNIST MLP: ``python train.py [key=value ...]``; ``-m`` sweeps."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_mlp import cli  # the package registers the ${repo_root:} resolvers of conf/
from mnist_mlp.speed import skip_final_collection


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return cli.train(cfg)


if __name__ == "__main__":
    try:
        main()
    finally:
        skip_final_collection()
