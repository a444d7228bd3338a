"""Epoch timing of (a), (b) and (c), alternating inside (a)'s fit; the table of the figures."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import Timings, compose, sync_device, timed
from bench.loops import BareLoop, GraphLoop, TorchvisionLoop

TRAIN_SAMPLES_NOTE = "samples/s counts training images only; the time includes validation"


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
    """(a), (b) per thread count, (g) on CUDA and (c), alternating, then the test evaluation."""
    from mnist_mlp import config
    from mnist_mlp.report import background
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
    settings = config.build(cfg.report, "report")
    if settings.background:
        background.start()  # as runner.run: the report's worker starts before fit
    datamodule.prepare_data()
    datamodule.setup("fit")
    others: list[tuple[str, BareLoop]] = [
        (f"b{t}", BareLoop(cfg, datamodule, device, t)) for t in threads]
    if device.type == "cuda" and str(cfg.trainer.precision) == "32-true":  # the anchor: no autocast
        others.append(("g", GraphLoop(cfg, datamodule, device, threads[0])))
    if not args.no_torchvision:
        others.append(("c", TorchvisionLoop(cfg, datamodule, device, threads[0],
                                            args.workers)))
    timings = Timings()

    def between() -> None:
        for name, loop in others:
            timings.add(name, *timed(device, loop.run_epoch))

    # First in the list: (b) and (c) run before the progress bar restarts its epoch clock.
    trainer.callbacks.insert(0, _epoch_clock(timings, device, between))
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    between()  # the last round of (b) and (c)
    fit_wall = time.perf_counter() - start
    # what runner.run does after fit: test the configured checkpoint, write the report files
    test_s, _, test_peak = timed(
        device, lambda: test_and_report(cfg, datamodule, model, trainer, settings).wait())
    return {"device": str(device), "threads": threads, "timings": timings, "fit_wall_s": fit_wall,
            "steps_per_iteration": model.steps_per_iteration, "step": model.fused_step.kind,
            "test_s": test_s, "test_what": "trainer.test + report files", "test_peak": test_peak,
            "train_samples": len(datamodule.tensors["train"][1]),
            "data_mb": sum(t.numel() * t.element_size() for pair in datamodule.tensors.values()
                           for t in pair) / 2**20}



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
          "g": "(g) bare loop, one CUDA graph per step",
          "c": "(c) torchvision Dataset+DataLoader"}


def print_table(device: str, result: dict[str, Any], rows: dict[str, Any]) -> None:
    print(f"\n== {device}: {TRAIN_SAMPLES_NOTE}; (a) runs {result['steps_per_iteration']} "
          f"optimizer steps per iteration, {result['step']} step")
    print(f"{'path':52s} {'s/epoch':>8s} {'min-max':>13s} {'x bare':>7s} {'samples/s':>10s}"
          f" {'CPU s':>7s} {'x bare':>7s} {'peak MB':>8s}")
    for name, row in rows.items():
        label = LABELS.get(name, f"(b) bare PyTorch loop, {name[1:]} thread(s)")
        peak = f"{row['peak_mb']:8.0f}" if row["peak_mb"] else "       -"
        print(f"{label:52s} {row['s_per_epoch']:8.3f} {row['min']:6.2f}-{row['max']:<6.2f}"
              f" {row['ratio_to_b']:7.2f} {row['samples_per_s']:10.0f}"
              f" {row['cpu_s_per_epoch']:7.3f} {row['cpu_ratio_to_b']:7.2f} {peak}")
    print(f"test evaluation ({result['test_what']}): {result['test_s']:.2f} s")


