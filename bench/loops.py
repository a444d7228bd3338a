"""The loops the project is measured against: (b) bare PyTorch, (c) torchvision, (g) CUDA graph."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from bench.common import precision_context


class BareLoop:
    """(b): the arithmetic the MLP needs, on the DataModule's splits normalised once, with nothing
    around it (the project normalises each batch as it slices it from the files' bytes)."""

    def __init__(self, cfg: Any, datamodule: Any, device: torch.device, threads: int) -> None:
        from hydra.utils import instantiate

        self.device, self.threads, self.batch = device, threads, cfg.data.batch_size
        self.eval_batch, self.seed = cfg.data.eval_batch_size, cfg.seed
        self.precision = cfg.trainer.precision
        self.x, self.y = (t.to(device) for t in datamodule.normalised("train"))
        self.vx, self.vy = (t.to(device) for t in datamodule.normalised("val"))
        self.net = instantiate(cfg.model.net).to(device)
        self.forward = torch.compile(self.net) if cfg.model.compile else self.net
        self.opt = instantiate(cfg.model.optimizer)(self.net.parameters(), lr=cfg.model.lr)
        self.epoch = 0

    def run_epoch(self) -> None:
        """One shuffled training epoch and a validation pass, loss/accuracy kept on the device."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            self._train()
            self._validate()
        finally:
            torch.set_num_threads(previous)
        self.epoch += 1

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The shuffled training batches, sliced from the tensors on the device."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.y), generator=g).to(self.device)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            yield self.x[idx], self.y[idx]

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.vy), self.eval_batch):
            sl = slice(start, start + self.eval_batch)
            yield self.vx[sl], self.vy[sl]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch; the loss stays on the device."""
        with precision_context(self.precision, self.device):
            loss = F.cross_entropy(self.forward(x), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.detach()

    def _train(self) -> None:
        self.net.train()
        total = torch.zeros((), device=self.device)
        for x, y in self.batches():
            total += self.step(x, y)
        total.item()  # one host sync per epoch, as the project's epoch-level logging does

    @torch.no_grad()
    def _validate(self) -> None:
        self.net.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for x, y in self.val_batches():
            with precision_context(self.precision, self.device):
                correct += (self.forward(x).argmax(1) == y).sum()
        correct.item()


class TorchvisionLoop(BareLoop):
    """(c): the same loop fed by torchvision's MNIST Dataset (PIL per sample) and a DataLoader."""

    def __init__(self, cfg: Any, datamodule: Any, device: torch.device, threads: int,
                 workers: int) -> None:
        super().__init__(cfg, datamodule, device, threads)
        from torch.utils.data import DataLoader, Subset
        from torchvision import datasets, transforms

        from mnist_mlp.datamodule import split_indices

        d = cfg.data
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((d.mean,), (d.std,))])
        full = datasets.MNIST(d.data_dir, train=True, download=False, transform=tf)
        train, val = split_indices(len(full), d.val_size, d.split_seed)
        pin = device.type == "cuda"
        self.loader = DataLoader(Subset(full, train.tolist()), d.batch_size, shuffle=True,
                                 num_workers=workers, pin_memory=pin,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        self.val_loader = DataLoader(Subset(full, val.tolist()), d.eval_batch_size,
                                     num_workers=workers, pin_memory=pin)

    def _moved(self, loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._moved(self.loader)

    def val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._moved(self.val_loader)




class GraphLoop(BareLoop):
    """(g), CUDA only: the bare step captured once as a CUDA graph and replayed, the hardware anchor.

    Gather (from the device-resident tensors by a static index), forward, loss, backward, SGD step
    and the loss sum are one graph; one replay per batch. Warm-up on real random batches first: a
    constant batch gives BatchNorm zero variance and ruins the weights. The epoch's shorter last
    batch runs eagerly (gradients zeroed in place: the graph writes to their memory).
    """

    def __init__(self, cfg: Any, datamodule: Any, device: torch.device, threads: int) -> None:
        super().__init__(cfg, datamodule, device, threads)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.total = torch.zeros((), device=device)

    def _capture(self) -> None:
        self.index = torch.randint(0, len(self.y), (self.batch,), device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # real random batches
                self.index.copy_(torch.randint(0, len(self.y), (self.batch,), device=self.device))
                self.step(self.x[self.index], self.y[self.index])
        torch.cuda.current_stream().wait_stream(side)
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            with precision_context(self.precision, self.device):
                loss = F.cross_entropy(self.forward(self.x[self.index]), self.y[self.index])
            loss.backward()
            self.opt.step()
            self.total.add_(loss.detach())
        self.grads = [p.grad for p in self.net.parameters()]

    def _train(self) -> None:
        self.net.train()
        if self.graph is None:
            self._capture()
        self.total.zero_()
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.y), generator=g).to(self.device)
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            if len(idx) == self.batch:
                self.index.copy_(idx)
                self.graph.replay()
                continue
            for p, grad in zip(self.net.parameters(), self.grads, strict=True):
                p.grad = grad
                grad.zero_()
            with precision_context(self.precision, self.device):
                loss = F.cross_entropy(self.forward(self.x[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
            self.total.add_(loss.detach())
        self.total.item()
