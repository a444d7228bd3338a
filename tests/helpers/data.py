"""A small synthetic MNIST written in the real IDX format, and the overrides pointing train.py at it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mnist_mlp import fetch, idx

# The session's synthetic MNIST (fixture ``synthetic_mnist``): 500 training and 100 validation
# images; 203 test images, so two DDP ranks get uneven shards (a padded shard would show).
N_TRAIN, N_TEST = 600, 203
VAL_SIZE = 100  # data.val_size of data_overrides
TRAIN_SPLIT = N_TRAIN - VAL_SIZE


def synthetic_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits as bright 7x7 blocks at a class-specific place over noise: learnt in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 4)
        images[i, 2 + 8 * r : 9 + 8 * r, 2 + 6 * c : 9 + 6 * c] = 255
    return images, labels


def write_synthetic_mnist(data_dir: Path, n_train: int = 600, n_test: int = 200, seed: int = 0):
    """Write the four IDX files into ``data_dir/MNIST/raw``; return their MD5s (config keys)."""
    raw = fetch.raw_dir(data_dir)
    raw.mkdir(parents=True, exist_ok=True)
    md5s = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = synthetic_arrays(n, seed + (split == "test"))
        for kind, array in (("images", images), ("labels", labels)):
            path = raw / fetch.FILES[f"{split}_{kind}"][0]
            idx.write(path, array)
            md5s[f"{split}_{kind}"] = hashlib.md5(path.read_bytes()).hexdigest()
    return md5s


def data_overrides(data_dir: Path, md5s: dict[str, str]) -> list[str]:
    """Hydra overrides pointing train.py at a synthetic MNIST, verified by its own MD5s."""
    return [
        f"data.data_dir={data_dir}",
        "data.sources=[local]",
        f"data.val_size={VAL_SIZE}",
        *[f"data.md5.{k}={v}" for k, v in md5s.items()],
    ]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and modification time (``==`` means untouched)."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def mnist_csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Images and labels in the CSV layout of the PyPI wheel (a label column, then 784 pixels)."""
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    pairs = zip(images, labels, strict=True)
    rows = [",".join(map(str, [int(lab), *img.ravel().tolist()])) for img, lab in pairs]
    return ("\n".join([header, *rows]) + "\n").encode()
