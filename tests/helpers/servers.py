"""Servers for the tests: ``mlflow server`` (plain, or with basic-auth on PostgreSQL as a team runs it).

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from mnist_mlp.tracking.serving import free_port, stop_group, wait_answering

PG_ROOT = Path("/usr/lib/postgresql")
DB_USER = "mlflow"
# Seconds a worker trusts a checked password. Off (MLflow's default), every request pays a scrypt
# hash check, and the load test's eight jobs keep the workers busy hashing.
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


CLIENT_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI")


class MlflowServer:
    """``mlflow server`` on a free loopback port, artifacts proxied into ``root/artifacts``.

    Its backend is ``backend_uri`` (default: SQLite in ``root``). ``auth_db_uri`` adds basic-auth:
    users kept in that database, READ for members on experiments they did not create, the admin's
    credentials in ``admin`` and a member's (``create_user``) for the tests to use. It can be
    stopped (SIGKILL: as a crash) and started again on the same port, with the same store. The
    server and its uvicorn workers are one process group, stopped together. MLflow's job runner
    (seven huey processes for GenAI features, ~1.7 GB) is switched off: this project never uses it.
    """

    def __init__(self, root: Path, backend_uri: str | None = None, *, auth_db_uri: str | None = None,
                 env: dict[str, str] | None = None, workers: int = 1) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts, self.log = root / "artifacts", root / "mlflow-server.log"
        self.backend_uri = backend_uri or f"sqlite:///{root}/server.db"
        self.env = {k: v for k, v in (env or os.environ).items() if k not in CLIENT_ENV}
        self.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        self.options = ["--workers", str(workers)]
        self.admin: tuple[str, str] | None = None
        self.user: tuple[str, str] | None = None
        self.postgres: Postgres | None = None
        self.proc: subprocess.Popen | None = None
        if auth_db_uri:
            self._basic_auth(auth_db_uri)

    def _basic_auth(self, auth_db_uri: str) -> None:
        """The auth config (``MLFLOW_AUTH_CONFIG_PATH``); the admin password and Flask secret come
        from the environment, as MLflow requires on a first start."""
        ini = self.root / "basic_auth.ini"
        ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_db_uri}\n"
                       "admin_username = admin\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                       f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n")
        self.admin = ("admin", secrets.token_urlsafe(18))
        self.env.update({"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin[1],
                         "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
        self.options += ["--app-name", "basic-auth"]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 300) -> MlflowServer:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                 "--port", str(self.port), *self.options, "--backend-store-uri", self.backend_uri,
                 "--artifacts-destination", str(self.artifacts)],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )
        try:
            wait_answering(f"{self.uri}/health", self.proc, self.log, timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server and its workers; SIGKILL: at once, as a crashed server."""
        if self.proc is not None:
            stop_group(self.proc, sig)
        self.proc = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create_user(self, username: str) -> tuple[str, str]:
        """A team member's account (not an admin), made by the admin over the REST API."""
        password = secrets.token_urlsafe(18)
        response = requests.post(f"{self.uri}/api/2.0/mlflow/users/create", auth=self.admin,
                                 json={"username": username, "password": password}, timeout=60)
        response.raise_for_status()
        return username, password


@contextlib.contextmanager
def team_server(folder: Path, bin_dir: Path) -> Iterator[MlflowServer]:
    """A team's tracking server: PostgreSQL, and ``mlflow server --app-name basic-auth`` on it,
    with one member (``user``). Both stop, and their folders go, when the block ends, also after a
    failure or on SIGTERM (CI's cancel, ``timeout``)."""
    with stopped_on_sigterm(), postgres(bin_dir) as pg:
        pg.createdb("mlflow")
        pg.createdb("mlflow_auth")
        with MlflowServer(folder, pg.uri("mlflow"), auth_db_uri=pg.uri("mlflow_auth"),
                          env=pg.client_env(), workers=2) as server:
            server.user = server.create_user("alice")
            server.postgres = pg  # for other databases on the same cluster (an Optuna study)
            yield server


CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def as_user(monkeypatch, user: tuple[str, str] | None) -> None:
    """This process and the commands it starts authenticate as ``user`` (None: no credentials),
    through MLflow's environment variables only, as a team member would."""
    for key in CREDENTIALS:
        monkeypatch.delenv(key, raising=False)
    if user is not None:
        monkeypatch.setenv(CREDENTIALS[0], user[0])
        monkeypatch.setenv(CREDENTIALS[1], user[1])
