"""Training faults: non-finite loss, Ctrl-C or SIGTERM, exact resume, no half-written checkpoint.

Lightning already turns SIGTERM into ``SIGTERMException`` after the current batch and Ctrl-C into a
graceful shutdown, calling every callback's ``on_exception`` first; these callbacks hook in there.
What Lightning lacks is written here, each class saying why.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_mlp import epochs
from mnist_mlp.atomic import write_atomic
from mnist_mlp.errors import UserError, no_space

#: Exit status after SIGTERM, as a shell reports a process killed by it (128 + 15).
SIGTERM_EXIT = 143


def is_interrupt(exception: BaseException) -> bool:
    """Ctrl-C or SIGTERM as Lightning hands them to ``on_exception`` (for tracking, too)."""
    return isinstance(exception, KeyboardInterrupt | SIGTERMException)


class StopOnNonFiniteLoss(Callback):
    """Stops training with a message within ``every_n_steps`` optimizer steps of a NaN or infinite
    loss, rounded up to a whole iteration (an iteration runs ``model.steps_per_iteration`` steps).

    ``EarlyStopping(check_finite=True)`` looks only at epoch ends and stops with success (exit 0);
    Lightning 2 dropped ``terminate_on_nan``. The flag is kept on the device so the check costs one
    host sync every ``every_n_steps`` steps, not one per step. It also runs before validation and at
    the epoch end, so ModelCheckpoint never saves a ``last.ckpt`` of broken weights.
    """

    def __init__(self, every_n_steps: int = 20) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._bad: torch.Tensor | None = None
        self._checked_at = 0  # trainer.global_step (optimizer steps) at the last check

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        bad = ~torch.isfinite(loss.detach()).all()
        self._bad = bad if self._bad is None else self._bad | bad
        if trainer.global_step - self._checked_at >= self.every_n_steps:
            self._checked_at = trainer.global_step
            self._raise_if_bad(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._raise_if_bad(trainer)

    def _raise_if_bad(self, trainer: L.Trainer) -> None:
        if self._bad is None or not bool(self._bad):
            return
        self._bad = None
        last = last_epoch_checkpoint(trainer)
        resume = (f" The last good checkpoint is {last}: resume from it with a lower rate "
                  f"(python train.py ckpt_path={last} model.lr=...)." if last else "")
        raise UserError(
            f"Training stopped in epoch {epochs.of(trainer)} (step {trainer.global_step}): the "
            "training loss became NaN or infinite, so the weights are no longer usable. This "
            "usually means model.lr is too high for the optimizer; lower model.lr (the reference "
            f"uses 0.1 with SGD) and run again.{resume}"
        )


def last_epoch_checkpoint(trainer: L.Trainer) -> str:
    """The checkpoint of the latest finished epoch (the unmonitored ``last_checkpoint`` callback)."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is None:
            return callback.best_model_path or callback.last_model_path or ""
    return getattr(trainer.checkpoint_callback, "last_model_path", "") or ""


class CheckpointOnInterrupt(Callback):
    """Saves ``<dirpath>/<filename>.ckpt`` on Ctrl-C or SIGTERM and prints how to resume.

    Like Lightning's ``OnExceptionCheckpoint``, but only for interrupts (after a crash or a
    non-finite loss the weights are not worth resuming from), and not a ``Checkpoint`` subclass:
    a second one would make ``test(ckpt_path="best")`` ambiguous.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.ckpt_path = os.path.join(dirpath, f"{filename}.ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception:
                     BaseException) -> None:
        if not is_interrupt(exception):
            return
        # Every rank (a barrier); rank 0 writes. The full state, to resume from (saying so keeps
        # Lightning from logging that it chose it).
        trainer.save_checkpoint(self.ckpt_path, weights_only=False)
        if not trainer.is_global_zero:
            return
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        last = last_epoch_checkpoint(trainer)
        # Same output folder: ModelCheckpoint then keeps its best-so-far score across the resume.
        hint = (f" {last} is the last checkpoint ModelCheckpoint saved at an epoch end. Resume "
                f"with:\n  python train.py ckpt_path={self.ckpt_path} "
                f"hydra.run.dir={trainer.default_root_dir}" if last else "")
        print(
            f"Training stopped by {what} in epoch {epochs.of(trainer)} (step "
            f"{trainer.global_step}). Saved the current state to {self.ckpt_path}.{hint}",
            file=sys.stderr, flush=True,
        )


class RngStateInCheckpoint(Callback):
    """Saves torch's random state (dropout) with each checkpoint and restores it on resume.

    Lightning restores weights, optimizer, schedulers and loop counters but not the global random
    state, so dropout masks after a resume would differ from an uninterrupted run. The shuffle is
    already reproducible (seeded with ``seed + epoch`` by the data module).
    """

    def __init__(self) -> None:
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Applied here, not on load: model building and sanity checks draw from the generator
        # between loading the checkpoint and the first training step.
        if self._loaded is None:
            return
        torch.set_rng_state(self._loaded["torch"])
        if "cuda" in self._loaded and torch.cuda.is_available():
            cuda = self._loaded["cuda"]
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
        self._loaded = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint with ``atomic.write_atomic``: never a half-written ``last.ckpt``.

    Lightning's own write goes through fsspec's transaction, whose temporary file lives in the
    system temp folder: when that is another file system (tmpfs), the final move is a copy, and a
    kill during it leaves a half-written ``last.ckpt`` where a complete one was.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(checkpoint, f))


@contextlib.contextmanager
def disk_full_explained(folder: str | os.PathLike, command: str = "train.py",
                        what_is_kept: Callable[[], str] | None = None) -> Iterator[None]:
    """Inside the block, a full disk becomes a ``UserError`` naming the folder and what to do.

    A full disk is the user's to fix (free space, or write elsewhere), so it gets the one paragraph
    and exit status 2 rather than a traceback. ``what_is_kept``: a sentence on what was saved
    before (the checkpoints, how to resume), asked for when the disk is full. Everything else
    passes through unchanged.
    """
    try:
        yield
    except Exception as err:
        full = no_space(err)
        if full is None:
            raise
        where = f" while writing {full.filename}" if full.filename else ""
        raise UserError(
            f"The disk holding {folder} is full: OSError: [Errno {full.errno}] "
            f"{os.strerror(full.errno)}{where}. Free space there, or write the outputs to another "
            f"disk (python {command} ... hydra.run.dir=<a folder with room>), and run again."
            f"{' ' + what_is_kept() if what_is_kept else ''}"
        ) from None


def kept_checkpoints(folder: str | os.PathLike) -> str:
    """What a stopped run keeps in its checkpoint ``folder``, and how to resume from it."""
    ckpts = sorted(p.name for p in Path(folder).glob("*.ckpt")) if Path(folder).is_dir() else []
    if not ckpts:
        return "No checkpoint had been saved."
    last = Path(folder) / "last.ckpt"
    resume = (f" Once there is room, resume with: python train.py ckpt_path={last} "
              f"hydra.run.dir={Path(folder).parent}" if last.is_file() else "")
    return f"The checkpoints saved before are intact in {folder} ({', '.join(ckpts)}).{resume}"
