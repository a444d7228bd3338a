"""``python -m bench``: arguments, the order of the jobs, the JSON file of the figures."""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import bench
from bench import cost, epochs, process, profile
from bench.common import write_figures
from mnist_mlp import console
from mnist_mlp.paths import repo_root


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=bench.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per path (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per path first")
    p.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2],
                   help="CPU thread counts for the bare loop; the project uses the config's "
                        "`threads` (default 1,2)")
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (cpu, and cuda if any)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of path (c)")
    p.add_argument("--no-torchvision", action="store_true", help="skip path (c)")
    p.add_argument("--cost-rounds", type=int, default=3,
                   help="rounds of the fixed-cost section: the import floor, then train.py, a "
                        "sweep's second job and evaluate.py as whole processes (0 skips it)")
    p.add_argument("--cost-epochs", type=int, default=2,
                   help="epochs of those runs (at least 2: the last one is their epoch time)")
    p.add_argument("--baseline", default=None,
                   help="another checkout whose train.py, sweep and evaluate.py the fixed-cost "
                        "section also times, in the same rounds (before/after figures)")
    p.add_argument("--no-sweep-memory", dest="sweep_memory", action="store_false",
                   help="skip the memory of a 2-job joblib sweep")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # python -m bench serve: the scoring server (bench/serve.py)
        from bench import serve

        return serve.main(argv[1:])
    only_cost = argv[:1] == ["cost"]  # python -m bench cost: that section alone
    args = parse_args(argv[1:] if only_cost else argv)
    console.quiet_libraries()  # as train.py: no Lightning tips or srun hints among the figures
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f}; {args.warmup} warm-up + {args.epochs} timed epochs/path")
    report: dict[str, Any] = {"load_before": load, "argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for device in [] if only_cost else _devices(args.devices):
            result = epochs.bench_device(device, args, tmp)
            rows = epochs.summarise(result, args.warmup)
            epochs.print_table(str(device), result, rows)
            report[str(device)] = {"paths": rows, "test_s": result["test_s"],
                                   "data_mb": result["data_mb"],
                                   "test_what": result["test_what"], "threads": result["threads"],
                                   "raw": result["timings"].seconds,
                                   "raw_cpu": result["timings"].cpu_seconds,
                                   "steps_per_iteration": result["steps_per_iteration"],
                                   "step": result["step"]}
            if args.profile_epochs:
                layers = profile.profile(args.overrides, tmp / f"{device.type}-profile", device,
                                         args.profile_epochs, result["threads"][0])
                profile.print_profile(str(device), layers)
                report[str(device)]["profile"] = layers
        if not only_cost:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS of this benchmark process (all paths, data loaded twice): {rss:.0f} MB")
        if args.cost_rounds:
            report["cost"] = cost.run(args, tmp)
            report["import_rss_mb"] = process.import_memory()
            print_imports(report["import_rss_mb"])
    write_figures(report, args.out, "bench")
    return 0


def print_imports(imports: dict[str, float]) -> None:
    """The resident memory each import of the stack adds, in a fresh interpreter."""
    steps, previous = [], 0.0
    for name, mb in imports.items():
        steps.append(f"{name} {mb - previous:+.0f}")
        previous = mb
    print(f"resident memory of a fresh interpreter importing the stack: {previous:.0f} MB "
          f"({', '.join(steps)} MB)")
