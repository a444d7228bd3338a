"""The fused training iteration: K optimizer steps per Lightning iteration, metrics on the device.

At batch 100 one step of this MLP costs less host time than what Lightning wraps around each
iteration (every callback's hooks, the optimizer closure, the fetcher, two torchmetrics updates).
So one Lightning iteration runs ``model.steps_per_iteration`` (K) optimizer steps over K
consecutive batches of the epoch's order, which the data module hands over as one chunk (the idea
of Keras' ``steps_per_execution``). Each step is what Lightning's automatic optimization did for
one batch: forward, cross-entropy, ``zero_grad`` (to None), backward, optional clipping, optimizer
step, step-interval schedulers; so the batch order, the number of steps and the random draws
(dropout) are those of K=1, and the weights come out bitwise equal on the CPU.

Training loss and accuracy stay on the device. The eager step keeps each batch's loss and predicted
classes (one ``argmax`` per step, no other op) and adds them up once per epoch; the graph step adds
each step's loss and correct count inside the graph. Both sum the loss in float64, step after step
(each batch's mean loss times its size), so both paths give the same bits. ``TrainTotals`` reads
the sums once per epoch and syncs them across DDP ranks: no torchmetrics call per batch.

On CUDA the whole step is captured once as a CUDA graph and replayed (``GraphStep``), where nothing
in the configuration stops it (``graph_blocker``); otherwise the eager fused step runs. One log line
says which, and one more if the graph step falls back to the eager one during the fit.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm  # the base of every BatchNorm (none is public)
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torchmetrics import Metric

log = logging.getLogger(__name__)

#: ``model.steps_per_iteration: auto`` per device type: the smallest K from which the cost of a step
#: stops falling on either device (``python -m bench``; figures in the README's "Speed"). A larger K
#: only delays what happens between iterations (the NaN check, a signal's stop, the progress bar).
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

    ``train/loss`` = loss sum / samples (the per-sample mean, as ``MeanMetric`` weighted by batch
    size gives) and ``train/acc`` = correct / samples (``MulticlassAccuracy(average="micro")``).
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

    Those calls dispatch three hooks over every callback per step, a cost of its own beside this
    MLP's small step. Where nothing listens to them and neither the strategy (DDP's reducer is
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
    holds_graph = False  # no captured graph writes into the gradients (module.py reads it)

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
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=module.device)
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
        """The epoch's loss sum, correct count and sample count, added up once.

        The loss in float64 and in step order (``cumsum``, sequential on the CPU): the order in
        which ``GraphStep`` adds each step's loss, so both paths give the same bits.
        """
        if self.losses:
            sizes = torch.tensor(self.sizes, dtype=torch.float64, device=self.loss_sum.device)
            self.loss_sum.copy_((torch.stack(self.losses).double() * sizes).cumsum(0)[-1])
        if self.preds:
            self.correct.copy_((torch.cat(self.preds) == torch.cat(self.targets)).sum())
        return self.loss_sum, self.correct, self.count

    def begin_iteration(self) -> None:
        """Called before each iteration's steps, after the callbacks ran (nothing to do here)."""

    def release(self) -> None:
        """Drops what the step holds on the device beyond the fit (nothing, here)."""

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


class _Saved(NamedTuple):
    """What a warm-up and capture change: network state, optimizer state, gradients, RNG."""

    net: dict[str, torch.Tensor]
    state: dict[torch.Tensor, dict[str, Any]]
    grads: list[torch.Tensor | None]
    rng: tuple[torch.Tensor, torch.Tensor]


def _constant(value: Any) -> Any:
    """A param-group value as the graph holds it: tensors by identity (their memory is read at
    replay; comparing their values would sync with the device)."""
    return id(value) if isinstance(value, torch.Tensor) else value


