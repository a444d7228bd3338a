"""``fused.GraphStep`` on the CPU, through an emulation of CUDA graphs.

No GPU runs these tests, so ``torch.cuda``'s streams and graphs are replaced by an emulation
(``emulated_cuda``) that keeps the rules a real capture imposes on the step:

* a capture runs no kernel: every op is recorded, its results hold garbage (NaN), and nothing it
  would write (weights, BatchNorm statistics, optimizer state, the metric sums) changes;
* a replay re-runs the recorded ops on the memory they were recorded on, with the Python numbers
  they were recorded with (an lr changed after the capture is not seen; a tensor replaced after it
  is not written), and draws fresh random numbers (dropout) on each replay;
* reading a device value on the host during a capture (``.item()``, ``float(t)``) is an error, and
  a failed capture leaves the capture's own stream current.

Ops are recorded below autograd (a ``TorchDispatchMode``), so the backward and the optimizer step
are recorded as they would be captured. With that, the graph step must train bit for bit as the
eager fused step over real epochs (the session's synthetic MNIST: 500 training images at
batch 48, 11 batches per epoch, the last one of 20 images), and fall back to it, with one log
line, wherever a graph would train differently.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging

import lightning as L
import pytest
import torch

# torch documents its dispatch modes and pytree helpers under these private module names
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from mnist_mlp import fused
from mnist_mlp.datamodule import MnistDataModule
from mnist_mlp.errors import UserError
from tests.helpers.fused import STEPS_PER_EPOCH, assert_same_training, fake_module, fit

aten = torch.ops.aten
K = 4  # steps per iteration: chunks of 4, 4 and 3 batches
GRAPH_LINE = f"Training step: one CUDA graph per step, replayed {K} times per iteration."

#: Ops that hand a device value to the host: a CUDA error during a capture.
HOST_SYNCS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}
#: Arguments an op writes without its schema saying so (CPU BatchNorm's running statistics).
UNDECLARED_WRITES = {aten.native_batch_norm.default: (3, 4)}


def _pinned(value):
    """A tensor pinned to the memory it has now: later ``.data =`` swaps do not move it."""
    return value.detach() if isinstance(value, torch.Tensor) else value


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all())


class Recorder(TorchDispatchMode):
    """Records each op of a capture instead of running it; ``replay`` runs them all again."""

    def __init__(self, fail_at_parameter_update: bool = False) -> None:
        super().__init__()
        self.ops: list[tuple] = []
        self.fail_at_parameter_update = fail_at_parameter_update

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_SYNCS:
            raise RuntimeError(f"CUDA error: operation not permitted when stream is capturing "
                               f"({func} reads a device value on the host)")
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        written = self._written(func, args, kwargs)
        if not tensors or (not written and any(r.alias_info for r in func._schema.returns)):
            return func(*args, **kwargs)  # a view, or no tensor: no kernel
        if self.fail_at_parameter_update and any(getattr(t, "requires_grad", False)
                                                 for t in tensors if id(t) in written):
            raise RuntimeError("CUDA error: an illegal instruction was encountered")
        before = [(t, t.clone()) for t in tensors if id(t) not in written]
        clones = {id(t): t.clone() for t in tensors if id(t) in written}
        out = func(*tree_map(lambda t: clones.get(id(t), t), args),
                   **tree_map(lambda t: clones.get(id(t), t), kwargs))
        assert all(_same_bits(t, old) for t, old in before), f"{func} wrote an input it reads"
        originals = {id(clones[id(t)]): t for t in tensors if id(t) in written}
        storages = {t.untyped_storage().data_ptr() for t in tensors}
        flat, spec = tree_flatten(out)
        result, copies = [], []
        for o in flat:
            fresh = (isinstance(o, torch.Tensor) and id(o) not in originals
                     and o.untyped_storage().data_ptr() not in storages)
            if fresh and o.is_floating_point():
                o.fill_(float("nan"))  # what the graph's pool held: the capture computed nothing
            result.append(originals.get(id(o), o))
            copies.append(_pinned(o) if fresh else None)
        self.ops.append((func, tree_map(_pinned, args), tree_map(_pinned, kwargs), copies))
        return spec.unflatten(result)

    @staticmethod
    def _written(func, args, kwargs) -> set[int]:
        written = set()
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is not None and arg.alias_info.is_write:
                value = args[i] if i < len(args) else kwargs.get(arg.name)
                written.update(id(t) for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor))
        written.update(id(args[i]) for i in UNDECLARED_WRITES.get(func, ()) if args[i] is not None)
        return written

    def replay(self) -> None:
        with torch.no_grad():
            for func, args, kwargs, copies in self.ops:
                for dst, src in zip(copies, tree_flatten(func(*args, **kwargs))[0], strict=True):
                    if dst is not None:
                        dst.copy_(src)


class Emulation:
    """Stands in for ``torch.cuda``'s streams, graphs and generator state."""

    def __init__(self) -> None:
        self.default_stream = self.Stream()
        self.current = self.default_stream
        self.graphs: list[Emulation.CUDAGraph] = []
        self.fail_capture = False  # the next capture fails mid-way, at a parameter update

    class Stream:
        def wait_stream(self, other) -> None:
            pass

    def current_stream(self):
        return self.current

    def set_stream(self, stream) -> None:
        self.current = stream

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream
        try:
            yield
        finally:
            self.current = before

    def new_graph(self):
        graph = self.CUDAGraph()
        self.graphs.append(graph)
        return graph

    class CUDAGraph:
        def __init__(self) -> None:
            self.recorder: Recorder | None = None
            self.replays = self.resets = 0

        def replay(self) -> None:
            self.replays += 1
            self.recorder.replay()

        def reset(self) -> None:
            self.resets += 1
            self.recorder = None

    def graph(self, cuda_graph, **kwargs):
        return self.Capture(self, cuda_graph)

    class Capture:
        """``torch.cuda.graph``: the capture stream is current inside; a failed capture ends with
        CUDA's own error and, as torch's ``__exit__`` does then, leaves that stream current."""

        def __init__(self, emulation, cuda_graph) -> None:
            self.emulation, self.cuda_graph = emulation, cuda_graph
            self.recorder = Recorder(fail_at_parameter_update=emulation.fail_capture)

        def __enter__(self) -> None:
            self.before, self.emulation.current = self.emulation.current, Emulation.Stream()
            self.recorder.__enter__()

        def __exit__(self, kind, value, tb) -> None:
            self.recorder.__exit__(kind, value, tb)
            if kind is not None:
                raise RuntimeError("CUDA error: operation failed due to a previous error during "
                                   "capture")
            self.cuda_graph.recorder = self.recorder
            self.emulation.current = self.before


