"""Servers a team would run, started for the tests: PostgreSQL and an MLflow server with basic-auth.

Both listen on loopback only, on free ports, and live in temporary folders that are removed when
they stop. PostgreSQL comes from Debian's ``postgresql`` package (``initdb``/``pg_ctl`` under
``/usr/lib/postgresql/<version>/bin``); ``initdb`` refuses to run as root, so under root (CI, the
development machine) the cluster is created and run as the package's unprivileged ``postgres``
user (``nobody`` where that user is missing), and as the current user otherwise.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
from mlflow_server import free_port

PG_ROOT = Path("/usr/lib/postgresql")
DB_USER = "mlflow"
# Seconds a worker trusts a checked password. Off (MLflow's default), every request pays a scrypt
# hash check (~0.1 s of CPU here): eight jobs' requests kept a worker busy for minutes.
AUTH_CACHE_S = 60


@contextlib.contextmanager
def stopped_on_sigterm() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, so pytest stops as on Ctrl-C and the
    servers' ``finally`` blocks run; Python's default would end the process with them running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder, or None when Debian's package is absent."""
    found = [p / "bin" for p in PG_ROOT.glob("*") if (p / "bin" / "initdb").is_file()]
    return max(found, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0), default=None)


def _server_user() -> dict:
    """``subprocess`` arguments that drop root to an unprivileged user (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            user = pwd.getpwnam(name)
            return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
                    "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/",
                            "LC_ALL": "C.UTF-8"}}
    raise RuntimeError("no unprivileged user (postgres or nobody) to run PostgreSQL as")


@dataclass
class Postgres:
    """A running cluster; ``uri(db)`` without the password, which libpq reads from ``PGPASSWORD``."""

    bin: Path
    folder: Path
    port: int
    password: str

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def client_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def createdb(self, name: str) -> None:
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", DB_USER, name], env=self.client_env(), check=True,
                       capture_output=True, timeout=60)


@contextlib.contextmanager
def postgres(bin_dir: Path) -> Iterator[Postgres]:
    """``initdb`` a cluster in a new temporary folder, start it on loopback; stop and remove it after.

    Password authentication (scram-sha-256) on TCP as a team's server would use; no Unix socket
    outside the cluster's folder, so nothing touches the Debian package's own cluster.
    """
    as_user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="mnist-mlp-pg-"))
    data = folder / "data"
    password = secrets.token_urlsafe(16)
    if as_user:
        os.chown(folder, as_user["user"], as_user["group"])

    def run(*args: str) -> None:
        done = subprocess.run([str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=180, cwd=folder, **as_user)
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    started = False
    try:
        pwfile = folder / "pw"
        pwfile.write_text(password + "\n")
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        run("initdb", "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "--no-locale", "-E", "UTF8")
        pwfile.unlink()
        port = free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                       f"unix_socket_directories = '{folder}'\n")
        started = True
        run("pg_ctl", "-D", str(data), "-l", str(folder / "postgres.log"), "-w", "-t", "120", "start")
        yield Postgres(bin_dir, folder, port, password)
    finally:
        if started:
            _stop_postgres(bin_dir, data, as_user)
        shutil.rmtree(folder, ignore_errors=True)


def _stop_postgres(bin_dir: Path, data: Path, as_user: dict) -> None:
    """``pg_ctl stop`` (fast: open sessions are cut); the postmaster is killed if that fails."""
    done = subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60",
                           "stop"], capture_output=True, timeout=90, **as_user)
    pid_file = data / "postmaster.pid"
    if done.returncode and pid_file.is_file():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


@dataclass
class MlflowServer:
    """A running ``mlflow server --app-name basic-auth``: the admin's credentials, and a team member's
    (``user``) once ``create_user`` made one."""

    uri: str
    admin: tuple[str, str]
    artifacts: Path
    log: Path
    user: tuple[str, str] | None = None

    def create_user(self, username: str) -> tuple[str, str]:
        """A team member's account (not an admin), made by the admin over the REST API."""
        password = secrets.token_urlsafe(18)
        response = requests.post(f"{self.uri}/api/2.0/mlflow/users/create", auth=self.admin,
                                 json={"username": username, "password": password}, timeout=60)
        response.raise_for_status()
        return username, password


def _wait_healthy(uri: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{uri}/health", timeout=5).ok:
                return
        time.sleep(1)
    raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def mlflow_auth_server(backend_uri: str, auth_db_uri: str, folder: Path, env: dict[str, str],
                       workers: int = 2, timeout: float = 300) -> Iterator[MlflowServer]:
    """``mlflow server`` with basic-auth on a free loopback port, artifacts proxied into ``folder``.

    The auth config (``MLFLOW_AUTH_CONFIG_PATH``) keeps users in ``auth_db_uri``; new users get
    READ on experiments they did not create. The admin password and Flask secret come from the
    environment, as MLflow requires on a first start. MLflow's job runner (seven huey processes
    for GenAI features, ~1.7 GB) is switched off: this project never uses it. The server and its
    uvicorn workers are one process group, stopped together, also when the block raises.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "basic_auth.ini"
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_db_uri}\n"
                   "admin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n")
    admin = ("admin", secrets.token_urlsafe(18))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = folder / "mlflow-server.log"
    artifacts = folder / "artifacts"
    server_env = {**env, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
                  "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                  "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        server_env.pop(key, None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--app-name", "basic-auth",
             "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts)],
            stdout=out, stderr=subprocess.STDOUT, env=server_env, start_new_session=True,
        )
    try:
        _wait_healthy(uri, proc, log, timeout)
        yield MlflowServer(uri, admin, artifacts, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

