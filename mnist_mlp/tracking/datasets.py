"""The run's inputs as MLflow datasets: MNIST's train, validation and test splits.

Logged with ``MlflowClient.log_inputs`` on the run id, since Lightning's logger opens no fluent
active run for ``mlflow.log_input``. Each split is an ``mlflow.data.meta_dataset.MetaDataset``:
metadata only (name, digest, source, schema), so nothing is decoded or copied to log it, and it is
logged before training, so a run that fails in epoch 3 still says what it trained on.

The digest is made of the MD5s the data module verified, plus for train and validation the split
(``data.val_size``, ``data.split_seed``): equal digests mean the same images in the same split.

Parallel jobs of one sweep log the same datasets into one experiment at the same moment. MLflow's
store looks a dataset up and inserts it if missing in one transaction, and two jobs can both miss
it: the second insert then fails on the store's unique key (SQLite ``UNIQUE constraint failed``,
PostgreSQL ``UniqueViolation``) and the transaction rolls back whole. ``log_datasets`` retries
that case; the retry finds the other job's row and only links it to this run.
"""

from __future__ import annotations

import hashlib
import random
import time
import warnings
from typing import Any

from mnist_mlp import fetch

CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}
ATTEMPTS = 5
# How the stores word a lost insert race on the datasets table: SQLite, PostgreSQL, MySQL.
_DUPLICATE_KEY = ("UNIQUE constraint failed", "UniqueViolation", "Duplicate entry")


def _digest(*parts: str) -> str:
    return hashlib.md5("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:16]


def _count(datamodule: Any, labels_key: str) -> int:
    labels = datamodule.raw_dir / fetch.FILES[labels_key][0]
    with open(labels, "rb") as f:
        return int.from_bytes(f.read(8)[4:8], "big")  # IDX header: magic, then the item count


def split_inputs(datamodule: Any) -> list[Any]:
    """One ``DatasetInput`` per split, tagged with its context and size, for ``log_inputs``."""
    import numpy as np
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    md5 = datamodule.checksums()  # verified by prepare_data; not read again
    with warnings.catch_warnings():  # the "" and file: schemes both name the same local source
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        source = resolve_dataset_source(datamodule.raw_dir.resolve().as_uri())
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, 28, 28), "image"),
                     TensorSpec(np.dtype(np.uint8), (-1,), "label")])
    split = (f"val_size={datamodule.val_size}", f"split_seed={datamodule.split_seed}")
    train_files = (md5["train_images"], md5["train_labels"])
    n_train = _count(datamodule, "train_labels")
    splits = {
        "train": (_digest(*train_files, *split, "train"), n_train - datamodule.val_size),
        "validation": (_digest(*train_files, *split, "validation"), datamodule.val_size),
        "test": (_digest(md5["test_images"], md5["test_labels"]), _count(datamodule, "test_labels")),
    }
    inputs = []
    for name, (digest, rows) in splits.items():
        dataset = MetaDataset(source, name=f"mnist-{name}", digest=digest, schema=schema)
        tags = [InputTag("mlflow.data.context", CONTEXTS[name]), InputTag("rows", str(rows))]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
    return inputs


def _lost_insert_race(error: Exception) -> bool:
    return any(words in str(error) for words in _DUPLICATE_KEY)


def log_datasets(client: Any, run_id: str, datamodule: Any) -> None:
    """MNIST's three splits as the run's dataset inputs (the UI's Dataset column and run page)."""
    from mlflow.exceptions import MlflowException

    inputs = split_inputs(datamodule)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except MlflowException as error:
            if attempt == ATTEMPTS or not _lost_insert_race(error):
                raise
            time.sleep(random.uniform(0.05, 0.2) * attempt)  # apart from the other losers
