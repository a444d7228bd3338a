"""The logged model's code (MLflow's "models from code"): MLflow runs this file to load the model.

Not imported by the package: ``mnist_mlp.tracking.model`` hands its path to
``mlflow.pyfunc.log_model(python_model=...)``, MLflow stores it as source beside the weights and
executes it at ``mlflow.pyfunc.load_model``. Nothing is unpickled: the weights are a state dict
read with ``torch.load(weights_only=True)``, the network's arguments and the normalisation JSON.

MLflow's classifier convention: ``predict`` returns one class per image (what
``mlflow.models.evaluate(model_type="classifier")`` and a scoring server's client expect);
``params={"output": "probabilities"}`` returns a DataFrame ``pred, prob_0 ... prob_9``, the
columns of the report's ``predictions.csv``.

The input is checked here, not by an MLflow input schema (docs/serving.md, "Input forms"): a
tensor schema accepts exactly one dtype, and a 784-column schema is enforced column by column at
many times the cost of the forward pass. Accepted: 784 pixel values (0-255, row-major) per row
as any numeric array, list or DataFrame (so a CSV, ``dataframe_split`` and ``inputs`` JSON), or
one column ``image`` holding each image's 784 raw bytes (base64 text in JSON, ``bytes``
in-process), the compact form. A bad input raises MLflow's INVALID_PARAMETER_VALUE, which the
scoring server answers with HTTP 400.
"""

import base64
import binascii
import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

PIXELS = 28 * 28
IMAGE_COLUMN = "image"  # tracking.serving.IMAGE_COLUMN (this file is not imported by the package)
OUTPUTS = ("class", "probabilities")
NO_IMAGES = f"No images in the input: give at least one image of {PIXELS} pixel values."


def _refuse(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def _image_column(model_input: Any) -> Any | None:
    """The ``image`` column of a dict or DataFrame holding only that column, else None."""
    if isinstance(model_input, dict):
        keys = list(model_input)
    elif isinstance(model_input, pd.DataFrame):
        keys = [str(c) for c in model_input.columns]
    else:
        return None
    if IMAGE_COLUMN not in keys:
        return None
    if keys != [IMAGE_COLUMN]:
        raise _refuse(f"Give the column {IMAGE_COLUMN!r} alone (got columns {keys[:5]}): one "
                      f"image's {PIXELS} raw bytes per row, base64-encoded in JSON.")
    return model_input[IMAGE_COLUMN]


def _decode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _refuse(f"{IMAGE_COLUMN!r} values must be base64 text of {PIXELS} bytes; "
                          f"{value[:20]!r}... is not base64.") from None
    raise _refuse(f"{IMAGE_COLUMN!r} values must be base64 text (JSON) or bytes, got "
                  f"{type(value).__name__}.")


def _from_bytes(column: Any) -> np.ndarray:
    images = [_decode(v) for v in np.asarray(column, dtype=object).reshape(-1)]
    if not images:
        raise _refuse(NO_IMAGES)
    sizes = {len(b) for b in images}
    if sizes - {PIXELS}:
        raise _refuse(f"Each {IMAGE_COLUMN!r} value must hold {PIXELS} bytes (28x28 grey levels, "
                      f"row-major), got {sorted(sizes - {PIXELS})[:3]} bytes.")
    return np.frombuffer(b"".join(images), dtype=np.uint8).reshape(len(images), PIXELS)


def _from_values(model_input: Any) -> np.ndarray:
    try:
        pixels = np.asarray(model_input)
    except ValueError as err:  # ragged lists
        raise _refuse(f"Images must be rows of {PIXELS} numbers: {err}") from None
    if pixels.size == 0:
        raise _refuse(NO_IMAGES)
    if not np.issubdtype(pixels.dtype, np.number):
        raise _refuse(f"Pixel values must be numbers 0-255, got {pixels.dtype.name} values such "
                      f"as {pixels.reshape(-1)[:1].tolist()}.")
    if pixels.ndim != 2 or pixels.shape[1] != PIXELS:
        raise _refuse(f"Each image must be one row of {PIXELS} pixel values (28x28, row-major); "
                      f"got an input of shape {pixels.shape}. Reshape an N x 28 x 28 stack with "
                      "images.reshape(len(images), -1).")
    return pixels


class MnistClassifier(PythonModel):
    """Raw MNIST pixels in; the predicted class, or the 10 class probabilities, out."""

    def load_context(self, context: Any) -> None:
        from mnist_mlp.model import MnistMlp

        spec = json.loads(Path(context.artifacts["network"]).read_text())
        self.mean, self.std = float(spec["mean"]), float(spec["std"])
        self.net = MnistMlp(**spec["net"])
        self.net.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu",
                                            weights_only=True))
        self.net.eval()
        config = context.model_config  # logged by tracking.model, overridden by a server
        self.max_rows = int(config["max_rows"])
        if config.get("torch_threads"):  # a serving process's choice (0: leave a notebook's alone)
            torch.set_num_threads(int(config["torch_threads"]))

    def pixels(self, model_input: Any) -> np.ndarray:
        """The input as N x 784 raw pixel values, or MLflow's INVALID_PARAMETER_VALUE saying why."""
        column = _image_column(model_input)
        pixels = _from_values(model_input) if column is None else _from_bytes(column)
        if len(pixels) > self.max_rows:
            raise _refuse(f"{len(pixels)} images in one request; this model takes at most "
                          f"{self.max_rows} (model_config max_rows; `python serve.py max_rows=...`). "
                          "Split the input into smaller requests.")
        if not np.isfinite(pixels).all():
            raise _refuse("Pixel values must be finite numbers 0-255 (found NaN or infinity).")
        return pixels

    # MLflow derives no schema from a DataFrame hint and checks nothing against it: the input
    # forms are checked by `pixels`. (No __future__ annotations here: MLflow reads the real type.)
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> Any:
        output = (params or {}).get("output", "class")
        if output not in OUTPUTS:
            raise _refuse(f"params output={output!r}: give one of {', '.join(OUTPUTS)}.")
        x = torch.from_numpy(self.pixels(model_input).astype(np.float32, copy=False))
        with torch.inference_mode():  # the data module's normalisation, then the network
            logits = self.net((x / 255.0 - self.mean) / self.std)
        if output == "class":
            return logits.argmax(dim=-1).numpy()
        probs = logits.softmax(dim=-1).numpy()
        return pd.DataFrame({"pred": logits.argmax(dim=-1).numpy(),
                             **{f"prob_{k}": probs[:, k] for k in range(probs.shape[1])}})


mlflow.models.set_model(MnistClassifier())
