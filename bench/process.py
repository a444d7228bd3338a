"""``python train.py`` as a whole process: wall time, peak RSS, fixed cost phase by phase."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mnist_mlp.paths import repo_root


def process_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``python train.py`` for ``--process-epochs`` epochs: wall seconds, peak RSS (MB) and the
    run's phases as it logged them to MLflow (``time/<phase>_s``).

    The store is created first, outside the clock: a user's runs land in an existing store, and
    creating one (SQLite schema migrations) is a once-per-store cost, reported on its own.
    """
    from mlflow import MlflowClient

    from mnist_mlp.tracking.store import open_store

    uri = f"sqlite:///{tmp}/process/mlruns/mlflow.db"
    start = time.perf_counter()
    _, experiment_id = open_store(uri, "mnist-mlp", f"{tmp}/process/mlruns/artifacts")
    store_s = time.perf_counter() - start
    overrides = [
        f"trainer.max_epochs={args.process_epochs}", "trainer.accelerator=cpu",
        f"logger.tracking_uri={uri}", "logger.experiment_name=mnist-mlp",
        f"logger.artifact_location={tmp}/process/mlruns/artifacts",
        f"hydra.run.dir={tmp}/process/outputs", *args.overrides,
    ]
    cmd = [sys.executable, "-c", _MEASURE, sys.executable, str(repo_root() / "train.py"),
           *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed:\n{proc.stderr[-3000:]}")
    wall, max_rss_kb = json.loads(proc.stdout.strip().splitlines()[-1])
    runs = MlflowClient(uri).search_runs([experiment_id], max_results=1)
    phases = {k[len("time/"):-len("_s")]: v for k, v in runs[0].data.metrics.items()
              if k.startswith("time/")} if runs else {}
    return {"wall_s": wall, "max_rss_mb": max_rss_kb / 1024, "epochs": args.process_epochs,
            "phases_s": phases, "new_store_s": store_s}


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


PHASES = {
    "startup": "startup: interpreter, imports (torch, lightning, hydra), Hydra compose",
    "build": "build: DataModule, LightningModule, Trainer, MLFlowLogger (imports mlflow)",
    "data": "data: MNIST files found and MD5-verified",
    "tracking_start": "tracking start: store opened, run created, params, tags, config files",
    "fit": "fit",
    "test_and_report": "test and report files (matplotlib figures)",
    "tracking_outputs": "tracking outputs: report files, checkpoint, MLflow model",
}


def print_process(proc: dict[str, Any], epoch_s: float) -> None:
    """The whole-process figures and the fixed cost phase by phase."""
    fixed = proc["fixed_s"]
    print(f"\npython train.py, {proc['epochs']} epoch(s) on CPU: {proc['wall_s']:.1f} s wall, "
          f"fixed cost (wall - epochs x (a)) {fixed:.1f} s, peak RSS {proc['max_rss_mb']:.0f} MB")
    phases = proc["phases_s"]
    for key, label in PHASES.items():
        if key not in phases:
            continue
        seconds = phases[key]
        if key == "fit":
            seconds -= proc["epochs"] * epoch_s
            label = (f"fit beyond {proc['epochs']} x (a): sanity check, data decoding, "
                     "first-epoch warm-up")
        print(f"  {label:78s} {seconds:6.1f} s")
    if phases:
        rest = proc["wall_s"] - sum(phases.values())
        print(f"  {'interpreter exit and what the phases miss':78s} {rest:6.1f} s")
    print(f"  (once per store, not counted above: creating a new SQLite store "
          f"{proc['new_store_s']:.1f} s)")
    imports = proc.get("import_rss_mb") or {}
    if imports:
        steps, previous = [], 0.0
        for name, mb in imports.items():
            steps.append(f"{name} {mb - previous:+.0f}")
            previous = mb
        print(f"peak RSS {proc['max_rss_mb']:.0f} MB: {previous:.0f} MB are imports "
              f"({', '.join(steps)} MB), {proc['data_mb']:.0f} MB the MNIST tensors, "
              f"{proc['max_rss_mb'] - previous - proc['data_mb']:.0f} MB the rest "
              "(model, optimizer, decoding temporaries, MLflow store)")


# Runs argv[1:] from a small process and prints [wall seconds, child's max RSS in kB]. Spawning
# train.py straight from this big process would report *this* process's RSS: Linux carries the
# old address space's high-water mark into ru_maxrss across the exec of a (v)forked child.
_MEASURE = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps([time.perf_counter() - start, usage.ru_maxrss]))
sys.exit(os.waitstatus_to_exitcode(status))
"""


