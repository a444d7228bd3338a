"""A single-node Slurm cluster for the tests: munged, slurmctld and slurmd on 127.0.0.1.

Debian's ``slurm-wlm`` and ``munge`` packages provide the daemons; nothing of theirs is used
beyond the binaries. Every file of the cluster (munge key and socket, ``slurm.conf``, state,
spool, logs, pid files) lives in one temporary folder, removed when the cluster stops; clients
find it through ``SLURM_CONF`` in the environment that ``Cluster.env`` gives, so the machine's own
``/etc/slurm`` and ``/run/munge`` are never read or touched. The daemons run in the foreground as
children of the test process (as root: slurmd starts jobs as their submitter, and ``SlurmUser``
is root so no Slurm account is needed), each in its own session, and are stopped with everything
they started, also when a test fails.

Settings chosen for a fast, quiet test cluster (the rest are Slurm's defaults):

* ``SchedulerType=sched/builtin``: first come, first served, scheduled at once on submission and
  when a job ends (no backfill pass to wait for);
* ``MessageTimeout``, ``SlurmdTimeout``: small, so a client gives up quickly on a controller that
  is down, and yet with room for a busy 2-core machine;
* no accounting (``accounting_storage/none``, no slurmdbd), no job completion log, no job
  accounting gatherer: as on a small cluster without slurmdbd, where ``sacct`` fails;
* ``CommunicationParameters=NoInAddrAny``: the daemons bind the node's address (127.0.0.1), not
  every interface; the node is named after this host (slurmd checks it), addressed as 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mnist_mlp.tracking.serving import free_port, stop_group

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
PARTITION = "debug"
#: What the node offers: eight CPUs (more than this machine's two, so the tests' seven 1-CPU jobs
#: run at once; ``SlurmdParameters=config_overrides`` lets slurmd accept that), memory for eight
#: 2 GB jobs.
NODE_CPUS, NODE_MEMORY_MB = 8, 16384
#: Seconds between the SIGTERM of ``scancel``/``scontrol requeue`` and the SIGKILL (Slurm's default):
#: a job stops within a batch of the SIGTERM, and its exit (a checkpoint, the MLflow run closed,
#: the interpreter's shutdown) takes seconds, more on a loaded machine.
KILL_WAIT_S = 30
START_TIMEOUT_S = 60


def missing() -> list[str]:
    """Slurm and munge programs that are not installed (``apt-get install slurm-wlm munge``)."""
    return [p for p in (*DAEMONS, *CLIENTS) if shutil.which(p, path=_sbin_path()) is None]


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@dataclass
class Cluster:
    """A running cluster: ``env`` for every Slurm client call, ``partition`` to submit to."""

    folder: Path
    conf: Path
    node: str
    partition: str = PARTITION

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """A Slurm client command (``squeue``, ``scancel``, ...) against this cluster."""
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def node_state(self) -> str:
        done = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def state(self, job_id: str) -> str:
        """The job's state as the controller knows it (``COMPLETED``, ``CANCELLED``, ...), or ''."""
        done = self.run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T", check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def without_controller(self, folder: Path) -> Path:
        """A copy of this cluster's ``slurm.conf`` whose controller port nobody listens on (and
        whose clients give up on it after two seconds)."""
        conf = folder / "slurm-no-controller.conf"
        lines = self.conf.read_text().splitlines()
        changed = {"SlurmctldPort": str(free_port()), "MessageTimeout": "2"}
        conf.write_text("\n".join(f"{k}={changed[k]}" if (k := line.split("=", 1)[0]) in changed
                                  else line for line in lines) + "\n")
        return conf

    def log(self, daemon: str) -> str:
        path = self.folder / "log" / f"{daemon}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""


