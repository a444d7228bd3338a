"""MLflow stores for tests: a SQLite file copied from one schema-initialised template.

Creating MLflow's schema (its Alembic migrations) costs seconds of CPU per store; a copy of a
store that has it costs milliseconds. The template is made once per process, on first use.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def template_db() -> Path:
    from mlflow import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="mnist-mlp-store-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates the schema
    return db


def new_store(folder: Path) -> str:
    """A ready SQLite store at ``folder/mlruns/mlflow.db`` (kept if there is one); its URI."""
    db = folder / "mlruns" / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(template_db(), db)
    return f"sqlite:///{db}"
