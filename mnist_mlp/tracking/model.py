"""The network as an MLflow model that loads without unpickling code and serves raw pixels.

Format: MLflow's "models from code" pyfunc (``served_model.py`` is stored as source and run at
load time) with the weights as a state dict read by ``torch.load(weights_only=True)``. Chosen over

* ``mlflow.pytorch`` with ``serialization_format="pickle"``: unpickles (runs) arbitrary code;
* ``mlflow.pytorch`` with ``serialization_format="pt2"`` (``torch.export``): also pickle-free, but
  its pyfunc needs a float32 tensor signature of one fixed rank, so ``mlflow models predict`` on a
  CSV (read by pandas as int64/float64) is refused, the caller has to normalise the pixels, and it
  loaded slower (docs, Tracking: load times of the three formats).

Signature: no input schema (``served_model`` checks the input, docs/serving.md says why), the
predicted class out (int64, one per image), and the param ``output`` (``class``, or
``probabilities`` for ``pred, prob_0 ... prob_9``). ``model_config``: ``max_rows`` bounds the images
of one call, ``torch_threads`` (0: leave torch's setting) sets torch's CPU threads (not ``threads``:
MLflow logs these keys as the run's params too, beside the training's ``threads``); a scoring server
overrides both (``tracking.serving``), as MLflow lets only logged keys be overridden.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mnist_mlp.tracking.record import MODEL_NAME

SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")


MAX_ROWS = 10_000  # images per call: the whole test set in one request, no more
PIXEL_COLUMNS = [f"pixel_{i}" for i in range(28 * 28)]


def _signature() -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(inputs=None, outputs=Schema([TensorSpec(np.dtype(np.int64), (-1,))]),
                          params=ParamSchema([ParamSpec("output", "string", "class")]))


def raw_pixels(datamodule: Any, split: str = "test", n: int | None = None) -> Any:
    """The first ``n`` images of ``split`` (all: None) as N x 784 uint8 pixels, as in the IDX file.

    The data module holds the file's bytes. A copy: a saved view would carry the whole split.
    """
    datamodule.setup(split)
    return datamodule.tensors[split][0][:n].cpu().clone()


def evaluation_frame(datamodule: Any) -> Any:
    """The test set as MLflow's evaluator takes it: ``pixel_0 ... pixel_783`` and ``label``."""
    import pandas as pd

    frame = pd.DataFrame(raw_pixels(datamodule).numpy(), columns=PIXEL_COLUMNS)
    frame["label"] = datamodule.tensors["test"][1].cpu().numpy().astype("int64")
    return frame


def model_payload(module: Any, datamodule: Any, n_examples: int = 2) -> dict[str, Any]:
    """Everything the logged model is made of, as plain values and CPU tensors.

    The weights, the network's arguments (the module's own ``net`` hyperparameters, as a
    checkpoint rebuilds it), the data module's normalisation and, as input example, the first test
    images as raw pixels. Plain, so a tracking outage can keep it on disk (``tracking.offline``)
    and ``torch.load(weights_only=True)`` reads it back.
    """
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()},
        "net": {k: v for k, v in module.hparams["net"].items() if not k.startswith("_")},
        "mean": float(datamodule.mean), "std": float(datamodule.std),
        "example": raw_pixels(datamodule, "test", n_examples),
    }


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}", f"omegaconf=={version('omegaconf')}",
            f"mlflow=={version('mlflow')}", f"pandas=={version('pandas')}"]


def log_model(run_id: str, tracking_uri: str, payload: dict[str, Any],
              registered_model_name: str | None = None) -> Any:
    """Log ``payload`` (``model_payload``) as logged model ``model`` of ``run_id``; registered
    under ``registered_model_name`` when one is given.

    ``mlflow.pyfunc.log_model`` files the model under the active run, so the run is resumed for
    the call (its final status is set by ``tracking.store.ending``). Requirements are given, not
    inferred (inference loads the model in a subprocess: seconds); the package goes along as code
    so the model loads where this project is not installed.
    """
    import mlflow
    import pandas as pd
    import torch

    spec = {"net": payload["net"], "mean": payload["mean"], "std": payload["std"]}
    # The images as a CSV or `dataframe_split` JSON holds them: what `mlflow models predict` takes.
    example = pd.DataFrame(payload["example"].reshape(len(payload["example"]), -1).numpy(),
                           columns=PIXEL_COLUMNS)
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        weights, network = Path(tmp, "weights.pt"), Path(tmp, "network.json")
        torch.save(payload["state_dict"], weights)
        network.write_text(json.dumps(spec, indent=1))
        with mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=str(SERVED_MODEL_CODE),
                artifacts={"weights": str(weights), "network": str(network)},
                signature=_signature(), input_example=example,
                model_config={"max_rows": MAX_ROWS, "torch_threads": 0},
                pip_requirements=_requirements(), code_paths=[str(Path(__file__).parents[1])],
                registered_model_name=registered_model_name,
            )
