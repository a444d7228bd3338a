"""Whole processes: one timed and measured from outside, its MLflow runs read back, and the
resident memory each import of the stack adds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from mnist_mlp.speed import PHASE_MEMORY as MEMORY


@dataclass
class Measured:
    """One process from outside: wall and CPU seconds (children included), peak RSS."""

    wall_s: float
    cpu_s: float
    max_rss_mb: float


def measure(cmd: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` to its end through a small process; raises ``SystemExit`` with its stderr if it
    fails. The peak RSS is the largest of the process and of the children it waited for."""
    proc = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg", **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")
    wall, max_rss_kb, cpu = json.loads(proc.stdout.strip().splitlines()[-1])
    return Measured(wall, cpu, max_rss_kb / 1024)


def runs_of(uri: str, experiment: str = "mnist-mlp", role: str = "train") -> list[Any]:
    """The ``mnist_mlp.role=<role>`` runs of a store, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.`mnist_mlp.role` = '{role}'",
                              order_by=["attributes.start_time ASC"])


def phases(run: Any) -> dict[str, float]:
    """The run's ``time/<phase>_s`` metrics, by phase, in the order the run went through them."""
    order = ["startup", "build", "data", "tracking_start", "fit", "test_and_report",
             "tracking_outputs"]
    found = {k[len("time/"):-len("_s")]: v for k, v in run.data.metrics.items()
             if k.startswith("time/")}
    return {p: found[p] for p in order if p in found} | found


def memory(run: Any) -> dict[str, tuple[float, float]]:
    """``system/phase_memory/<phase>_mb`` and ``_peak_mb`` by phase: (resident at its end, peak
    so far)."""
    metrics = run.data.metrics
    keys = {p: (f"{MEMORY}/{p}_mb", f"{MEMORY}/{p}_peak_mb") for p in phases(run)}
    return {p: (metrics[rss], metrics[peak]) for p, (rss, peak) in keys.items()
            if rss in metrics and peak in metrics}


def epoch_seconds(uri: str, run: Any) -> float:
    """The run's last epoch, from the timestamps of its last two ``loss/val`` values: a whole
    epoch (training, validation, checkpoints, logging) at the steady rate, measured in the run."""
    from mlflow import MlflowClient

    history = sorted(MlflowClient(uri).get_metric_history(run.info.run_id, "loss/val"),
                     key=lambda m: m.step)
    if len(history) < 2:
        raise SystemExit("the run logged fewer than two loss/val values: give it 2 epochs or more")
    return (history[-1].timestamp - history[-2].timestamp) / 1000


_IMPORTS = """
import json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
out = {"python": rss()}
for name in sys.argv[1:]:
    __import__(name)
    out[name] = rss()
print(json.dumps(out))
"""


def import_memory() -> dict[str, float]:
    """Resident MB after each import of a fresh interpreter, in the order train.py pays them."""
    names = ["torch", "lightning", "hydra", "mlflow", "matplotlib.pyplot"]
    proc = subprocess.run([sys.executable, "-c", _IMPORTS, *names], capture_output=True, text=True)
    if proc.returncode != 0:
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Runs argv[1:] from a small process and prints [wall seconds, max RSS in kB, CPU seconds] of that
# child (and of the children it waited for). Spawning the command straight from the benchmark's
# big process would report *its* RSS: Linux carries the old address space's high-water mark into
# ru_maxrss across the exec of a (v)forked child.
_MEASURE = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - start, usage.ru_maxrss, usage.ru_utime + usage.ru_stime]))
sys.exit(os.waitstatus_to_exitcode(status))
"""
