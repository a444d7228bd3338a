"""The fixed cost of a run beside the import floor of its stack: ``python -m bench cost``.

Several rounds, each timing, as whole processes one after another, the **import floor** (a process
that only runs ``import torch, lightning, mlflow``) before each of:

* ``python train.py`` for ``--cost-epochs`` epochs (2): its **fixed cost** is its wall time minus
  its epochs, each taken as the run's own last epoch (the time between its last two ``loss/val``
  values in MLflow: training, validation, checkpoints and logging at the steady rate), so the
  first epoch's warm-up counts as fixed cost. It logs into a store that exists, as every run after
  a store's first does: the round's SQLite store is created just before, and the time MLflow takes
  to create it (its schema migrations, which a store's first run pays once) is given apart;
* a 2-job sweep in one process (Hydra's basic launcher): the fixed cost of its **second job**,
  which finds the libraries imported (its phases, from the first job's end, minus its epochs);
* ``python evaluate.py`` on the round's best checkpoint, which has no epochs: its wall time.

Every ratio is to the floor timed just before, the median over the rounds: a load that changes
between rounds moves both. The phases and the memory at each phase's end come from the runs' own
``time/<phase>_s`` and ``system/phase_memory/<phase>_mb`` metrics. ``--baseline DIR`` times
another checkout's ``train.py``, sweep and ``evaluate.py`` in the same rounds (before/after
figures in one run).

Then once, the memory of a 2-job joblib sweep (``n_jobs=2``): every process of the sweep is
sampled while it runs, for each one's peak RSS and the peak of their summed proportional set
size (shared library pages split between the processes that map them): what the sweep costs the
machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.process import epoch_seconds, measure, memory, phases, runs_of
from mnist_mlp.paths import repo_root

FLOOR_IMPORTS = "import torch, lightning, mlflow"
TARGET = 1.2  # the fixed cost of a run (and of a sweep's later job) at most this times the floor
RSS_TARGET_MB = 1300  # peak RSS of `make train`


def _store(tmp: Path, name: str) -> list[str]:
    return [f"logger.tracking_uri=sqlite:///{tmp}/{name}/mlflow.db", "logger.experiment_name=mnist-mlp",
            f"logger.artifact_location={tmp}/{name}/artifacts"]


def _data(args: argparse.Namespace) -> list[str]:
    """This checkout's MNIST for every checkout timed (a baseline's own folder may have none), and
    the data and trainer overrides given."""
    given = [o for o in args.overrides if o.startswith(("data.", "trainer."))]
    here = [] if any(o.startswith("data.data_dir=") for o in given) else [
        f"data.data_dir={repo_root() / 'data'}"]
    return ["trainer.accelerator=cpu", *here, *given]


def _commands(root: Path, tmp: Path, name: str, args: argparse.Namespace) -> dict[str, list[str]]:
    others = [o for o in args.overrides if not o.startswith(("data.", "trainer."))]
    common = [f"trainer.max_epochs={args.cost_epochs}", *_data(args), *_store(tmp, name), *others]
    python = sys.executable
    return {
        "train": [python, str(root / "train.py"), *common, f"hydra.run.dir={tmp}/{name}/run"],
        "sweep": [python, str(root / "train.py"), "-m", "seed=1,2", "hydra/launcher=basic", *common,
                  f"hydra.sweep.dir={tmp}/{name}/sweep"],
    }


def _evaluate(root: Path, tmp: Path, name: str, ckpt: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(root / "evaluate.py"), f"ckpt_path={ckpt}", *_data(args),
            f"hydra.run.dir={tmp}/{name}/evaluate"]


def _floor() -> dict[str, Any]:
    m = measure([sys.executable, "-c", FLOOR_IMPORTS])
    return {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "max_rss_mb": m.max_rss_mb}


def _train(cmd: list[str], uri: str) -> dict[str, Any]:
    m = measure(cmd)
    run = runs_of(uri)[-1]
    epochs = int(run.data.params["trainer.max_epochs"])
    epoch = epoch_seconds(uri, run)
    return {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "max_rss_mb": m.max_rss_mb, "epochs": epochs,
            "epoch_s": epoch, "fixed_s": m.wall_s - epochs * epoch, "phases_s": phases(run),
            "memory_mb": memory(run), "best_checkpoint": run.data.tags.get("best_checkpoint")}


def _sweep_job(cmd: list[str], uri: str) -> dict[str, Any]:
    """The sweep's second job: its phases from the first job's last mark, minus its epochs."""
    m = measure(cmd)
    job = [r for r in runs_of(uri) if r.data.tags.get("sweep.job") == "1"][-1]
    epochs = int(job.data.params["trainer.max_epochs"])
    epoch = epoch_seconds(uri, job)
    seen = phases(job)
    return {"sweep_wall_s": m.wall_s, "max_rss_mb": m.max_rss_mb, "epochs": epochs,
            "epoch_s": epoch, "fixed_s": sum(seen.values()) - epochs * epoch, "phases_s": seen,
            "memory_mb": memory(job)}


def new_store(uri: str) -> float:
    """Create the SQLite store at ``uri`` as a run's tracking start would (MLflow creates the schema
    when a client first touches a new store); returns the seconds it took."""
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its lines on creating the tables
    start = time.perf_counter()
    MlflowClient(uri).search_experiments(max_results=1)
    return time.perf_counter() - start


def rounds(args: argparse.Namespace, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """``args.cost_rounds`` rounds: the floor before each process of each checkout."""
    new_store(f"sqlite:///{tmp}/warm-up.db")  # the bench's own first use of MLflow's SQLite store
    roots = {"project": repo_root()}
    if args.baseline:
        roots["baseline"] = Path(args.baseline).resolve()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.cost_rounds):
        for who, root in roots.items():
            name = f"{who}-{r}"
            cmds = _commands(root, tmp, name, args)
            uri = f"sqlite:///{tmp}/{name}/mlflow.db"
            (tmp / name).mkdir(parents=True, exist_ok=True)
            out.setdefault(f"{who}/store", []).append({"store_s": new_store(uri)})
            for kind in ("train", "sweep", "evaluate"):
                floor = _floor()
                if kind == "train":
                    row = _train(cmds["train"], uri)
                    ckpt = str(tmp / name / "run" / row["best_checkpoint"])  # checkpoints/<file>
                elif kind == "sweep":
                    row = _sweep_job(cmds["sweep"], uri)
                else:
                    m = measure(_evaluate(root, tmp, name, ckpt, args))
                    row = {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "max_rss_mb": m.max_rss_mb,
                           "fixed_s": m.wall_s}
                row["floor"] = floor
                row["ratio"] = row["fixed_s"] / floor["wall_s"]
                out.setdefault(f"{who}/{kind}", []).append(row)
                print(f"  round {r + 1}: {who:8s} {kind:8s} fixed cost {row['fixed_s']:5.1f} s, "
                      f"floor {floor['wall_s']:4.1f} s, ratio {row['ratio']:.2f}", flush=True)
    return out


def summary(measured: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over the rounds, per checkout and kind of process."""
    out: dict[str, Any] = {}
    for key, rows in measured.items():
        med = statistics.median
        if key.endswith("/store"):
            out[key] = {"rounds": len(rows), "store_s": med(r["store_s"] for r in rows)}
            continue
        row: dict[str, Any] = {"rounds": len(rows), "ratio": med(r["ratio"] for r in rows),
                               "fixed_s": med(r["fixed_s"] for r in rows),
                               "floor_s": med(r["floor"]["wall_s"] for r in rows),
                               "floor_cpu_s": med(r["floor"]["cpu_s"] for r in rows),
                               "floor_rss_mb": med(r["floor"]["max_rss_mb"] for r in rows),
                               "max_rss_mb": max(r["max_rss_mb"] for r in rows)}
        for extra in ("wall_s", "cpu_s", "epoch_s", "epochs"):
            if all(extra in r for r in rows):
                row[extra] = med(r[extra] for r in rows)
        with_phases = [r for r in rows if r.get("phases_s")]
        if with_phases:
            names = list(with_phases[0]["phases_s"])
            row["phases_s"] = {p: med(r["phases_s"].get(p, 0.0) for r in with_phases) for p in names}
            row["memory_mb"] = with_phases[-1].get("memory_mb", {})
        out[key] = row
    return out


