"""Config checks that run before any work: no data read, no MLflow run created, no trace shown.

Hydra already refuses unknown keys (``model.lrr=1``) and unknown group options; what it cannot know
is the range of a value. OmegaConf structured configs would check types only, print several lines
of internals (``object_type=...``) and, as a schema over every group, refuse the keys other options
add; so the checks below are a table of key, type and allowed range, each failure one paragraph.
Keys absent from the composed config (another group option) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra._internal.utils import _locate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_mlp import checkpoint
from mnist_mlp.errors import UserError


@dataclass(frozen=True)
class Rule:
    """A key, the type its value must have, and the range the value must lie in (as words)."""

    key: str
    kind: type
    ok: Callable[[Any], bool]
    allowed: str


def _int(key: str, low: int, allowed: str = "") -> Rule:
    return Rule(key, int, lambda v: v >= low, allowed or f"an integer >= {low}")


def _positive(key: str) -> Rule:
    return Rule(key, float, lambda v: 0 < v < math.inf, "a finite number > 0")


def _fraction(key: str) -> Rule:
    return Rule(key, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


RULES: tuple[Rule, ...] = (
    _int("seed", 0),
    _positive("model.lr"),
    _int("model.num_classes", 2),
    _int("model.net.in_features", 1),
    _int("model.net.hidden1", 1),
    _int("model.net.hidden2", 1),
    _int("model.net.hidden3", 1),
    _fraction("model.net.dropout1"),
    _fraction("model.net.dropout2"),
    _fraction("model.net.dropout3"),
    _positive("model.net.bn_eps"),
    Rule("model.net.bn_momentum", float, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    Rule("model.optimizer.momentum", float, lambda v: v >= 0, "a number >= 0"),
    Rule("model.optimizer.weight_decay", float, lambda v: v >= 0, "a number >= 0"),
    _int("data.batch_size", 1),
    _int("data.eval_batch_size", 1),
    _int("data.val_size", 1, "an integer >= 1 and smaller than the training set"),
    _int("data.split_seed", 0),
    _int("data.shuffle_seed", 0),
    _positive("data.std"),
    Rule("data.mean", float, math.isfinite, "a finite number"),
    Rule("trainer.max_epochs", int, lambda v: v >= 1 or v == -1, "an integer >= 1 (-1: no limit)"),
    Rule("test_ckpt", str, lambda v: v in ("best", "last"), "best or last"),
    Rule("model.steps_per_iteration", object,
         lambda v: v == "auto" or (isinstance(v, int) and v >= 1), "an integer >= 1 or auto"),
    _positive("model.gradient_clip_val"),
    Rule("model.gradient_clip_algorithm", str, lambda v: v in ("norm", "value"), "norm or value"),
    Rule("callbacks.progress_bar.mode", str, lambda v: v in ("auto", "bar", "lines"),
         "auto (the bar on a terminal, one line per epoch otherwise), bar or lines"),
    Rule("logger.system_metrics", bool, lambda v: True, "true or false"),
    _positive("logger.system_metrics_interval"),
)

#: Trainer keys Lightning refuses under manual optimization (the fused step), with what to set.
MANUAL_OPTIMIZATION = {
    "trainer.gradient_clip_val": ("null", "model.gradient_clip_val (and model.gradient_clip_algorithm)"),
    "trainer.gradient_clip_algorithm": ("null", "model.gradient_clip_algorithm"),
    "trainer.accumulate_grad_batches": ("1", "a larger data.batch_size"),
}


def _type_ok(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # bool is an int to Python, never a size or a rate here
        return kind is bool
    if kind is object:  # the rule's range check decides
        return True
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


def _refuse(key: str, value: Any, allowed: str, why: str = "") -> UserError:
    return UserError(
        f"{key}={value!r} is not allowed: it must be {allowed}{why}. Change it in conf/ or on the "
        f"command line (python train.py {key}=...) and run again."
    )


def check_values(cfg: DictConfig) -> None:
    """Every key of ``RULES`` present in ``cfg`` has the right type and lies in its range."""
    for rule in RULES:
        value = OmegaConf.select(cfg, rule.key, default=None)
        if value is None:
            continue
        if not (_type_ok(value, rule.kind) and rule.ok(value)):
            raise _refuse(rule.key, value, rule.allowed)


def check_manual_optimization(cfg: DictConfig) -> None:
    """The trainer keys the fused training step cannot honour, refused with the key to use."""
    for key, (neutral, instead) in MANUAL_OPTIMIZATION.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None or str(value) == neutral:
            continue
        raise UserError(
            f"{key}={value!r} is not allowed: the training step runs several optimizer steps per "
            f"Lightning iteration (manual optimization), which Lightning's {key.split('.')[1]} does "
            f"not support. Remove it (or set {key}={neutral}) and use {instead} instead."
        )


def check_targets(cfg: DictConfig) -> None:
    """Every ``_target_`` names a class or function that can be imported."""
    for key, target in checkpoint.targets(OmegaConf.to_container(cfg, resolve=False)):
        try:
            _locate(target)  # what instantiate uses; hydra.utils.get_object also logs an ERROR
        except Exception:  # noqa: BLE001 - Hydra raises ImportError or ValueError
            raise _refuse(key, target, "an importable class or function, e.g. torch.optim.SGD",
                          ", and this one cannot be imported") from None


def check_optimizer(cfg: DictConfig) -> None:
    """``model.optimizer`` and ``model.scheduler`` build over a stand-in parameter: their keys reach
    torch only when ``fit`` configures the optimizer, after the MLflow run has started."""
    model = cfg.get("model")
    if model is None or model.get("optimizer") is None:
        return
    import torch

    from mnist_mlp.module import build_optimizer

    plain = OmegaConf.to_container(model, resolve=True)
    build_optimizer(plain["optimizer"], plain.get("scheduler"),
                    [torch.nn.Parameter(torch.zeros(1))], plain["lr"])


def resolve(cfg: DictConfig) -> None:
    """``OmegaConf.resolve`` with a broken interpolation reported as a user error."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "a config value"
        raise UserError(
            f"{key} cannot be resolved: {str(err).splitlines()[0]}. Fix the ${{...}} reference in "
            "conf/ or on the command line and run again."
        ) from None


