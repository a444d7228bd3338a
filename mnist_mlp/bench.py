"""Speed benchmark: the project's training path against a bare PyTorch loop and torchvision's.

``python -m mnist_mlp.bench`` (or ``make bench``) times, in one process, alternating epoch by epoch
after a warm-up, one training epoch plus its validation of

  (a) the project: ``runner.build`` from ``conf/`` (Trainer, DataModule, LightningModule, default
      callbacks and progress bar, MLFlowLogger to a temporary SQLite store), timed by a callback
      from one epoch start to the next, so checkpointing and logging count;
  (b) a bare PyTorch loop over the same tensors with the same network, optimizer and batch size
      (once per ``--threads`` value);
  (c) the usual torchvision path: ``MNIST`` with ``ToTensor`` + ``Normalize`` and a ``DataLoader``;

then the test evaluation (``trainer.test`` and the report files); then the profile of where (a)'s
time goes (``mnist_mlp.overhead``: one layer of the default configuration added at a time to a
bare ``Trainer``, each step paired with a bare step); and finally ``python train.py`` as a whole
process, for the fixed cost phase by phase (as the run logged it to MLflow) and the peak RSS.
(b) and (c) run inside (a)'s fit, between its epochs (outside its clock), which is what makes the
three alternate: a load change on a shared machine hits all three alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mnist_mlp import overhead
from mnist_mlp.paths import repo_root

TRAIN_SAMPLES_NOTE = "samples/s counts training images only; the time includes validation"


@dataclass
class Timings:
    """Wall and CPU seconds per epoch of each path (warm-up dropped later); peak device bytes.

    CPU seconds of this process barely move with other processes' load, where wall seconds do:
    on a shared machine their ratio is the steadier figure of overhead.
    """

    seconds: dict[str, list[float]] = field(default_factory=dict)
    cpu_seconds: dict[str, list[float]] = field(default_factory=dict)
    peak_bytes: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, seconds: float, cpu: float, peak: int = 0) -> None:
        self.seconds.setdefault(path, []).append(seconds)
        self.cpu_seconds.setdefault(path, []).append(cpu)
        self.peak_bytes[path] = max(self.peak_bytes.get(path, 0), peak)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], None]) -> tuple[float, float, int]:
    """Wall and CPU seconds of ``fn`` (device work included), the device's peak allocation."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync_device(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync_device(device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return seconds, cpu, peak


def compose(overrides: Iterable[str], tmp: Path) -> Any:
    """``conf/train.yaml`` with every output (checkpoints, MLflow, report) under ``tmp``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import mnist_mlp  # noqa: F401  (registers the ${repo_root:} resolvers)

    overrides = list(overrides)
    paths = [f"trainer.default_root_dir={tmp}", f"report_dir={tmp}/report"]
    if "~logger" not in overrides:  # ~logger: the Trainer without MLflow
        paths += [f"logger.tracking_uri=sqlite:///{tmp}/mlruns/mlflow.db",
                  f"logger.artifact_location={tmp}/mlruns/artifacts"]
    if not any(o.startswith("callbacks.model_checkpoint=") for o in overrides):
        paths.append(f"callbacks.model_checkpoint.dirpath={tmp}/checkpoints")
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # a caller (a test) may have left one initialised
    with initialize_config_dir(str(repo_root() / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[*paths, *overrides])


def precision_context(precision: str, device: torch.device) -> Any:
    """The autocast that Lightning's ``trainer.precision`` implies, for the bare loops."""
    if "bf16" in str(precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if str(precision).startswith("16") and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)  # no GradScaler: timing only
    return nullcontext()