PHASES = {
    "startup": "startup: interpreter, Hydra compose, imports (torch, lightning, mlflow)",
    "build": "build: DataModule, LightningModule, Trainer, MLflow logger",
    "data": "data: MNIST files found and MD5-verified",
    "tracking_start": "tracking start: store opened, run created, params, tags, config files",
    "fit": "fit beyond its epochs: sanity check, data decoding, first-epoch warm-up",
    "test_and_report": "test, report handed to its worker (drawn in-process if it has none)",
    "tracking_outputs": "tracking outputs: checkpoint, MLflow model, report files",
}
LABELS = {"train": "python train.py", "sweep": "a sweep's 2nd job", "evaluate": "python evaluate.py"}


def print_summary(rows: dict[str, Any]) -> None:
    print(f"\nfixed cost beside the import floor ({FLOOR_IMPORTS}), medians over rounds; "
          f"target <= {TARGET:.1f}x the floor")
    print(f"{'':30s} {'fixed s':>8s} {'floor s':>8s} {'ratio':>6s} {'target':>7s} {'peak RSS MB':>12s}")
    for key, row in rows.items():
        who, kind = key.split("/")
        if kind == "store":
            continue
        verdict = "met" if row["ratio"] <= TARGET else "missed"
        label = LABELS[kind] + (" (baseline)" if who == "baseline" else "")
        print(f"{label:30s} {row['fixed_s']:8.2f} {row['floor_s']:8.2f} {row['ratio']:6.2f} "
              f"{verdict:>7s} {row['max_rss_mb']:12.0f}")
    timed = [row for key, row in rows.items() if not key.endswith("/store")]
    print(f"(the floor's own peak RSS: {timed[0]['floor_rss_mb'] if timed else 0:.0f} MB)")
    for key, row in rows.items():
        train = rows.get(key.replace("/store", "/train"))
        if key.endswith("/store") and train:
            with_it = (train["fixed_s"] + row["store_s"]) / train["floor_s"]
            print(f"a store's first run also creates it: +{row['store_s']:.2f} s "
                  f"({key.split('/')[0]}; {with_it:.2f}x the floor with it)")
    for key, row in rows.items():
        if "phases_s" in row:
            print_phases(key, row)


