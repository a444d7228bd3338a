"""The logged model's code (MLflow's "models from code"): MLflow runs this file to load the model.

Not imported by the package: ``mnist_mlp.tracking.model`` hands its path to
``mlflow.pyfunc.log_model(python_model=...)``, MLflow stores it as source beside the weights and
executes it at ``mlflow.pyfunc.load_model``. Nothing is unpickled: the weights are a state dict
read with ``torch.load(weights_only=True)``, the network's arguments and the normalisation JSON.
"""

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel


class MnistClassifier(PythonModel):
    """Raw MNIST pixels (0-255, 784 per image, row-major) in, the 10 class probabilities out."""

    def load_context(self, context: Any) -> None:
        from mnist_mlp.model import MnistMlp

        spec = json.loads(Path(context.artifacts["network"]).read_text())
        self.mean, self.std = float(spec["mean"]), float(spec["std"])
        self.net = MnistMlp(**spec["net"])
        self.net.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu",
                                            weights_only=True))
        self.net.eval()

    # A DataFrame hint is what MLflow passes after checking the signature, and one it derives
    # no second signature from. (No __future__ annotations here: MLflow reads the real type.)
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> np.ndarray:
        pixels = np.asarray(model_input, dtype=np.float32)
        x = torch.from_numpy(pixels.reshape(len(pixels), -1))
        with torch.inference_mode():  # the data module's normalisation, then the network
            return self.net((x / 255.0 - self.mean) / self.std).softmax(dim=-1).numpy()


mlflow.models.set_model(MnistClassifier())
