"""Shared fixtures: a small synthetic MNIST written in the real IDX format, and an MLflow store."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnist_mlp import fetch, idx  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")


def ctrl_c_as_in_a_terminal() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT, as Ctrl-C in a terminal does.

    A shell starts background jobs with SIGINT ignored, and Python then keeps ignoring it, so a
    test runner started that way would see its train.py shrug off the signal.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def synthetic_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as bright 7x7 blocks at a class-specific place over noise: learnt in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 4)
        images[i, 2 + 8 * r : 9 + 8 * r, 2 + 6 * c : 9 + 6 * c] = 255
    return images, labels


def write_synthetic_mnist(data_dir: Path, n_train: int = 600, n_test: int = 200, seed: int = 0):
    """Write the four IDX files into ``data_dir/MNIST/raw``; return their MD5s (config keys)."""
    raw = fetch.raw_dir(data_dir)
    raw.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = synthetic_arrays(n, seed + (split == "test"))
        for kind, array in (("images", images), ("labels", labels)):
            path = raw / fetch.FILES[f"{split}_{kind}"][0]
            idx.write(path, array)
            md5s[f"{split}_{kind}"] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5s


@pytest.fixture
def synthetic_mnist(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    data_dir = tmp_path / "data"
    return data_dir, write_synthetic_mnist(data_dir)


def data_overrides(data_dir: Path, md5s: dict[str, str]) -> list[str]:
    """Hydra overrides pointing train.py at a synthetic MNIST, verified by its own MD5s."""
    return [
        f"data.data_dir={data_dir}",
        "data.sources=[local]",
        "data.val_size=100",
        *[f"data.md5.{k}={v}" for k, v in md5s.items()],
    ]


def store_overrides(tmp_path: Path) -> list[str]:
    """Hydra overrides keeping MLflow and outputs inside the test's temp dir."""
    return [
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlruns/mlflow.db",
        f"logger.artifact_location={tmp_path}/mlruns/artifacts",
        f"hydra.run.dir={tmp_path}/outputs",
        f"hydra.sweep.dir={tmp_path}/multirun",
    ]


@pytest.fixture(scope="session")
def team_server(tmp_path_factory):
    """A team's tracking server: PostgreSQL, and ``mlflow server --app-name basic-auth`` on it.

    One per test session (starting both costs ~20 s); tests keep apart by experiment name. Yields
    the server (``.uri``, ``.admin``, ``.artifacts``) and a non-admin team member's credentials
    (``.user``), to be given to train.py as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
    Both servers stop, and their folders go, when the session ends, also after a failure or when
    pytest is stopped with SIGTERM (CI's cancel, ``timeout``).
    """
    import servers

    bin_dir = servers.postgres_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL is not installed (no {servers.PG_ROOT}/<version>/bin/initdb): "
                    "`apt-get install postgresql` (.ci/run does)")
    with servers.stopped_on_sigterm(), servers.postgres(bin_dir) as pg:
        pg.createdb("mlflow")
        pg.createdb("mlflow_auth")
        with servers.mlflow_auth_server(pg.uri("mlflow"), pg.uri("mlflow_auth"),
                                        tmp_path_factory.mktemp("team-server"),
                                        pg.client_env()) as server:
            server.user = server.create_user("alice")
            yield server


@pytest.fixture(scope="session")
def slurm():
    """A single-node Slurm cluster on 127.0.0.1 (tests/slurm_cluster.py), one per test session.

    Yields the cluster: ``.env`` (the environment with its ``SLURM_CONF``) for train.py and every
    Slurm command, ``.run(...)`` for those commands, ``.partition``. Its daemons stop, and its
    folder goes, when the session ends, also after a failure or when pytest gets SIGTERM.
    """
    import servers
    import slurm_cluster

    absent = slurm_cluster.missing()
    if absent:
        pytest.skip(f"Slurm is not installed (no {', '.join(absent)}): "
                    "`apt-get install slurm-wlm munge` (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs munged, slurmctld and slurmd as root; run as root")
    with servers.stopped_on_sigterm(), slurm_cluster.slurm_cluster() as cluster:
        yield cluster