class BareLoop:
    """(b): the arithmetic the MLP needs, on the DataModule's tensors, with nothing around it."""

    def __init__(self, cfg: Any, tensors: dict, device: torch.device, threads: int) -> None:
        from hydra.utils import instantiate

        self.device, self.threads, self.batch = device, threads, cfg.data.batch_size
        self.eval_batch, self.seed = cfg.data.eval_batch_size, cfg.seed
        self.precision = cfg.trainer.precision
        self.x, self.y = (t.to(device) for t in tensors["train"])
        self.vx, self.vy = (t.to(device) for t in tensors["val"])
        self.net = instantiate(cfg.model.net).to(device)
        self.forward = torch.compile(self.net) if cfg.model.compile else self.net
        self.opt = instantiate(cfg.model.optimizer)(self.net.parameters(), lr=cfg.model.lr)
        self.epoch = 0

    def run_epoch(self) -> None:
        """One shuffled training epoch and a validation pass, loss/accuracy kept on the device."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self._train()
            self._validate()
        finally:
            torch.set_num_threads(previous)
        self.epoch += 1

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The shuffled training batches, sliced from the tensors on the device."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.y), generator=g).to(self.device)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            yield self.x[idx], self.y[idx]

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.vy), self.eval_batch):
            sl = slice(start, start + self.eval_batch)
            yield self.vx[sl], self.vy[sl]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch; the loss stays on the device."""
        with precision_context(self.precision, self.device):
            loss = F.cross_entropy(self.forward(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()

    def _train(self) -> None:
        self.net.train()
        total = torch.zeros((), device=self.device)
        for x, y in self.batches():
            total += self.step(x, y)
        total.item()  # one host sync per epoch, as the project's epoch-level logging does

    @torch.no_grad()
    def _validate(self) -> None:
        self.net.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for x, y in self.val_batches():
            with precision_context(self.precision, self.device):
                correct += (self.forward(x).argmax(1) == y).sum()
        correct.item()


class TorchvisionLoop(BareLoop):
    """(c): the same loop fed by torchvision's MNIST Dataset (PIL per sample) and a DataLoader."""

    def __init__(self, cfg: Any, tensors: dict, device: torch.device, threads: int,
                 workers: int) -> None:
        super().__init__(cfg, tensors, device, threads)
        from torch.utils.data import DataLoader, Subset
        from torchvision import datasets, transforms

        from mnist_mlp.datamodule import split_indices

        d = cfg.data
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((d.mean,), (d.std,))])
        full = datasets.MNIST(d.data_dir, train=True, download=False, transform=tf)
        train, val = split_indices(len(full), d.val_size, d.split_seed)
        pin = device.type == "cuda"
        self.loader = DataLoader(Subset(full, train.tolist()), d.batch_size, shuffle=True,
                                 num_workers=workers, pin_memory=pin,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.val_loader = DataLoader(Subset(full, val.tolist()), d.eval_batch_size,
                                     num_workers=workers, pin_memory=pin)

    def _moved(self, loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._moved(self.loader)

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._moved(self.val_loader)


def _epoch_clock(timings: Timings, device: torch.device, between: Callable[[], None]) -> Any:
    """A callback timing (a) from one training-epoch start to the next (validation, checkpoint
    and logging included) and running ``between`` (the other paths) outside that clock."""
    import lightning as L

    class EpochClock(L.Callback):
        start: float | None = None
        cpu: float = 0.0

        def _stop(self) -> None:
            if self.start is not None:
                sync_device(device)
                peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
                timings.add("a", time.perf_counter() - self.start,
                            time.process_time() - self.cpu, peak)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self._stop()
            if self.start is not None:
                between()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync_device(device)
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self._stop()

    return EpochClock()


def bench_device(device: torch.device, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """(a), (b) per thread count and (c), alternating, then the test evaluation, on ``device``."""
    from mnist_mlp.runner import build, test_and_report
    from mnist_mlp.speed import apply_torch_settings

    accelerator = "gpu" if device.type == "cuda" else "cpu"
    overrides = [f"trainer.max_epochs={args.warmup + args.epochs}",
                 f"trainer.accelerator={accelerator}", *args.overrides]
    cfg = compose(overrides, tmp / device.type)
    apply_torch_settings(cfg)
    threads = [torch.get_num_threads(), *[t for t in args.threads if t != torch.get_num_threads()]]
    torch.manual_seed(cfg.seed)
    datamodule, model, trainer = build(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    others: list[tuple[str, BareLoop]] = [
        (f"b{t}", BareLoop(cfg, datamodule.tensors, device, t)) for t in threads]
    if not args.no_torchvision:
        others.append(("c", TorchvisionLoop(cfg, datamodule.tensors, device, threads[0],
                                            args.workers)))
    timings = Timings()

    def between() -> None:
        for name, loop in others:
            timings.add(name, *_timed(device, loop.run_epoch))

    # First in the list: (b) and (c) run before the progress bar restarts its epoch clock.
    trainer.callbacks.insert(0, _epoch_clock(timings, device, between))
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    between()  # the last round of (b) and (c)
    fit_wall = time.perf_counter() - start
    # what runner.run does after fit: test the configured checkpoint, write the report files
    test_s, _, test_peak = _timed(
        device, lambda: test_and_report(cfg, datamodule, model, trainer))
    return {"device": str(device), "threads": threads, "timings": timings, "fit_wall_s": fit_wall,
            "test_s": test_s, "test_what": "trainer.test + report files", "test_peak": test_peak,
            "train_samples": len(datamodule.tensors["train"][1]),
            "data_mb": sum(t.numel() * t.element_size() for pair in datamodule.tensors.values()
                           for t in pair) / 2**20}


def process_run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``python train.py`` for ``--process-epochs`` epochs: wall seconds, peak RSS (MB) and the
    run's phases as it logged them to MLflow (``time/<phase>_s``).

    The store is created first, outside the clock: a user's runs land in an existing store, and
    creating one (SQLite schema migrations) is a once-per-store cost, reported on its own.
    """
    from mlflow import MlflowClient

    from mnist_mlp.tracking import open_store

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


def summarise(result: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Median seconds per epoch after the warm-up, ratios to the bare loop, samples per second."""
    out: dict[str, Any] = {}
    for name, values in result["timings"].seconds.items():
        kept = sorted(values[warmup:])
        if not kept:
            continue
        median = statistics.median(kept)
        cpu = statistics.median(result["timings"].cpu_seconds[name][warmup:])
        out[name] = {"s_per_epoch": median, "min": kept[0], "max": kept[-1], "n": len(kept),
                     "cpu_s_per_epoch": cpu,
                     "samples_per_s": result["train_samples"] / median,
                     "peak_mb": result["timings"].peak_bytes.get(name, 0) / 2**20}
    base = out.get(f"b{result['threads'][0]}")
    for row in out.values():
        row["ratio_to_b"] = row["s_per_epoch"] / base["s_per_epoch"] if base else float("nan")
        row["cpu_ratio_to_b"] = (row["cpu_s_per_epoch"] / base["cpu_s_per_epoch"]
                                 if base else float("nan"))
    return out


LABELS = {"a": "(a) project: Trainer+DataModule+callbacks+MLflow",
          "c": "(c) torchvision Dataset+DataLoader"}


def print_table(device: str, result: dict[str, Any], rows: dict[str, Any]) -> None:
    print(f"\n== {device}: {TRAIN_SAMPLES_NOTE}")
    print(f"{'path':52s} {'s/epoch':>8s} {'min-max':>13s} {'x bare':>7s} {'samples/s':>10s}"
          f" {'CPU s':>7s} {'x bare':>7s} {'peak MB':>8s}")
    for name, row in rows.items():
        label = LABELS.get(name, f"(b) bare PyTorch loop, {name[1:]} thread(s)")
        peak = f"{row['peak_mb']:8.0f}" if row["peak_mb"] else "       -"
        print(f"{label:52s} {row['s_per_epoch']:8.3f} {row['min']:6.2f}-{row['max']:<6.2f}"
              f" {row['ratio_to_b']:7.2f} {row['samples_per_s']:10.0f}"
              f" {row['cpu_s_per_epoch']:7.3f} {row['cpu_ratio_to_b']:7.2f} {peak}")
    print(f"test evaluation ({result['test_what']}): {result['test_s']:.2f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mnist_mlp.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per path (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per path first")
    p.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2],
                   help="CPU thread counts for the bare loop; the project uses the config's "
                        "`threads` (default 1,2)")
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, and cuda if any)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of path (c)")
    p.add_argument("--no-torchvision", action="store_true", help="skip path (c)")
    p.add_argument("--process-epochs", type=int, default=1,
                   help="epochs of the whole-process `python train.py` run (0 skips it)")
    p.add_argument("--profile-epochs", type=int, default=2,
                   help="epochs per layer of the overhead profile (0 skips it; default 2)")
    p.add_argument("--out", default=str(repo_root() / "bench_results"),
                   help="folder for the JSON of the figures")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the project's config, "
                   "e.g. model.compile=true trainer.precision=bf16-mixed data.batch_size=100")
    return p.parse_args(argv)


