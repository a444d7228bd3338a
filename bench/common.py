"""What every benchmark job shares: the composed config, device sync, a wall/CPU clock."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnist_mlp.paths import repo_root


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


def timed(device: torch.device, fn: Callable[[], None]) -> tuple[float, float, int]:
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
    paths = [f"trainer.default_root_dir={tmp}", f"report.dir={tmp}/report"]
    if "~logger" not in overrides:  # ~logger: the Trainer without MLflow
        paths += [f"logger.tracking_uri=sqlite:///{tmp}/mlruns/mlflow.db",
                  f"logger.artifact_location={tmp}/mlruns/artifacts",
                  f"logger.buffer_dir={tmp}/mlflow_buffer"]
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




def write_figures(report: dict[str, Any], out: str | Path, prefix: str) -> Path:
    """The load average after the run into ``report``, printed; ``report`` as JSON in ``out``."""
    report["load_after"] = os.getloadavg()
    print(f"load average after: {report['load_after'][0]:.2f}")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"figures: {path}")
    return path
