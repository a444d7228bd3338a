"""Fixtures of the server tests: the session's ``mlflow server``, the team server (PostgreSQL +
basic-auth) and a Slurm cluster, each started once per session on loopback and stopped at its end,
also after a failure or on SIGTERM."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def _session_mlflow_server(tmp_path_factory):
    from tests.helpers import servers

    with servers.stopped_on_sigterm(), servers.MlflowServer(tmp_path_factory.mktemp("mlflow-server")) \
            as server:
        yield server


@pytest.fixture
def mlflow_server(_session_mlflow_server):
    """The session's plain ``mlflow server`` (SQLite backend, proxied artifacts, loopback), running.

    Tests keep apart by experiment name. A test may stop it (an outage) and start it again; if it
    does not, the next test that asks for it finds it started.
    """
    if not _session_mlflow_server.running:
        _session_mlflow_server.start()
    return _session_mlflow_server


@pytest.fixture(scope="session")
def team_server(tmp_path_factory):
    """A team's tracking server: PostgreSQL, and ``mlflow server --app-name basic-auth`` on it.

    One per test session; tests keep apart by experiment name. Yields the server (``.uri``,
    ``.admin``, ``.artifacts``) with a non-admin team member's credentials (``.user``), to be given
    to train.py as MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (``as_user``).
    """
    from tests.helpers import servers

    bin_dir = servers.postgres_bin()
    if bin_dir is None:
        pytest.skip(f"PostgreSQL is not installed (no {servers.PG_ROOT}/<version>/bin/initdb): "
                    "`apt-get install postgresql` (.ci/run does)")
    with servers.team_server(tmp_path_factory.mktemp("team-server"), bin_dir) as server:
        yield server


@pytest.fixture(scope="session")
def slurm():
    """A single-node Slurm cluster on 127.0.0.1 (``tests/helpers/slurm.py``), one per test session.

    Yields the cluster: ``.env`` (the environment with its ``SLURM_CONF``) for train.py and every
    Slurm command, ``.run(...)`` for those commands, ``.partition``. Its daemons stop, and its
    folder goes, when the session ends, also after a failure or when pytest gets SIGTERM.
    """
    from tests.helpers import servers, slurm

    absent = slurm.missing()
    if absent:
        pytest.skip(f"Slurm is not installed (no {', '.join(absent)}): "
                    "`apt-get install slurm-wlm munge` (.ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs munged, slurmctld and slurmd as root; run as root")
    with servers.stopped_on_sigterm(), slurm.slurm_cluster() as cluster:
        yield cluster
