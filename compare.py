"""Compare tested runs: ``python compare.py [runs=<sweep parent id> | 'runs=[<id>,...]']``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_mlp import cli, speed  # the package registers the ${repo_root:} resolvers of conf/


@hydra.main(version_base="1.3", config_path="conf", config_name="compare")
def main(cfg: DictConfig) -> None:
    cli.compare(cfg)


if __name__ == "__main__":
    with speed.command():  # a quick exit: no teardown of the modules
        cli.refuse_null_groups(sys.argv[1:], Path(__file__).with_name("conf"))
        main()
