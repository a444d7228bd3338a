"""The network as an MLflow model that loads without unpickling code and serves raw pixels.

Format: MLflow's "models from code" pyfunc (``served_model.py`` is stored as source and run at
load time) with the weights as a state dict read by ``torch.load(weights_only=True)``. Chosen over

* ``mlflow.pytorch`` with ``serialization_format="pickle"``: unpickles (runs) arbitrary code;
* ``mlflow.pytorch`` with ``serialization_format="pt2"`` (``torch.export``): also pickle-free, but
  its pyfunc needs a float32 tensor signature of one fixed rank, so ``mlflow models predict`` on a
  CSV (read by pandas as int64/float64) is refused, the caller has to normalise the pixels, and it
  loaded slower (docs, Tracking: load times of the three formats).

Signature: 784 unnamed double columns (raw pixel values 0-255, row-major) in, 10 float32 class
probabilities out. Column-based, so a CSV of pixels, a DataFrame or an ``N×784`` array of uint8,
int32, float32 or float64 pass MLflow's schema check (it refuses int64 as a lossy cast); the check
also fixes the rank, so an ``N×28×28`` stack goes in as ``images.reshape(len(images), -1)``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from mnist_mlp.tracking.record import MODEL_NAME

SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")


def _signature(n_in: int, n_out: int) -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    return ModelSignature(inputs=Schema([ColSpec("double") for _ in range(n_in)]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_out))]))


def model_payload(module: Any, datamodule: Any, n_examples: int = 2) -> dict[str, Any]:
    """Everything the logged model is made of, as plain values and CPU tensors.

    The weights, the network's arguments (the module's own ``net`` hyperparameters, as a
    checkpoint rebuilds it), the data module's normalisation and, as input example, the first test
    images as raw pixels. Plain, so a tracking outage can keep it on disk (``tracking.offline``)
    and ``torch.load(weights_only=True)`` reads it back.
    """
    import torch

    x = datamodule.tensors["test"][0][:n_examples].detach().cpu()
    pixels = torch.round((x * datamodule.std + datamodule.mean) * 255).clamp(0, 255)
    return {
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.net.state_dict().items()},
        "net": {k: v for k, v in module.hparams["net"].items() if not k.startswith("_")},
        "mean": float(datamodule.mean), "std": float(datamodule.std),
        "example": pixels.to(torch.uint8),
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
    # Floats, as a CSV of pixels reads: the example shows what `mlflow models predict` takes.
    example = pd.DataFrame(payload["example"].double().numpy())
    n_in, n_out = example.shape[1], len(payload["state_dict"]["who.bias"])
    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        weights, network = Path(tmp, "weights.pt"), Path(tmp, "network.json")
        torch.save(payload["state_dict"], weights)
        network.write_text(json.dumps(spec, indent=1))
        with mlflow.start_run(run_id=run_id):
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=str(SERVED_MODEL_CODE),
                artifacts={"weights": str(weights), "network": str(network)},
                signature=_signature(n_in, n_out), input_example=example,
                pip_requirements=_requirements(), code_paths=[str(Path(__file__).parents[1])],
                registered_model_name=registered_model_name,
            )
