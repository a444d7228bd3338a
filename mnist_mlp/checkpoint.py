"""Reading a training checkpoint safely: tensors and plain containers only, clear errors.

The project's one way to open a ``.ckpt`` file (resuming checks it before training, ``evaluate.py``
tests it). ``torch.load(..., weights_only=True)`` refuses pickled code. The network is then rebuilt
from the checkpoint's own hyperparameters (a ``_target_`` dict), never from the current config, so
the weights meet the architecture they were trained in. Because ``_target_`` names a callable that
Hydra imports and calls, every ``_target_`` in the network spec must start with an allowed prefix
(``mnist_mlp.`` by default): a crafted checkpoint cannot make evaluation call arbitrary code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException

from mnist_mlp.errors import UserError
from mnist_mlp.module import MnistLitModule

DEFAULT_ALLOWED = ("mnist_mlp.",)
#: What to do about a checkpoint that cannot be used, by default.
USE_ANOTHER = ("Give a .ckpt file written by this project's train.py "
               "(outputs/<date>/<time>/checkpoints/last.ckpt or epochNNN.ckpt)")


def read(path: str | os.PathLike, key: str = "ckpt_path", advice: str = USE_ANOTHER) -> dict[str, Any]:
    """The checkpoint's contents, loaded on the CPU with ``weights_only=True``.

    Every refusal names ``key=path`` and ends with ``advice``; the file is never changed.
    """
    p = Path(path).expanduser()
    where = f"{key}={p}"
    if not p.is_file():
        raise UserError(f"{where} {'is a folder' if p.is_dir() else 'does not exist'}. {advice}.")
    try:
        if not zipfile.is_zipfile(p):  # torch.save (and Lightning) write zip archives
            raise ValueError("not a zip archive")
        # mmap: a caller that reads the epoch or the hyperparameters alone (the resume check, the
        # report's provenance) does not copy the weights; Lightning loads the file for training.
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        detail = [ln for ln in str(err).splitlines() if "Unsupported global" in ln] or ["-"]
        raise UserError(
            f"{where} holds objects other than tensors and plain containers, so it is not loaded "
            f"(weights_only=True refuses pickled code; {detail[0].strip()}). {advice}."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(
            f"{where} is not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}): it is corrupt, truncated "
            f"or not a checkpoint written by train.py. The file was left as it is. {advice}."
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{where} is not a checkpoint written by train.py (a Lightning checkpoint "
                        f"holds a state_dict; this file does not). {advice}.")
    return ckpt


def hyperparameters(ckpt: Mapping[str, Any], path: str | os.PathLike,
                    key: str = "ckpt_path") -> dict[str, Any]:
    """The module's saved hyperparameters, which must describe the network (``net``)."""
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise UserError(
            f"{key}={path} has no network hyperparameters (hyper_parameters.net), so the network it "
            f"was trained with is unknown. {USE_ANOTHER}."
        )
    return hparams


def targets(node: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, target)`` of every ``_target_`` in a tree of plain dicts and lists."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield f"{prefix}{key}", value
            else:
                yield from targets(value, f"{prefix}{key}.")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from targets(value, f"{prefix}{i}.")


def load_module(path: str | os.PathLike, allowed_targets: Sequence[str] = DEFAULT_ALLOWED,
                key: str = "ckpt_path") -> tuple[MnistLitModule, dict[str, Any]]:
    """The trained ``MnistLitModule`` (eval-ready, on the CPU) and the checkpoint's contents."""
    ckpt = read(path, key)
    hparams = hyperparameters(ckpt, path, key)
    allowed = tuple(allowed_targets)
    refused = [t for _, t in targets(hparams["net"]) if not t.startswith(allowed)]
    if refused:
        raise UserError(
            f"{key}={path} builds its network from {refused[0]!r}, outside the allowed prefixes "
            f"{list(allowed)}; refusing to import it. If you trust this checkpoint, add the prefix "
            "to allowed_targets."
        )
    try:
        module = MnistLitModule(**hparams)
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except (TypeError, RuntimeError, KeyError, ValueError, InstantiationException) as err:
        raise UserError(
            f"{key}={path} does not fit MnistLitModule ({str(err).splitlines()[0]}): its weights do "
            f"not match the network its hyperparameters describe. {USE_ANOTHER}."
        ) from None
    return module, ckpt
