"""Test a checkpoint and write the report files: ``python evaluate.py ckpt_path=PATH.ckpt``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import mnist_mlp  # noqa: F401  (registers the ${repo_root:} resolvers)
from mnist_mlp.evaluation import evaluate_cli
from mnist_mlp.speed import skip_final_collection


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    return evaluate_cli(cfg)


if __name__ == "__main__":
    try:
        main()
    finally:
        skip_final_collection()
