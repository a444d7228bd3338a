"""Compare tested runs: ``python compare.py [runs=<sweep parent id> | 'runs=[<id>,...]']``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import mnist_mlp  # noqa: F401  (registers the ${repo_root:} resolvers)
from mnist_mlp.report.comparison_store import compare_cli
from mnist_mlp.speed import skip_final_collection


@hydra.main(version_base="1.3", config_path="conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    compare_cli(cfg)


if __name__ == "__main__":
    try:
        main()
    finally:
        skip_final_collection()