@pytest.fixture
def emulated_cuda(monkeypatch):
    """CUDA graphs on the CPU; ``graph_blocker`` sees the CPU as a device it may capture on."""
    emulation = Emulation()
    for name, value in [("Stream", Emulation.Stream), ("current_stream", emulation.current_stream),
                        ("set_stream", emulation.set_stream), ("stream", emulation.stream),
                        ("CUDAGraph", emulation.new_graph), ("graph", emulation.graph),
                        ("get_rng_state", lambda: torch.zeros(16, dtype=torch.uint8)),
                        ("set_rng_state", lambda state: None)]:
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(fused.blockers, "GRAPH_DEVICES", ("cuda", "cpu"))
    # capturable=True optimizers accept the CPU (their eager step checks the device, too)
    supported = [*importlib.import_module("torch.optim.optimizer")
                 ._get_capturable_supported_devices(), "cpu"]
    for name in ("adam", "nadam", "asgd", "rprop"):
        monkeypatch.setattr(importlib.import_module(f"torch.optim.{name}"),
                            "_get_capturable_supported_devices", lambda *args: supported)
    return emulation


def test_graph_step_emulation_keeps_the_rules_of_a_capture(emulated_cuda):
    """The emulation itself: nothing runs at capture, replays run on the captured memory with the
    captured numbers and fresh random draws, a host read fails the capture."""
    x = torch.ones(1000)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x.mul_(2.0)
        drops = torch.nn.functional.dropout(torch.ones(1000), 0.5)
    assert torch.equal(x, torch.ones(1000)) and drops.isnan().all()
    graph.replay()
    first = drops.clone()
    graph.replay()
    assert torch.equal(x, torch.full((1000,), 4.0))
    assert not torch.equal(first, drops) and set(drops.unique().tolist()) == {0.0, 2.0}
    x.data = torch.zeros(1000)  # a swap of the memory (as .to() does): the graph writes the old one
    graph.replay()
    assert torch.equal(x, torch.zeros(1000))
    with pytest.raises(RuntimeError, match="previous error during capture") as failure:
        with torch.cuda.graph(torch.cuda.CUDAGraph()):
            float(x.sum())
    assert "not permitted when stream is capturing" in str(failure.value.__context__)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mnist_mlp.fused"]