class GraphStep(EagerStep):
    """The whole step (copy-in, forward, loss, backward, optimizer step, metric sums) as one CUDA
    graph, captured on the first batch of full size (``data.batch_size``) and replayed for every
    later one. A shorter batch (an epoch's last) runs eager, into the same gradient memory.

    ``torch.cuda.graphs`` with static buffers rather than ``torch.compile(mode="reduce-overhead")``:
    it captures the optimizer step and the metric sums in the same graph (compile's CUDA graphs
    cover the compiled forward/backward, the optimizer step stays eager kernel launches) and costs
    no compile time in a short run.

    The warm-up before capture runs real batches (the first full one, reshuffled): a constant batch
    gives BatchNorm zero variance and ruins the weights. Warm-up changes weights, BatchNorm
    statistics, optimizer state, gradients and the random state. After the capture they are put
    back in place (the graph holds their addresses), the optimizer state the warm-up created zeroed
    (the fresh state of ``GRAPH_OPTIMIZERS``). A capture that fails puts everything back as it was
    and the fit goes on with the eager step. Gradients are set to None before capture (the graph
    then writes, not adds, them) and are never zeroed or released while the graph is held
    (``holds_graph``: ``on_validation_model_zero_grad`` is skipped then).

    A replay runs the captured kernels with the numbers they were captured with (each param
    group's lr, momentum, weight decay, ...; BatchNorm momentum and eps, dropout rates, train mode)
    on the memory they were captured on. Before each iteration's replays both are compared with
    the live ones (Python values and ``data_ptr``, no device sync; ``begin_iteration``); on a
    difference, or a hook registered since, the step falls back to eager for the rest of the fit,
    with one line saying what changed.
    """

    kind = "CUDA graph"
    warmup_steps = 3

    def __init__(self, module: Any, count_correct: bool) -> None:
        super().__init__(module, count_correct)
        self.full_batch = full_batch_size(module.trainer)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.grads: list[torch.Tensor] = []
        self.static_x: torch.Tensor | None = None
        self.static_y: torch.Tensor | None = None
        self.tried = False  # a capture was attempted
        self.eager_why: str | None = None  # why the rest of the fit runs eager, once it does
        self.first_step = module.trainer.global_step

    @property
    def holds_graph(self) -> bool:
        return self.graph is not None

    def begin_iteration(self) -> None:
        """Compares what the graph holds with the live values and tensors: only callbacks, which
        run between iterations, change them, so once per iteration covers every replay."""
        if self.graph is not None and (why := self._changed()) is not None:
            self._fall_back(why)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not self.tried and len(y) == self.full_batch:
            self._capture(x, y)
        if self.graph is None:  # before the first full batch, or after a fall-back
            super().__call__(x, y)
        elif len(y) == self.full_batch:
            self._replay(x, y)
        else:
            self._eager_step(x, y)

    def release(self) -> None:
        """Drops the graph and its memory pool at the end of the fit, before Lightning's teardown
        moves the tensors it points at to the CPU."""
        if not self.tried and self.module.trainer.global_step > self.first_step:
            log.warning("Training step: eager for the whole fit (no CUDA graph: no training batch "
                        "had the full size, %s samples).", self.full_batch)
        self._release()

    def _release(self) -> None:
        if self.graph is not None:
            self.graph.reset()
        self.graph = None
        for p in self._params():  # the gradients leave the graph's pool (eager keeps the last)
            if p.grad is not None and any(p.grad is g for g in self.grads):
                p.grad = p.grad.clone()
        self.grads = []
        self.static_x = self.static_y = None

    def _fall_back(self, why: str) -> None:
        self.eager_why, self.kind = why, "eager"
        self._release()
        log.warning("Training step: eager, %d optimizer steps per iteration from step %d on "
                    "(no CUDA graph: %s).", self.module.steps_per_iteration,
                    self.module.trainer.global_step, why)

    def _replay(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.optimizer._on_before_step()  # Lightning's optimizer-step counter (global_step)
        self.graph.replay()
        self.optimizer._on_after_step()
        self.count += len(y)
        self.epoch_steps += 1

    def _accumulate(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        self._add_sums(logits, loss, y)
        self.count += len(y)

    def _add_sums(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor) -> None:
        """One step's loss (float64, times its batch size) and correct count onto the epoch's
        sums, in place: inside the graph and in the eager steps around it alike."""
        self.loss_sum.add_(loss.double() * len(y))
        if self.count_correct:
            self.correct.add_((logits.argmax(dim=1) == y).sum())

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
        self.tried = True
        why = network_blocker(self.module)  # again: a callback may have added a hook since
        if why is not None:
            self._fall_back(why)
            return
        saved = self._save()
        stream = torch.cuda.current_stream()
        try:
            graph = self._warm_up_and_record(x, y)
        except Exception as err:  # noqa: BLE001 - whatever stops the capture, eager can go on
            torch.cuda.set_stream(stream)  # a failed capture leaves its own stream current
            self._restore(saved, keep_created=False)
            self.static_x = self.static_y = None
            self._fall_back(f"the capture failed ({_root_cause(err)}); the warm-up was undone")
            return
        self.grads = [p.grad for p in self._params()]
        self._restore(saved, keep_created=True)
        self.graph = graph
        self._remember()

    def _remember(self) -> None:
        """Records what the graph holds: the Python values it baked in, the hook tables that must
        stay empty, the memory it reads and writes (compared by ``begin_iteration``)."""
        net = self.module.net
        self.hook_tables = [table for _, table in hook_tables(self.module)]
        self.module_attrs = [(f"net.{name}" if name else "net", m, attr)
                             for name, m in net.named_modules() for attr, value in vars(m).items()
                             if not attr.startswith("_")
                             and isinstance(value, bool | int | float | str | None)]
        self.buffer_attrs = [(f"net.{name}.{b}" if name else f"net.{b}", m, b)
                             for name, m in net.named_modules()
                             for b, _ in m.named_buffers(recurse=False)]
        self.baked = self._baked()
        self.addresses = self._addresses()

    def _warm_up_and_record(self, x: torch.Tensor, y: torch.Tensor) -> torch.cuda.CUDAGraph:
        optimizer = self.optimizer.optimizer
        self.static_x, self.static_y = x.clone(), y.clone()
        generator = torch.Generator(device="cpu").manual_seed(0)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side), warnings.catch_warnings():
                # torch's advice to drop capturable=True when a step runs uncaptured: this one is
                warnings.filterwarnings("ignore", message="This instance was constructed with "
                                        "capturable=True")
                for _ in range(self.warmup_steps):  # real samples, reshuffled: BatchNorm varies
                    perm = torch.randperm(len(y), generator=generator).to(y.device)
                    self.static_x.copy_(x[perm])
                    self.static_y.copy_(y[perm])
                    optimizer.zero_grad(set_to_none=True)
                    self._one_step(self.static_x, self.static_y)
        finally:  # also before an undo of a warm-up that failed half-way
            torch.cuda.current_stream().wait_stream(side)
        optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits, loss = self._one_step(self.static_x, self.static_y)
            self._add_sums(logits, loss, self.static_y)
        return graph

    def _save(self) -> _Saved:
        net, optimizer = self.module.net, self.optimizer.optimizer
        return _Saved(
            net={k: v.detach().clone() for k, v in net.state_dict().items()},
            state={p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                   for p, s in optimizer.state.items()},
            grads=[p.grad for p in self._params()],
            rng=(torch.get_rng_state(), torch.cuda.get_rng_state()))

    def _restore(self, saved: _Saved, keep_created: bool) -> None:
        """Puts ``saved`` back, in place (a captured graph holds these addresses). Optimizer state
        the warm-up created is zeroed where ``keep_created`` (the graph reads it), else removed."""
        net, optimizer = self.module.net, self.optimizer.optimizer
        with torch.no_grad():
            for k, v in net.state_dict().items():
                v.copy_(saved.net[k])
            for p in list(optimizer.state):
                before, state = saved.state.get(p, {}), optimizer.state[p]
                for k in list(state):
                    if k in before and isinstance(state[k], torch.Tensor):
                        state[k].copy_(before[k])
                    elif k in before:
                        state[k] = before[k]
                    elif not keep_created:
                        del state[k]
                    elif isinstance(state[k], torch.Tensor):
                        state[k].zero_()
                if not state and p not in saved.state:
                    del optimizer.state[p]
        if not keep_created:
            for p, grad in zip(self._params(), saved.grads, strict=True):
                p.grad = grad
        torch.set_rng_state(saved.rng[0])
        torch.cuda.set_rng_state(saved.rng[1])

    def _baked(self) -> list[tuple[tuple[str, str], Any]]:
        """The Python values the captured kernels hold, labelled ``(owner, name)``."""
        groups = self.optimizer.optimizer.param_groups
        values = [(("the optimizer", "number of param groups"), len(groups))]
        values += [((f"param group {i}", k), _constant(v)) for i, g in enumerate(groups)
                   for k, v in g.items() if k != "params"]
        values += [((where, attr), getattr(m, attr)) for where, m, attr in self.module_attrs]
        return values

    def _graph_tensors(self) -> list[tuple[Any, str, torch.Tensor | None]]:
        """(owner, role, tensor) of every tensor the graph reads or writes outside its own pool."""
        optimizer = self.optimizer.optimizer
        found: list[tuple[Any, str, torch.Tensor | None]] = []
        for p in self._params():
            found += [(p, "parameter", p), (p, "gradient", p.grad)]
            found += [(p, f"optimizer state {k}", v) for k, v in optimizer.state.get(p, {}).items()
                      if isinstance(v, torch.Tensor)]
        found += [(where, "buffer", getattr(m, b)) for where, m, b in self.buffer_attrs]
        return found

    def _addresses(self) -> list[int]:
        return [0 if t is None else t.data_ptr() for _, _, t in self._graph_tensors()]

    def _changed(self) -> str | None:
        """What differs from the capture (a value it holds, a hook, a tensor's memory), or None."""
        baked = self._baked()
        if baked != self.baked:
            return self._what_changed(baked)
        if any(self.hook_tables):
            return ("a forward or backward hook was registered on the network after the capture: "
                    "a replay would not call it")
        if self._addresses() != self.addresses:
            return self._what_moved()
        return None

    def _what_changed(self, baked: list[tuple[tuple[str, str], Any]]) -> str:
        before, now = dict(self.baked), dict(baked)
        for label in [*now, *before]:
            if label not in before or label not in now or before[label] != now[label]:
                owner, name = label
                return (f"the {name} of {owner} changed from {before.get(label, 'unset')!r} to "
                        f"{now.get(label, 'unset')!r} after the capture, which holds it as a "
                        "constant")
        return "the optimizer's param groups changed after the capture"

    def _what_moved(self) -> str:
        names = {p: f"net.{n}" for n, p in self.module.net.named_parameters()}
        now = [(names.get(owner, owner) if not isinstance(owner, str) else owner, role,
                0 if t is None else t.data_ptr()) for owner, role, t in self._graph_tensors()]
        for (owner, role, address), captured in zip(now, self.addresses, strict=False):
            if address != captured:
                return (f"the {role} of {owner} is not the tensor the graph was captured on "
                        "(replaced by load_state_dict, .to() or zero_grad after the capture)")
        return ("the optimizer state holds other tensors than at the capture (load_state_dict "
                "after the capture)")


def _root_cause(err: BaseException) -> str:
    """The first exception of a chain, on one line: a capture's first failure, not the later
    'operation failed due to a previous error during capture'."""
    while err.__context__ is not None:
        err = err.__context__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


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
