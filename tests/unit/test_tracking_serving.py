"""``python serve.py`` (``make serve``) refuses what it cannot serve in one paragraph, exit 2, and
builds the MLflow command line and environment that work from a venv that is not activated."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from mnist_mlp import cli
from mnist_mlp.tracking import serving
from tests.helpers.configs import compose_job


def _serve_cfg(tmp_path: Path, *overrides: str):
    """What serve.py's Hydra app hands ``cli.serve``."""
    return compose_job(f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db", *overrides,
                       out=tmp_path, config="serve")


@pytest.mark.parametrize(("overrides", "needles"), [
    ([], ["Give the model to serve", "make serve MODEL=runs:/<run id>/model"]),
    (["model_uri=runs:/0123456789abcdef/model"],
     ["model_uri=runs:/0123456789abcdef/model is not a model in", "Run with id=0123456789abcdef",
      "make ui"]),
    (["model_uri=models:/nobody@champion"], ["models:/nobody@champion is not a model in",
                                             "logger.registered_model_name=<name>"]),
    (["model_uri=runs:/x/model", "port=70000"], ["port=70000 is not a TCP port"]),
    (["model_uri=runs:/x/model", "workers=0"], ["workers=0 must be 1 or more"]),
], ids=["no_model", "unknown_run", "unknown_alias", "port", "workers"])
def test_what_cannot_be_served_is_refused_in_one_paragraph(tmp_path, capsys, overrides, needles):
    cfg = _serve_cfg(tmp_path, *overrides)
    with pytest.raises(SystemExit) as done:
        cli.serve(cfg)
    assert done.value.code == 2
    err = capsys.readouterr().err
    error = err[err.index("error: "):]  # after MLflow's own log lines (a new store's tables)
    assert error.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in error, error


def test_the_command_finds_uvicorn_and_the_store_without_an_activated_venv():
    command = serving.server_command("models:/m@champion", "127.0.0.1", 5009, 2, 60)
    assert command[:3] == [str(Path(sys.executable).parent / "mlflow"), "models", "serve"]
    assert command[command.index("--env-manager") + 1] == "local"
    assert [command[command.index(f) + 1] for f in ("-h", "-p", "-w")] == ["127.0.0.1", "5009", "2"]
    env = serving.server_environment("sqlite:////x/mlflow.db", {"max_rows": 9, "torch_threads": None},
                                     base={"PATH": "/usr/bin:/bin", "HOME": "/root"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # uvicorn's
    assert env["PATH"].endswith("/usr/bin:/bin") and env["HOME"] == "/root"
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////x/mlflow.db"
    assert json.loads(env["SERVING_MODEL_CONFIG"]) == {"max_rows": 9}  # null: the model's own