def _run(synthetic, tmp_path, *overrides, epochs=1):
    """The graph step and the eager step on the same configuration: (graph run, eager run)."""
    common = (f"model.steps_per_iteration={K}", *overrides)
    graph = fit(synthetic, tmp_path / "graph", "model.cuda_graph=true", *common, epochs=epochs)
    eager = fit(synthetic, tmp_path / "eager", "model.cuda_graph=false", *common, epochs=epochs)
    assert type(eager[0].fused_step) is fused.EagerStep
    return graph, eager


def _assert_bit_for_bit(graph, eager):
    """Weights, BatchNorm statistics, optimizer state, step count and epoch metrics equal."""
    assert_same_training(graph, eager)
    state_g, state_e = (run[1].optimizers[0].state_dict()["state"] for run in (graph, eager))
    assert state_g.keys() == state_e.keys()
    for i, values in state_g.items():
        for key, value in values.items():
            assert torch.equal(value, state_e[i][key]), (i, key)


@pytest.mark.parametrize("overrides", [
    pytest.param(["model.optimizer.momentum=0"], id="sgd-plain"),
    pytest.param([], id="sgd-momentum"),
    pytest.param(["+model.optimizer.nesterov=true", "model.optimizer.weight_decay=0.001"],
                 id="sgd-nesterov-weight-decay"),
    pytest.param(["model/optimizer=adam", "+model.optimizer.capturable=true", "model.lr=0.002"],
                 id="adam"),
    pytest.param(["model/optimizer=adam", "model.optimizer._target_=torch.optim.AdamW",
                  "+model.optimizer.capturable=true", "model.lr=0.002",
                  "model.optimizer.weight_decay=0.01"], id="adamw"),
])
def test_graph_step_trains_bit_for_bit_as_the_eager_step(synthetic_mnist, tmp_path, caplog,
                                                         emulated_cuda, overrides):
    """Two epochs: each one's last batch (20 images) runs eager between replays."""
    with caplog.at_level(logging.INFO, logger="mnist_mlp.fused"):
        graph, eager = _run(synthetic_mnist, tmp_path, *overrides, epochs=2)
    assert _lines(caplog)[0] == GRAPH_LINE and len(_lines(caplog)) == 2  # the graph's, eager's
    assert type(graph[0].fused_step) is fused.GraphStep
    (captured,) = emulated_cuda.graphs
    assert captured.replays == 2 * (STEPS_PER_EPOCH - 1)  # every full batch
    assert graph[1].global_step == 2 * STEPS_PER_EPOCH
    _assert_bit_for_bit(graph, eager)


def test_graph_step_resumes_from_a_checkpoint_with_optimizer_state(synthetic_mnist, tmp_path,
                                                                   emulated_cuda):
    """The undo of the warm-up puts the checkpoint's momentum buffers back, not zeros."""
    fit(synthetic_mnist, tmp_path / "first", "model.cuda_graph=false",
         f"model.steps_per_iteration={K}", epochs=1)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["optimizer_states"][0]["state"]  # buffers to keep
    graph, eager = _run(synthetic_mnist, tmp_path, f"ckpt_path={last}", epochs=2)
    assert emulated_cuda.graphs[0].replays == STEPS_PER_EPOCH - 1  # the second epoch
    _assert_bit_for_bit(graph, eager)


