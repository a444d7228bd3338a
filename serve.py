"""Serve a logged model over HTTP on loopback: ``python serve.py model_uri=runs:/<run id>/model``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mnist_mlp import cli  # the package registers the ${repo_root:} resolvers of conf/


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    cli.serve(cfg)


if __name__ == "__main__":
    main()
