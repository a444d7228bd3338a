"""What stops a training step from being captured as a CUDA graph, each with the reason to log."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm  # the base of every BatchNorm (none is public)

from mnist_mlp.fused.eager import direct_blocker

#: Device types whose step ``torch.cuda.graphs`` captures.
GRAPH_DEVICES = ("cuda",)

#: The optimizers whose warm-up before capture ``GraphStep`` can undo by zeroing the state it
#: created: their fresh state is all zeros (SGD's first step copies the gradient into the momentum
#: buffer, which a zero buffer gives as well where dampening is 0). Others start elsewhere
#: (NAdam's ``mu_product`` at 1, ASGD's ``eta`` at lr, Rprop's ``step_size`` at lr): zeroed, they
#: train wrongly.
GRAPH_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def full_batch_size(trainer: Any) -> int | None:
    """The training loader's batch size (``data.batch_size``): the only size the graph replays."""
    return getattr(trainer.train_dataloader, "batch_size", None)


def graph_blocker(module: Any) -> str | None:
    """Why the step cannot be captured as a CUDA graph here, or None when it can."""
    trainer = module.trainer
    through_lightning = direct_blocker(module)  # a replayed graph calls no strategy or hook
    checks = [
        (module.device.type not in GRAPH_DEVICES, f"the device is {module.device.type}"),
        (not module.hparams.get("cuda_graph", True), "model.cuda_graph=false"),
        (through_lightning is not None, f"the step must go through Lightning: {through_lightning}"),
        (str(trainer.precision) != "32-true", f"precision {trainer.precision} scales or casts "
                                               "outside the captured kernels"),
        (bool(module.hparams.get("compile")), "model.compile=true"),
        (bool(module.hparams.get("gradient_clip_val")), "gradient clipping is configured"),
        (bool(trainer.lr_scheduler_configs), "an LR scheduler changes the rate a captured "
                                              "optimizer step holds as a constant"),
        (torch.is_anomaly_enabled(), "anomaly detection is on (trainer.detect_anomaly=true): "
                                     "it reads every backward result on the host, which a "
                                     "capture cannot"),
        (full_batch_size(trainer) is None, "the training loader has no batch_size, the size the "
                                           "step is captured at"),
    ]
    why = next((why for blocked, why in checks if blocked), None)
    return why or optimizer_blocker(module.optimizers().optimizer) or network_blocker(module)


def optimizer_blocker(optimizer: torch.optim.Optimizer) -> str | None:
    """Why a captured step of ``optimizer`` would train differently from its eager step, or None."""
    name, groups = type(optimizer).__name__, optimizer.param_groups
    if type(optimizer) not in GRAPH_OPTIMIZERS:
        return (f"{name}: the undo of the warm-up before capture zeroes the optimizer state, a "
                "fresh state only for SGD, Adam and AdamW")
    if isinstance(optimizer, torch.optim.SGD):
        if any(g.get("dampening", 0) != 0 for g in groups):
            return ("SGD is not capturable with dampening: its first step copies the gradient "
                    "undamped, which a replay of a later step does not")
    elif not all(g.get("capturable", False) for g in groups):
        return f"{name} is not capturable (set model.optimizer.capturable=true)"
    from torch.optim import optimizer as base  # its step hooks are private: no public query

    if (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or base._global_optimizer_pre_hooks or base._global_optimizer_post_hooks):
        return (f"a step hook is registered on {name}: it would run once, at capture, and never "
                "on replay")
    return None


def hook_tables(module: Any) -> list[tuple[str, dict]]:
    """(where, table) of every module hook table a forward and backward of ``module`` consults.

    Private attributes of ``torch.nn.Module`` (and its module-global hooks): torch has no public
    way to ask whether a hook is registered.
    """
    from torch.nn.modules import module as nn_module

    tables = [("every module (a global hook)", table) for table in (
        nn_module._global_forward_pre_hooks, nn_module._global_forward_hooks,
        nn_module._global_backward_pre_hooks, nn_module._global_backward_hooks)]
    owners = [("the LightningModule", module)]
    owners += [(f"net.{name}" if name else "net", m) for name, m in module.net.named_modules()]
    for where, m in owners:
        tables += [(where, table) for table in (m._forward_pre_hooks, m._forward_hooks,
                                                m._backward_pre_hooks, m._backward_hooks)]
    return tables


def network_blocker(module: Any) -> str | None:
    """Why a forward and backward of ``module.net`` cannot be captured as they run, or None."""
    hooked = next((where for where, table in hook_tables(module) if table), None)
    if hooked:
        return (f"a forward or backward hook is registered on {hooked}: it would run once, at "
                "capture, and never on replay")
    for name, p in module.net.named_parameters():
        if p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None):  # private too
            return (f"a gradient hook is registered on net.{name}: it would run once, at capture, "
                    "and never on replay")
    for name, m in module.net.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.momentum is None:
            return (f"net.{name} has momentum=None (model.net.bn_momentum=null): its cumulative "
                    "average reads the batch count on the host, which a capture cannot")
    return None