class ShortBatchFirst(MnistDataModule):
    """The epoch's batches with the short one (20 images) first, chunked as before."""

    def train_dataloader(self):
        chunks = super().train_dataloader()
        return _ShortFirst(chunks)


class _ShortFirst:
    def __init__(self, chunks) -> None:
        self.chunks, self.batch_size = chunks, chunks.batch_size

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        batches = [batch for chunk in self.chunks for batch in chunk]
        batches = batches[-1:] + batches[:-1]
        k = self.chunks.chunk
        return iter([batches[i:i + k] for i in range(0, len(batches), k)])


def test_graph_step_captures_at_a_full_batch_after_a_short_first_one(synthetic_mnist, tmp_path,
                                                                     emulated_cuda):
    graph, eager = _run(synthetic_mnist, tmp_path,
                        "data._target_=tests.unit.test_fused_graph.ShortBatchFirst", epochs=2)
    assert emulated_cuda.graphs[0].replays == 2 * (STEPS_PER_EPOCH - 1)
    _assert_bit_for_bit(graph, eager)


def test_graph_step_with_no_full_batch_says_it_ran_eager(synthetic_mnist, tmp_path, caplog,
                                                         emulated_cuda):
    with caplog.at_level(logging.INFO, logger="mnist_mlp.fused"):
        fit(synthetic_mnist, tmp_path, "data.batch_size=512", epochs=1)
    assert _lines(caplog) == [
        "Training step: one CUDA graph per step, replayed 10 times per iteration.",
        "Training step: eager for the whole fit (no CUDA graph: no training batch had the full "
        "size, 512 samples)."]
    assert not emulated_cuda.graphs


def test_graph_step_releases_the_graph_at_the_end_of_fit(synthetic_mnist, tmp_path,
                                                         emulated_cuda):
    model, trainer, datamodule = fit(synthetic_mnist, tmp_path, "model.steps_per_iteration=4",
                                      epochs=1)
    (captured,) = emulated_cuda.graphs
    assert captured.resets == 1 and not model.fused_step.holds_graph
    assert model.fused_step.grads == [] and all(p.grad is not None for p in model.parameters()
                                                if p.requires_grad)  # the last step's, as eager
    trainer.validate(model, datamodule=datamodule, verbose=False)
    assert all(p.grad is None for p in model.parameters())  # validation zero-grads again