RESUME_ADVICE = ("Give the checkpoint file to resume from, e.g. outputs/<date>/<time>/checkpoints/"
                 "last.ckpt, or leave ckpt_path=null to start afresh")


def check_ckpt_path(cfg: DictConfig) -> None:
    """A resume checkpoint exists, loads safely and was trained with the configured network.

    Lightning would load a foreign ``state_dict`` with a size-mismatch trace, or an optimizer state
    into another optimizer; comparing the saved hyperparameters names the keys instead.
    """
    if cfg.get("ckpt_path") is None:
        return
    path = Path(str(cfg.ckpt_path)).expanduser()
    saved = checkpoint.hyperparameters(checkpoint.read(path, advice=RESUME_ADVICE), path)
    net = OmegaConf.to_container(cfg.model.net, resolve=True) if "net" in cfg.model else None
    have = {"model.net": saved.get("net"), "model.optimizer._target_": None}
    have["model.optimizer._target_"] = (saved.get("optimizer") or {}).get("_target_")
    want = {"model.net": net,
            "model.optimizer._target_": OmegaConf.select(cfg, "model.optimizer._target_")}
    fixes = []
    for key in have:
        if isinstance(have[key], dict) and isinstance(want[key], dict):
            fixes += [f"{key}.{k}={have[key].get(k)}" for k in sorted(have[key].keys() |
                      want[key].keys()) if have[key].get(k) != want[key].get(k)]
        elif have[key] != want[key]:
            fixes.append(f"{key}={have[key]}")
    if fixes:
        raise UserError(
            f"ckpt_path={path} was trained with another model than the config describes: it needs "
            f"{' '.join(fixes)}. Resume with those settings (python train.py ckpt_path={path} "
            f"{' '.join(fixes)}), or train afresh with ckpt_path=null."
        )


def check(cfg: DictConfig) -> None:
    """All checks, in the order a user would fix them: references, values, targets, checkpoint."""
    resolve(cfg)
    check_values(cfg)
    check_manual_optimization(cfg)
    check_targets(cfg)
    check_optimizer(cfg)
    check_ckpt_path(cfg)
