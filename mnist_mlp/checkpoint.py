"""Loading a training checkpoint safely: tensors and plain containers only, clear errors.

``torch.load(..., weights_only=True)`` refuses pickled code. The network is then rebuilt from the
checkpoint's own hyperparameters (a ``_target_`` dict), never from the current config, so the
weights meet the architecture they were trained in. Because ``_target_`` names a callable that
Hydra imports and calls, every ``_target_`` in the network spec must start with an allowed prefix
(``mnist_mlp.`` by default): a crafted checkpoint cannot make evaluation call arbitrary code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException

from mnist_mlp.errors import UserError
from mnist_mlp.module import MnistLitModule

DEFAULT_ALLOWED = ("mnist_mlp.",)


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents, loaded on the CPU with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(
            f"Checkpoint {p} does not exist. Set ckpt_path to a .ckpt file written by train.py "
            "(outputs/<date>/<time>/checkpoints/last.ckpt or epochNNN.ckpt)."
        )
    try:
        if not zipfile.is_zipfile(p):  # torch.save (and Lightning) write zip archives
            raise ValueError("not a zip archive")
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = [ln for ln in str(err).splitlines() if "Unsupported global" in ln] or ["-"]
        raise UserError(
            f"Checkpoint {p} holds objects other than tensors and plain containers, so it is not "
            f"loaded (weights_only=True refuses pickled code; {detail[0].strip()}). Use a "
            "checkpoint written by this project's train.py."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(
            f"Checkpoint {p} is not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}): it is corrupt or "
            "truncated. Use another checkpoint of the run (last.ckpt or epochNNN.ckpt)."
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{p} is not a Lightning checkpoint (no state_dict): {_foreign_hint()}")
    return ckpt


def _foreign_hint() -> str:
    return "use a checkpoint written by this project's train.py (MnistLitModule)."


def _targets(spec: Any) -> Iterator[str]:
    if isinstance(spec, dict):
        if "_target_" in spec:
            yield str(spec["_target_"])
        for value in spec.values():
            yield from _targets(value)
    elif isinstance(spec, list | tuple):
        for value in spec:
            yield from _targets(value)


def load_module(
    path: str | os.PathLike, allowed_targets: Sequence[str] = DEFAULT_ALLOWED
) -> tuple[MnistLitModule, dict[str, Any]]:
    """The trained ``MnistLitModule`` (eval-ready, on the CPU) and the checkpoint's contents."""
    ckpt = read(path)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise UserError(
            f"Checkpoint {path} has no network hyperparameters (hyper_parameters.net): "
            f"{_foreign_hint()}"
        )
    allowed = tuple(allowed_targets)
    refused = [t for t in _targets(hparams["net"]) if not t.startswith(allowed)]
    if refused:
        raise UserError(
            f"Checkpoint {path} builds its network from {refused[0]!r}, outside the allowed "
            f"prefixes {list(allowed)}; refusing to import it. If you trust this checkpoint, add "
            "the prefix to allowed_targets."
        )
    try:
        module = MnistLitModule(**hparams)
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, RuntimeError, KeyError, ValueError, InstantiationException) as err:
        raise UserError(
            f"Checkpoint {path} does not fit MnistLitModule ({str(err).splitlines()[0]}): its "
            f"weights do not match the network its hyperparameters describe; {_foreign_hint()}"
        ) from None
    return module, ckpt
