"""The CUDA-graph step: the whole step captured once and replayed, falling back to eager safely."""

from __future__ import annotations

import logging
import warnings
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from mnist_mlp.fused import blockers
from mnist_mlp.fused.eager import EagerStep

log = logging.getLogger("mnist_mlp.fused")  # one logger for every line about the training step


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
        self.full_batch = blockers.full_batch_size(module.trainer)
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
        self._add_correct(logits, y)

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
        why = blockers.network_blocker(self.module)  # again: a callback may have added a hook since
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
        self.hook_tables = [table for _, table in blockers.hook_tables(self.module)]
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