def print_phases(key: str, row: dict[str, Any]) -> None:
    who, kind = key.split("/")
    print(f"\n{LABELS[kind]}{' (baseline)' if who == 'baseline' else ''}, {row['epochs']} epochs of "
          f"{row['epoch_s']:.2f} s: phase by phase (s; resident MB at its end, peak MB so far)")
    seen = 0.0
    for phase, seconds in row["phases_s"].items():
        if phase == "fit":
            seconds -= row["epochs"] * row["epoch_s"]
        seen += seconds
        rss, peak = row["memory_mb"].get(phase, (None, None))
        mem = f"{rss:6.0f} {peak:6.0f}" if rss is not None else f"{'-':>6s} {'-':>6s}"
        print(f"  {PHASES.get(phase, phase):78s} {seconds:6.2f}  {mem}")
    if "wall_s" in row:  # a whole process (not a sweep's job): what its clock did not see
        print(f"  {'interpreter exit and what the phases miss':78s} {row['fixed_s'] - seen:6.2f}")


def sweep_memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """A 2-job joblib sweep (``n_jobs=2``), every process of it sampled while it runs."""
    import psutil

    others = [o for o in args.overrides if not o.startswith(("data.", "trainer."))]
    cmd = [sys.executable, str(repo_root() / "train.py"), "-m", "seed=1,2", "hydra/launcher=joblib",
           "hydra.launcher.n_jobs=2", "trainer.max_epochs=1", *_data(args), *_store(tmp, "joblib"),
           *others, f"hydra.sweep.dir={tmp}/joblib/sweep"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    peaks: dict[int, dict[str, Any]] = {}
    total_pss = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal total_pss
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            pss = 0.0
            for p in tree:
                try:
                    info = p.memory_full_info()
                    status = Path(f"/proc/{p.pid}/status").read_text()
                    hwm = int(status.split("VmHWM:")[1].split()[0]) / 1024
                    row = peaks.setdefault(p.pid, {"role": _role(p, proc.pid), "peak_mb": 0.0})
                    row["peak_mb"] = max(row["peak_mb"], hwm, info.rss / 2**20)
                    pss += info.pss / 2**20
                except (psutil.Error, OSError, IndexError, ValueError):
                    continue
            total_pss = max(total_pss, pss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"the joblib sweep failed:\n{err[-3000:]}")
    jobs = runs_of(f"sqlite:///{tmp}/joblib/mlflow.db")
    by_role: dict[str, list[float]] = {}
    for row in peaks.values():
        by_role.setdefault(row["role"], []).append(row["peak_mb"])
    return {"peak_rss_mb_by_role": {k: sorted(v, reverse=True) for k, v in by_role.items()},
            "peak_total_pss_mb": total_pss,
            "jobs_memory_mb": [memory(j) for j in jobs]}


def _role(p: Any, parent_pid: int) -> str:
    try:
        cmdline = " ".join(p.cmdline())
    except Exception:  # noqa: BLE001
        return "other"
    if p.pid == parent_pid:
        return "sweep parent"
    if "resource_tracker" in cmdline:  # loky's and multiprocessing's: a few MB each
        return "other (resource tracker, git, ...)"
    if "loky" in cmdline:
        return "joblib worker"
    if "multiprocessing" in cmdline:
        return "report worker"
    return "other (resource tracker, git, ...)"


def print_sweep_memory(found: dict[str, Any]) -> None:
    print("\n2-job joblib sweep (n_jobs=2), sampled every 0.2 s: peak RSS per process (MB)")
    for role, values in found["peak_rss_mb_by_role"].items():
        print(f"  {role:36s} {', '.join(f'{v:.0f}' for v in values)}")
    print(f"  {'all its processes, summed PSS at the peak':36s} {found['peak_total_pss_mb']:.0f}")
    for i, job in enumerate(found["jobs_memory_mb"]):
        if job:
            worst = max(job.items(), key=lambda kv: kv[1][1])
            print(f"  job {i}: peak {worst[1][1]:.0f} MB, reached by the end of {worst[0]}")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The cost section: rounds, their summary, the joblib sweep's memory; printed and returned."""
    print(f"\n== fixed cost: {args.cost_rounds} rounds, each the floor before every process")
    measured = rounds(args, tmp)
    rows = summary(measured)
    print_summary(rows)
    out: dict[str, Any] = {"target_ratio": TARGET, "rss_target_mb": RSS_TARGET_MB,
                           "floor": FLOOR_IMPORTS, "epochs": args.cost_epochs, "rounds": measured,
                           "summary": rows}
    if args.sweep_memory:
        out["joblib_sweep"] = sweep_memory(args, tmp)
        print_sweep_memory(out["joblib_sweep"])
    return out