class StateAtStart(L.Callback):
    """What the first step starts from, and what the eager step saw when it first ran."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.before = _state(pl_module)


def _state(module) -> dict:
    optimizer = module.trainer.optimizers[0]
    return {"net": {k: v.clone() for k, v in module.net.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict()["state"]),
            "grads": [None if p.grad is None else p.grad.clone() for p in module.parameters()],
            "rng": torch.get_rng_state()}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["net"].keys() == b["net"].keys()
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    assert a["optimizer"].keys() == b["optimizer"].keys()
    for i, values in a["optimizer"].items():
        assert values.keys() == b["optimizer"][i].keys()
        assert all(torch.equal(v, b["optimizer"][i][k]) for k, v in values.items())
    assert [g is None for g in a["grads"]] == [g is None for g in b["grads"]]
    assert all(torch.equal(g, h) for g, h in zip(a["grads"], b["grads"], strict=True)
               if g is not None)
    assert torch.equal(a["rng"], b["rng"])


@pytest.mark.parametrize(("case", "cause"), [
    ("fails", "RuntimeError: CUDA error: an illegal instruction was encountered"),
    ("host-sync", "RuntimeError: CUDA error: operation not permitted when stream is capturing"),
], ids=["fails", "host-sync"])
def test_graph_step_falls_back_after_a_failed_capture_with_the_warm_up_undone(
        synthetic_mnist, tmp_path, caplog, monkeypatch, emulated_cuda, case, cause):
    """A capture that fails mid-way (in the optimizer step; or at a host read, as BatchNorm
    without momentum does, with ``network_blocker`` as lax as before) leaves weights, BatchNorm
    statistics, optimizer state, gradients and RNG as before the warm-up; the fit goes on eager."""
    overrides = ["+callbacks.state_at_start._target_=tests.unit.test_fused_graph.StateAtStart"]
    if case == "fails":
        emulated_cuda.fail_capture = True
    else:
        overrides.append("model.net.bn_momentum=null")
        monkeypatch.setattr(fused.blockers, "network_blocker", lambda module: None)
    first_eager: list[dict] = []
    eager_call = fused.EagerStep.__call__

    def spy(self, x, y):
        if isinstance(self, fused.GraphStep) and not first_eager:
            first_eager.append(_state(self.module))
        eager_call(self, x, y)

    monkeypatch.setattr(fused.EagerStep, "__call__", spy)
    with caplog.at_level(logging.INFO, logger="mnist_mlp.fused"):
        graph, eager = _run(synthetic_mnist, tmp_path, *overrides)
    fallback = _lines(caplog)[1]
    assert _lines(caplog)[0] == GRAPH_LINE
    assert fallback.startswith(f"Training step: eager, {K} optimizer steps per iteration from "
                               f"step 0 on (no CUDA graph: the capture failed ({cause}")
    assert fallback.endswith("); the warm-up was undone).")
    assert emulated_cuda.current is emulated_cuda.default_stream
    assert not emulated_cuda.graphs[0].replays
    start = next(c for c in graph[1].callbacks if isinstance(c, StateAtStart)).before
    _assert_same_state(first_eager[0], start)
    _assert_bit_for_bit(graph, eager)


class CountTrainingForwards(L.Callback):
    """A forward hook on the network, set before the fit: it must run at every step."""

    fits: list[int] = []  # training forwards the hook saw, per fit

    def on_fit_start(self, trainer, pl_module):
        self.fits.append(0)
        pl_module.net.register_forward_hook(self._count)

    def _count(self, module, inputs, output):
        self.fits[-1] += module.training


OPTIMIZER = ["model/optimizer=adam", "+model.optimizer.capturable=true"]


@pytest.mark.parametrize(("overrides", "why"), [
    (["+trainer.detect_anomaly=true"], "anomaly detection is on (trainer.detect_anomaly=true)"),
    (["model.net.bn_momentum=null"], "net.bn1 has momentum=None (model.net.bn_momentum=null)"),
    (["+callbacks.count._target_=tests.unit.test_fused_graph.CountTrainingForwards"],
     "a forward or backward hook is registered on net"),
    ([*OPTIMIZER, "model.optimizer._target_=torch.optim.NAdam", "model.lr=0.002"],
     "NAdam: the undo of the warm-up"),
    ([*OPTIMIZER, "model.optimizer._target_=torch.optim.ASGD", "model.lr=0.01"],
     "ASGD: the undo of the warm-up"),
    ([*OPTIMIZER, "model.optimizer._target_=torch.optim.Rprop", "~model.optimizer.weight_decay",
      "model.lr=0.001"], "Rprop: the undo of the warm-up"),
], ids=["anomaly", "bn-momentum-null", "hook", "nadam", "asgd", "rprop"])
def test_graph_step_is_refused_where_a_replay_would_differ(synthetic_mnist, tmp_path, caplog,
                                                           monkeypatch, emulated_cuda, overrides,
                                                           why):
    monkeypatch.setattr(CountTrainingForwards, "fits", [])
    with caplog.at_level(logging.INFO, logger="mnist_mlp.fused"):
        graph, eager = _run(synthetic_mnist, tmp_path, *overrides)
    (line, _) = _lines(caplog)
    assert line.startswith(f"Training step: eager, {K} optimizer steps per iteration "
                           f"(no CUDA graph: {why}")
    assert type(graph[0].fused_step) is fused.EagerStep and not emulated_cuda.graphs
    if "hook" in why:
        assert CountTrainingForwards.fits == [STEPS_PER_EPOCH] * 2  # graph run, eager run
    _assert_bit_for_bit(graph, eager)


class ChangeMidEpoch(L.Callback):
    """Changes, between two iterations of the first epoch, something a captured graph holds."""

    def __init__(self, change: str) -> None:
        self.change = change
        self.hook_calls = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0 and self.change == "reload":  # a state to go back to
            self.saved = (copy.deepcopy(pl_module.state_dict()),
                          copy.deepcopy(trainer.optimizers[0].state_dict()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx != (2 if self.change == "reload" else 1):
            return
        if self.change == "lr":
            for group in trainer.optimizers[0].param_groups:
                group["lr"] *= 0.5
        elif self.change == "dropout":
            pl_module.net.dropout1.p = 0.25
        elif self.change == "hook":
            pl_module.net.bn2.register_forward_hook(self._count)
        elif self.change == "reload":
            pl_module.load_state_dict(self.saved[0])
            trainer.optimizers[0].load_state_dict(self.saved[1])

    def _count(self, module, inputs, output):
        self.hook_calls += module.training


@pytest.mark.parametrize(("change", "step", "why"), [
    ("lr", K, "the lr of param group 0 changed from 0.1 to 0.05 after the capture"),
    ("dropout", K, "the p of net.dropout1 changed from 0.5 to 0.25 after the capture"),
    ("hook", K, "a forward or backward hook was registered on the network after the capture"),
    ("reload", 2 * K, "the optimizer state momentum_buffer of net.wih.weight is not the tensor "
                      "the graph was captured on"),
], ids=["lr", "dropout", "hook", "reload"])
def test_graph_step_falls_back_when_what_it_holds_changes_mid_epoch(
        synthetic_mnist, tmp_path, caplog, emulated_cuda, change, step, why):
    callback = ["+callbacks.change._target_=tests.unit.test_fused_graph.ChangeMidEpoch",
                f"+callbacks.change.change={change}"]
    with caplog.at_level(logging.INFO, logger="mnist_mlp.fused"):
        graph, eager = _run(synthetic_mnist, tmp_path, *callback)
    assert _lines(caplog)[0] == GRAPH_LINE
    assert _lines(caplog)[1].startswith(
        f"Training step: eager, {K} optimizer steps per iteration from step {step} on "
        f"(no CUDA graph: {why}")
    assert emulated_cuda.graphs[0].replays == step and not graph[0].fused_step.holds_graph
    hooked = [next(c for c in run[1].callbacks if isinstance(c, ChangeMidEpoch)).hook_calls
              for run in (graph, eager)]
    assert hooked == ([STEPS_PER_EPOCH - K] * 2 if change == "hook" else [0, 0])
    _assert_bit_for_bit(graph, eager)


def test_graph_step_non_finite_loss_stops_the_run(synthetic_mnist, tmp_path, emulated_cuda):
    """The graph's running loss sum is what the NaN check reads: non-finite from the bad step on."""
    with pytest.raises(UserError, match=r"Training stopped in epoch 1/\d+ \(step 4\).*NaN or infinite"):
        fit(synthetic_mnist, tmp_path, "model.lr=1e30", f"model.steps_per_iteration={K}",
             "callbacks.stop_on_nonfinite_loss.every_n_steps=1")
    assert emulated_cuda.graphs[0].replays == K


