"""The fused training iteration: K optimizer steps per Lightning iteration, metrics on the device.

At batch 100 one step of this MLP costs less host time than what Lightning wraps around each
iteration (every callback's hooks, the optimizer closure, the fetcher, two torchmetrics updates).
So one Lightning iteration runs ``model.steps_per_iteration`` (K) optimizer steps over K
consecutive batches of the epoch's order, which the data module hands over as one chunk (the idea
of Keras' ``steps_per_execution``). Each step is what Lightning's automatic optimization did for
one batch: forward, cross-entropy, ``zero_grad`` (to None), backward, optional clipping, optimizer
step, step-interval schedulers; so the batch order, the number of steps and the random draws
(dropout) are those of K=1, and the weights come out bitwise equal on the CPU.

Training loss and accuracy stay on the device: the eager step keeps each batch's loss and predicted
classes (one ``argmax`` per step, no other op) and sums them once per epoch, in float64, into a loss
sum (each batch's mean loss times its size) and a correct count; the graph step adds them up inside
the graph. ``TrainTotals`` reads them once per epoch and syncs them across DDP ranks: no
torchmetrics call per batch.

On CUDA the whole step is captured once as a CUDA graph and replayed (``GraphStep``), where nothing
in the configuration stops it; otherwise the eager fused step runs. One log line says which.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import Metric

log = logging.getLogger(__name__)

#: ``model.steps_per_iteration: auto`` per device type. 2-core CPU, default configuration, each
#: optimizer step paired with a bare step (``bench.profile``, two rounds under load): 1.15-1.39x
#: the bare step at K=1, 1.09-1.19x at 3, 0.96-1.03x at 10, 0.97-1.17x at 30: flat from 10 on.
#: H100 (the issue's probe): 1.54 s (eager) and 0.138 s (graph) per epoch at K=10 against 1.71 s
#: and 0.254 s at K=1, the graph at K=10 within 2% of a bare graph loop. A larger K only delays
#: what happens between iterations (the NaN check, a signal's stop, the progress bar).
AUTO_STEPS = {"cpu": 10, "cuda": 10}


def resolve_steps(value: int | str, device: torch.device) -> int:
    """K for ``value`` (an integer >= 1 or ``auto``) on ``device``."""
    if value == "auto":
        return AUTO_STEPS.get(device.type, 1)
    steps = int(value)
    if steps < 1:
        raise ValueError(f"steps_per_iteration must be >= 1 or 'auto', got {value!r}")
    return steps


class TrainTotals(Metric):
    """Epoch totals of the training loss and accuracy, updated once per epoch, summed over ranks.

    ``loss/train`` = loss sum / samples (the per-sample mean, as ``MeanMetric`` weighted by batch
    size gives) and ``acc/train`` = correct / samples (``MulticlassAccuracy(average="micro")``).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("loss_sum", default=torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(()), dist_reduce_fx="sum")

    def update(self, loss_sum: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        self.loss_sum += loss_sum.to(self.loss_sum)
        self.correct += correct.to(self.correct)
        self.count += count

    def compute(self) -> dict[str, torch.Tensor]:
        return {"loss": self.loss_sum / self.count, "acc": self.correct.float() / self.count}


#: The hooks Lightning's ``manual_backward`` and ``LightningOptimizer.step`` call on every callback.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def direct_blocker(module: Any) -> str | None:
    """Why each step must go through Lightning's ``manual_backward`` and optimizer wrapper, or None.

    Those calls dispatch three hooks over every callback per step (~0.1 ms of this MLP's ~4 ms CPU
    step, README "Speed"). Where nothing listens to them and neither the strategy (DDP's reducer is
    armed in ``manual_backward``) nor the precision plugin (AMP scaling) acts in them, the step
    calls ``backward`` and the optimizer's ``step`` itself, with the same arithmetic.
    """
    from lightning.pytorch import LightningModule
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import SingleDeviceStrategy
    from lightning.pytorch.utilities.model_helpers import is_overridden

    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy:
        return f"strategy {type(trainer.strategy).__name__}"
    if type(trainer.precision_plugin) is not Precision:
        return f"precision {trainer.precision}"
    for hook in STEP_HOOKS:
        listeners = [c for c in trainer.callbacks if is_overridden(hook, c, Callback)]
        if listeners or is_overridden(hook, module, LightningModule):
            return f"{hook} is implemented by {type((listeners or [module])[0]).__name__}"
    return None


class EagerStep:
    """One optimizer step per call.

    Through Lightning's manual-optimization API (``manual_backward``, the ``LightningOptimizer``)
    where a strategy, precision plugin or hook needs it; directly otherwise (``direct_blocker``).
    Lightning's optimizer-step counter (``trainer.global_step``) counts either way.
    """

    kind = "eager"

    def __init__(self, module: Any, count_correct: bool) -> None:
        self.module = module
        self.optimizer = module.optimizers()
        self.direct_why = direct_blocker(module)  # None: the step runs directly
        self.direct = self.direct_why is None
        configs = module.trainer.lr_scheduler_configs
        self.step_schedulers = [c for c in configs if c.interval == "step"
                                and not isinstance(c.scheduler, ReduceLROnPlateau)]
        self.clip = (module.hparams.get("gradient_clip_val"),
                     module.hparams.get("gradient_clip_algorithm") or "norm")
        self.count_correct = count_correct
        self.loss_sum = torch.zeros((), device=module.device)
        self.correct = torch.zeros((), dtype=torch.long, device=module.device)
        self.reset()

    def reset(self) -> None:
        """Starts the epoch's totals (in place: a captured graph keeps adding to the same memory)."""
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count = 0
        self.epoch_steps = 0
        self.losses: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def iteration_loss(self, steps: int) -> torch.Tensor:
        """The summed loss of the last ``steps`` steps: non-finite when one of them was."""
        return torch.stack(self.losses[-steps:]).sum()

    def totals(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The epoch's loss sum, correct count and sample count, added up once (float64 sums)."""
        if self.losses:
            sizes = torch.tensor(self.sizes, dtype=torch.float64, device=self.loss_sum.device)
            self.loss_sum.copy_((torch.stack(self.losses).double() * sizes).sum())
        if self.preds:
            self.correct.copy_((torch.cat(self.preds) == torch.cat(self.targets)).sum())
        return self.loss_sum, self.correct, self.count

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        module, optimizer = self.module, self.optimizer
        logits = module(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad()  # to None, as Lightning's automatic optimization does
        if self.direct:
            loss.backward()
        else:
            module.manual_backward(loss)
        if self.clip[0]:
            module.clip_gradients(optimizer, gradient_clip_val=self.clip[0],
                                  gradient_clip_algorithm=self.clip[1])
        if self.direct:
            optimizer._on_before_step()  # Lightning's optimizer-step counter (global_step)
            optimizer.optimizer.step()
            optimizer._on_after_step()
        else:
            optimizer.step()
        self._after_step(logits.detach(), loss.detach(), y)

    def _after_step(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.epoch_steps += 1
        for config in self.step_schedulers:  # as Lightning's automatic optimization steps them
            if self.epoch_steps % config.frequency == 0:
                self.module.lr_scheduler_step(config.scheduler, None)
        self._accumulate(logits, loss, y)

    def _accumulate(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.losses.append(loss)
        self.sizes.append(len(y))
        if self.count_correct:
            self.preds.append(logits.argmax(dim=1))
            self.targets.append(y)
        self.count += len(y)


def graph_blocker(module: Any) -> str | None:
    """Why the step cannot be captured as a CUDA graph here, or None when it can."""
    trainer = module.trainer
    optimizer = module.optimizers().optimizer
    sgd_ok = isinstance(optimizer, torch.optim.SGD) and all(
        g.get("dampening", 0) == 0 for g in optimizer.param_groups)
    through_lightning = direct_blocker(module)  # a replayed graph calls no strategy or hook
    checks = [
        (module.device.type != "cuda", f"the device is {module.device.type}"),
        (not module.hparams.get("cuda_graph", True), "model.cuda_graph=false"),
        (through_lightning is not None, f"the step must go through Lightning: {through_lightning}"),
        (str(trainer.precision) != "32-true", f"precision {trainer.precision} scales or casts "
                                               "outside the captured kernels"),
        (bool(module.hparams.get("compile")), "model.compile=true"),
        (bool(module.hparams.get("gradient_clip_val")), "gradient clipping is configured"),
        (bool(trainer.lr_scheduler_configs), "an LR scheduler changes the rate a captured "
                                              "optimizer step holds as a constant"),
        (not sgd_ok and not optimizer.defaults.get("capturable", False),
         f"{type(optimizer).__name__} is not capturable (SGD without dampening, or capturable=True)"),
    ]
    return next((why for blocked, why in checks if blocked), None)


class GraphStep(EagerStep):
    """The whole step (copy-in, forward, loss, backward, optimizer step, metric sums) as one CUDA
    graph, captured on the first full-size batch and replayed for every later one.

    ``torch.cuda.graphs`` with static buffers rather than ``torch.compile(mode="reduce-overhead")``:
    it captures the optimizer step and the metric sums in the same graph (compile's CUDA graphs
    cover the compiled forward/backward, the optimizer step stays eager kernel launches), costs no
    compile time in a run whose target is 25 s, and is what the issue's H100 probe measured at the
    bare anchor. Not measured in this work (no GPU).

    The warm-up before capture runs real batches (the first chunk's): a constant batch gives
    BatchNorm zero variance and ruins the weights. Warm-up changes weights, BatchNorm statistics,
    optimizer state and the random state, so all are put back in place before the first real step.
    Gradients are set to None before capture (the graph then writes, not adds, them) and are never
    zeroed or released later: ``on_validation_model_zero_grad`` is skipped while a graph runs.
    """

    kind = "CUDA graph"
    warmup_steps = 3

    def __init__(self, module: Any, count_correct: bool) -> None:
        super().__init__(module, count_correct)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.grads: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.graph is None:
            self._capture(x, y)
        if len(y) != len(self.static_y):  # the epoch's shorter last batch: eager, same memory
            self._eager_step(x, y)
            return
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.optimizer._on_before_step()  # Lightning's optimizer-step counter (global_step)
        self.graph.replay()
        self.optimizer._on_after_step()
        self.count += len(y)
        self.epoch_steps += 1

    def _accumulate(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum.add_(loss * len(y))  # into the memory the graph adds to
        if self.count_correct:
            self.correct.add_((logits.argmax(dim=1) == y).sum())
        self.count += len(y)

    def iteration_loss(self, steps: int) -> torch.Tensor:
        return self.loss_sum  # the epoch's running sum: non-finite from the first bad step on

    def totals(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.loss_sum, self.correct, self.count

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.optimizer.param_groups for p in g["params"]]

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer = self.optimizer.optimizer
        for p, g in zip(self._params(), self.grads, strict=True):
            p.grad = g
            g.zero_()  # in place: the graph's kernels keep writing to this memory
        logits = self.module(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.optimizer._on_before_step()
        optimizer.step()
        self.optimizer._on_after_step()
        self._after_step(logits.detach(), loss.detach(), y)

    def _one_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.module(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.optimizer.optimizer.step()
        return logits.detach(), loss.detach()

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        net, optimizer = self.module.net, self.optimizer.optimizer
        saved_net = {k: v.detach().clone() for k, v in net.state_dict().items()}
        saved_opt = {id(t): t.clone() for s in optimizer.state.values() for t in s.values()
                     if isinstance(t, torch.Tensor)}
        rng = torch.get_rng_state(), torch.cuda.get_rng_state()
        self.static_x, self.static_y = x.clone(), y.clone()
        generator = torch.Generator(device="cpu").manual_seed(0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):  # real samples, reshuffled: BatchNorm sees variance
                perm = torch.randperm(len(y), generator=generator).to(y.device)
                self.static_x.copy_(x[perm])
                self.static_y.copy_(y[perm])
                optimizer.zero_grad(set_to_none=True)
                self._one_step(self.static_x, self.static_y)
        torch.cuda.current_stream().wait_stream(side)
        optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            logits, loss = self._one_step(self.static_x, self.static_y)
            self.loss_sum.add_(loss * len(self.static_y))
            if self.count_correct:
                self.correct.add_((logits.argmax(dim=1) == self.static_y).sum())
        self.grads = [p.grad for p in self._params()]
        with torch.no_grad():  # undo the warm-up, in place: the graph holds these addresses
            for k, v in net.state_dict().items():
                v.copy_(saved_net[k])
            for state in optimizer.state.values():
                for t in state.values():
                    if isinstance(t, torch.Tensor):
                        t.copy_(saved_opt[id(t)]) if id(t) in saved_opt else t.zero_()
        torch.set_rng_state(rng[0])
        torch.cuda.set_rng_state(rng[1])
        self.loss_sum.zero_()
        self.correct.zero_()


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
