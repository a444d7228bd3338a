"""The fused training iteration: K optimizer steps per Lightning iteration, metrics on the device.

At batch 100 one step of this MLP costs less host time than what Lightning wraps around each
iteration (every callback's hooks, the optimizer closure, the fetcher, two torchmetrics updates).
So one Lightning iteration runs ``model.steps_per_iteration`` (K) optimizer steps over K
consecutive batches of the epoch's order, which the data module hands over as one chunk (the idea
of Keras' ``steps_per_execution``). Each step is what Lightning's automatic optimization did for
one batch: forward, cross-entropy, ``zero_grad`` (to None), backward, optional clipping, optimizer
step, step-interval schedulers; so the batch order, the number of steps and the random draws
(dropout) are those of K=1, and the weights come out bitwise equal on the CPU.

Training loss and accuracy stay on the device. The eager step keeps each batch's loss, to add up
once per epoch, and adds each batch's correct count to a device total; the graph step adds each
step's loss and correct count inside the graph. Both sum the loss in float64, step after step
(each batch's mean loss times its size), so both paths give the same bits. ``TrainTotals`` reads
the sums once per epoch and syncs them across DDP ranks: no torchmetrics call per batch.

On CUDA the whole step is captured once as a CUDA graph and replayed (``GraphStep``), where nothing
in the configuration stops it (``graph_blocker``); otherwise the eager fused step runs. One log line
says which, and one more if the graph step falls back to the eager one during the fit.
"""

from __future__ import annotations

import logging
from typing import Any

from mnist_mlp.fused.blockers import graph_blocker
from mnist_mlp.fused.eager import AUTO_STEPS, EagerStep, TrainTotals, direct_blocker, resolve_steps
from mnist_mlp.fused.graph import GraphStep

log = logging.getLogger("mnist_mlp.fused")  # one logger for every line about the training step


def build_step(module: Any, count_correct: bool) -> EagerStep:
    """The graph step where it can run, else the eager one; logs one line saying which and why."""
    why = graph_blocker(module)
    steps = module.steps_per_iteration
    if why is None:
        log.info("Training step: one CUDA graph per step, replayed %d times per iteration.", steps)
        return GraphStep(module, count_correct)
    step = EagerStep(module, count_correct)
    via = "" if step.direct else f"; through Lightning's hooks: {step.direct_why}"
    log.info("Training step: eager, %d optimizer steps per iteration (no CUDA graph: %s%s).",
             steps, why, via)
    return step


__all__ = ["AUTO_STEPS", "EagerStep", "GraphStep", "TrainTotals", "build_step", "direct_blocker",
           "graph_blocker", "resolve_steps"]