def _hooked_optimizer(module):
    return module.optimizers().optimizer.register_step_pre_hook(lambda opt, args, kwargs: None)


@pytest.mark.parametrize(("change", "why"), [
    (lambda module: None, None),
    (_hooked_optimizer, "a step hook is registered on SGD"),
    (lambda module: module.net[0].weight.register_hook(lambda grad: grad),
     "a gradient hook is registered on net.0.weight"),
    (lambda module: module.register_forward_pre_hook(lambda mod, args: None),
     "a forward or backward hook is registered on the LightningModule"),
    (lambda module: torch.nn.modules.module.register_module_forward_hook(
        lambda mod, args, out: None), "a forward or backward hook is registered on every module"),
    (lambda module: setattr(module.trainer.train_dataloader, "batch_size", None),
     "the training loader has no batch_size"),
], ids=["none", "optimizer-step-hook", "gradient-hook", "module-hook", "global-hook",
        "no-batch-size"])
def test_graph_step_blocker_refuses_hooks_it_would_skip_and_a_loader_without_batch_size(
        change, why):
    module = fake_module()  # what graph_blocker reads of a LightningModule on a GPU
    handle = change(module)
    try:
        blocker = fused.graph_blocker(module)
    finally:
        if handle is not None:
            handle.remove()
    assert blocker == why if why is None else blocker.startswith(why)