def _devices(spec: str) -> list[torch.device]:
    if spec == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(d) for d in spec.split(",")]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; {args.warmup} warm-up + {args.epochs} timed epochs/path")
    report: dict[str, Any] = {"load_before": load, "argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_mb = 0.0
        for device in _devices(args.devices):
            result = bench_device(device, args, tmp)
            rows = summarise(result, args.warmup)
            print_table(str(device), result, rows)
            data_mb = result["data_mb"]
            report[str(device)] = {"paths": rows, "test_s": result["test_s"],
                                   "test_what": result["test_what"], "threads": result["threads"],
                                   "raw": result["timings"].seconds,
                                   "raw_cpu": result["timings"].cpu_seconds}
            if args.profile_epochs:
                layers = overhead.profile(args.overrides, tmp / f"{device.type}-profile", device,
                                          args.profile_epochs, result["threads"][0])
                overhead.print_profile(str(device), layers)
                report[str(device)]["profile"] = layers
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this benchmark process (all paths, data loaded twice): {rss:.0f} MB")
        if args.process_epochs:
            proc = process_run(args, tmp)
            a = report["cpu"]["paths"]["a"]["s_per_epoch"] if "cpu" in report else 0.0
            proc["fixed_s"] = proc["wall_s"] - proc["epochs"] * a
            proc["import_rss_mb"] = import_memory()
            proc["data_mb"] = data_mb
            report["process"] = proc
            print_process(proc, a)
    report["load_after"] = os.getloadavg()
    print(f"load average after: {report['load_after'][0]:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
