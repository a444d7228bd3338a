"""Where the project's training time goes beyond the bare loop: the profile ``make bench`` prints.

Epoch timings on a shared 2-core VM move by ±25% from one epoch to the next (the bare loop alone
does), which drowns a 5% difference between two configurations timed minutes apart. So each
Lightning training step here is paired with one bare step run right after it (same batch size,
same network and optimizer, outside the Lightning step's clock): both see the same machine state,
and medians of 500 such pairs are steady to a few percent. Starting from a bare ``Trainer``, one
layer of the default configuration is added at a time, so the table reads as what each one
costs. The first layer is the plain one-step-per-iteration ``Trainer``, the second adds the fused
iteration (``model.steps_per_iteration`` steps in one); every step of an iteration is paired with a
bare step, and times are per optimizer step.

Per-epoch work (validation, checkpoints, MLflow logging, epoch-end metrics) is timed from the
end of the last training step to the next epoch's start, against the bare loop's validation pass.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from bench.common import compose, sync_device
from bench.loops import BareLoop
from mnist_mlp.fused import resolve_steps


def layer_overrides(callback_names: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Cumulative layers: (label, Hydra overrides that switch off what is not yet added)."""
    off = {
        "fused": ["model.steps_per_iteration=1"],
        "validation": ["trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0"],
        "train_metrics": ["model.train_metrics=false"],
        "callbacks": [*[f"callbacks.{name}=null" for name in callback_names],
                      "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                      "+trainer.enable_checkpointing=false", "trainer.plugins=null"],
        "logger": ["~logger"],
    }
    labels = [
        ("Trainer alone, 1 step/iteration (no validation, metrics, callbacks, logger)", None),
        ("+ fused iteration (model.steps_per_iteration steps each)", "fused"),
        ("+ validation every epoch", "validation"),
        ("+ training metrics (loss/train, acc/train)", "train_metrics"),
        ("+ default callbacks (checkpoints, progress bar, faults)", "callbacks"),
        ("+ MLflow logger = (a), the default configuration", "logger"),
    ]
    layers, switched_off = [], list(off)
    for label, added in labels:
        if added is not None:
            switched_off.remove(added)
        layers.append((label, [o for key in switched_off for o in off[key]]))
    return layers


@dataclass
class PairedSteps(L.Callback):
    """Times each Lightning step against a bare step run right after it, and each epoch end."""

    bare: Any  # bench.loops.BareLoop
    steps: list[float] = field(default_factory=list)
    # iteration start to end only: what an epoch of a single iteration leaves to measure
    inside_steps: list[float] = field(default_factory=list)
    bare_steps: list[float] = field(default_factory=list)
    epoch_ends: list[float] = field(default_factory=list)
    bare_validations: list[float] = field(default_factory=list)
    _start: float | None = None
    _bare_s: float = 0.0
    _n: int = 1
    _end: float | None = None

    def __post_init__(self) -> None:
        self._generator = torch.Generator().manual_seed(0)

    def _bare_step(self) -> float:
        b = self.bare
        b.net.train()
        start = time.perf_counter()
        idx = torch.randint(0, len(b.y), (b.batch,), generator=self._generator).to(b.device)
        b.step(b.x[idx], b.y[idx])
        sync_device(b.device)
        return time.perf_counter() - start

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._start is not None and batch_idx > 0:
            self.steps.append((now - self._start - self._bare_s) / self._n)
        self._start = now

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        sync_device(pl_module.device)
        self._n = len(batch) if isinstance(batch, list) else 1  # optimizer steps in the iteration
        if self._start is not None:
            self.inside_steps.append((time.perf_counter() - self._start) / self._n)
        bare = [self._bare_step() for _ in range(self._n)]
        self._bare_s = sum(bare)
        self.bare_steps.extend(bare)
        self._end = time.perf_counter()

    def _epoch_boundary(self) -> None:
        if self._end is None:
            return
        self.epoch_ends.append(time.perf_counter() - self._end)
        self._end = None
        start = time.perf_counter()
        self.bare._validate()
        self.bare_validations.append(time.perf_counter() - start)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_boundary()
        self._start = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._epoch_boundary()


def profile_layer(cfg: Any, bare: Any) -> dict[str, float]:
    """Fit ``cfg`` with paired timing; medians in seconds and the implied epoch ratio."""
    from mnist_mlp.runner import build

    datamodule, model, trainer = build(cfg)
    paired = PairedSteps(bare)
    trainer.callbacks.insert(0, paired)
    trainer.fit(model, datamodule=datamodule)
    n = trainer.global_step // max(1, trainer.current_epoch)  # optimizer steps per epoch
    step = statistics.median(paired.steps or paired.inside_steps)
    bare_step = statistics.median(paired.bare_steps)
    # the first epoch end carries one-off work (first checkpoint file, first MLflow batch)
    ends = paired.epoch_ends[1:] or paired.epoch_ends
    end, bare_val = statistics.median(ends), statistics.median(paired.bare_validations)
    return {"step_s": step, "bare_step_s": bare_step, "step_ratio": step / bare_step,
            "epoch_end_s": end, "bare_validation_s": bare_val, "steps_per_epoch": n,
            "epoch_ratio": (n * step + end) / (n * bare_step + bare_val)}


def profile(overrides: Sequence[str], tmp: Path, device: torch.device, epochs: int,
            threads: int) -> list[dict[str, Any]]:
    """Each cumulative layer fitted for ``epochs`` epochs, paired with one shared bare loop."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    common = [f"trainer.max_epochs={epochs}", f"trainer.accelerator={accelerator}", *overrides]
    default = compose(common, tmp / "profile-default")
    layers = layer_overrides(list(default.get("callbacks") or {}))
    steps = resolve_steps(default.model.steps_per_iteration, device)
    layers[1] = (layers[1][0].replace("model.steps_per_iteration", str(steps)), layers[1][1])
    bare, rows = None, []
    for i, (label, layer) in enumerate(layers):
        cfg = compose([*common, *layer], tmp / f"profile-{i}")
        if bare is None:
            from hydra.utils import instantiate

            datamodule = instantiate(cfg.data, _convert_="all")
            datamodule.prepare_data()
            datamodule.setup("fit")
            bare = BareLoop(cfg, datamodule, device, threads)
            bare.run_epoch()  # warm-up
            del datamodule
        rows.append({"layer": label, **profile_layer(cfg, bare)})
    return rows


def print_profile(device: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {device}: where (a)'s time goes. Each Lightning step is paired with a bare step run "
          "right after it (medians); epoch end = validation, checkpoints, logging")
    print(f"{'layer added':58s} {'ms/step':>8s} {'bare':>6s} {'x bare':>7s} {'+x':>6s}"
          f" {'epoch end s':>11s} {'bare val s':>10s} {'epoch x bare':>12s}")
    previous = None
    for row in rows:
        added = "" if previous is None else f"{row['step_ratio'] - previous:+6.3f}"
        print(f"{row['layer']:58s} {row['step_s'] * 1e3:8.3f} {row['bare_step_s'] * 1e3:6.3f}"
              f" {row['step_ratio']:7.3f} {added:>6s} {row['epoch_end_s']:11.3f}"
              f" {row['bare_validation_s']:10.3f} {row['epoch_ratio']:12.3f}")
        previous = row["step_ratio"]