def _slurm_conf(folder: Path, node: str, ports: tuple[int, int], munge_socket: Path,
                message_timeout: int = 5) -> str:
    ctld_port, slurmd_port = ports
    log = folder / "log"
    return f"""\
ClusterName=mnistmlp
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={log / "slurmctld.log"}
SlurmdLogFile={log / "slurmd.log"}
SlurmctldDebug=error
SlurmdDebug=error
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait={KILL_WAIT_S}
MessageTimeout={message_timeout}
SlurmdTimeout=30
SlurmctldTimeout=30
InactiveLimit=0
MinJobAge=300
NodeName={node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} RealMemory={NODE_MEMORY_MB} State=UNKNOWN
PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def _munge_key(path: Path) -> None:
    path.write_bytes(secrets.token_bytes(1024))
    path.chmod(0o400)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[Cluster]:
    """Start munged, slurmctld and slurmd in a new temporary folder; stop them and remove it after.

    Waits until ``sinfo`` reports the node idle. Needs root (slurmd starts jobs as their user).
    """
    if os.geteuid() != 0:
        raise RuntimeError("the test Slurm cluster runs its daemons as root")
    folder = Path(tempfile.mkdtemp(prefix="mnist-mlp-slurm-"))
    folder.chmod(0o755)  # jobs' users traverse it to reach the munge socket
    node = socket.gethostname().split(".")[0]
    procs: list[subprocess.Popen] = []
    cluster = Cluster(folder, folder / "slurm.conf", node)
    try:
        for sub, mode in (("munge", 0o755), ("munge-key", 0o700), ("state", 0o700),
                          ("spool", 0o755), ("log", 0o755)):
            (folder / sub).mkdir(mode=mode)
        munge_socket = folder / "munge" / "munge.socket.2"
        _munge_key(folder / "munge-key" / "munge.key")
        cluster.conf.write_text(_slurm_conf(folder, node, (free_port(), free_port()), munge_socket))
        procs.append(_start(folder, "munged", "--foreground", "--force",
                            f"--socket={munge_socket}", f"--key-file={folder / 'munge-key' / 'munge.key'}",
                            f"--pid-file={folder / 'munge' / 'munged.pid'}",
                            f"--log-file={folder / 'log' / 'munged.log'}",
                            f"--seed-file={folder / 'munge-key' / 'munged.seed'}"))
        _wait(lambda: munge_socket.exists(), "munged made no socket", cluster, procs)
        procs.append(_start(folder, "slurmctld", "-D", "-c", "-f", str(cluster.conf), env=cluster.env))
        procs.append(_start(folder, "slurmd", "-D", "-N", node, "-f", str(cluster.conf),
                            env=cluster.env))
        _wait(lambda: cluster.node_state() == "idle", "the node is not idle", cluster, procs)
        yield cluster
    finally:
        _stop(cluster, procs)
        shutil.rmtree(folder, ignore_errors=True)


def _start(folder: Path, daemon: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    exe = shutil.which(daemon, path=_sbin_path())
    with (folder / "log" / f"{daemon}.out").open("w") as out:
        return subprocess.Popen([exe, *args], stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                                env=env or dict(os.environ), start_new_session=True)


def _wait(ready, what: str, cluster: Cluster, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {d}:\n{cluster.log(d)}{_out(cluster, d)}" for d in DAEMONS)
            raise RuntimeError(f"test Slurm cluster did not start ({what}):\n{logs}")
        time.sleep(0.2)


def _out(cluster: Cluster, daemon: str) -> str:
    path = cluster.folder / "log" / f"{daemon}.out"
    return path.read_text(errors="replace")[-2000:] if path.is_file() else ""


def _stop(cluster: Cluster, procs: list[subprocess.Popen]) -> None:
    """Cancel every job, stop the daemons (slurmd first), then end whatever still runs with this
    cluster's ``SLURM_CONF`` (a job step the daemons left behind)."""
    if len(procs) == len(DAEMONS):
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--quiet", f"--partition={cluster.partition}", check=False)
            deadline = time.monotonic() + KILL_WAIT_S + 10
            while time.monotonic() < deadline and cluster.run(
                    "squeue", "-h", "-t", "PD,R,CG,S", check=False).stdout.strip():
                time.sleep(0.3)
    for proc in reversed(procs):
        stop_group(proc, wait_s=20)
    for pid in _processes_with(f"SLURM_CONF={cluster.conf}"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _processes_with(entry: str) -> list[int]:
    """Processes other than this one whose environment holds ``entry`` (``KEY=value``)."""
    found = []
    wanted = entry.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
    return found
