"""The data module: one fixed split held as the files' bytes, every test image batched once, each
batch normalised as the formula says (mnist_mlp/datamodule.py)."""

from __future__ import annotations

import pytest
import torch

from mnist_mlp.datamodule import MnistDataModule, split_indices
from tests.helpers.data import N_TEST


def test_datamodule_splits_once_with_a_fixed_generator(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    dm.prepare_data()
    dm.setup("fit")
    train_y = dm.tensors["train"][1].clone()
    dm.setup("test")
    assert torch.equal(dm.tensors["train"][1], train_y)
    assert len(dm.tensors["train"][1]) == 500 and len(dm.tensors["val"][1]) == 100
    assert len(dm.tensors["test"][1]) == N_TEST
    x = dm.tensors["test"][0]
    assert x.shape == (N_TEST, 784) and x.dtype == torch.uint8
    other = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    other.setup("fit")
    assert torch.equal(other.tensors["val"][0], dm.tensors["val"][0])


def test_every_test_sample_is_batched_once_without_padding(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, eval_batch_size=64, sources=("local",),
                         md5=md5s)
    dm.setup("test")
    loader = dm.test_dataloader()
    seen = torch.cat([b[2] for b in loader])
    assert len(loader) == 4 and torch.equal(seen, torch.arange(N_TEST))


def test_normalise_in_place_equals_the_formula(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    dm.prepare_data()
    images, _ = dm._load(train=False)
    pixels = torch.from_numpy(images.copy()).to(torch.float32)
    expected = ((pixels / 255.0 - dm.mean) / dm.std).flatten(1)
    x, _ = dm.normalised("test")
    assert x.dtype == torch.float32 and torch.equal(x, expected)
    with pytest.raises(TypeError, match="uint8"):  # never in place on a float set
        dm.normalise(expected)


@pytest.mark.parametrize("chunk", [None, 3])
def test_every_batch_is_normalised_as_the_whole_split_normalised_once(synthetic_mnist, chunk):
    """The loaders normalise each batch as they slice it: the values are bitwise those of the
    split normalised at once, shuffled (gathered) or not (sliced), in chunks of batches or not."""
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, batch_size=64, eval_batch_size=64,
                         sources=("local",), md5=md5s)
    dm.prepare_data()
    dm.setup()
    for split, shuffle in (("train", True), ("test", False)):
        x, y = dm.normalised(split)
        loader = dm._loader(split, 64, shuffle=shuffle, chunk=chunk)
        batches = [b for item in loader for b in (item if chunk else [item])]
        index = torch.cat([b[2] for b in batches])
        assert sorted(index.tolist()) == list(range(len(y)))
        assert torch.equal(torch.cat([b[0] for b in batches]), x[index])
        assert torch.equal(torch.cat([b[1] for b in batches]), y[index])


def test_the_files_decode_as_torchvision_decodes_them(synthetic_mnist):
    """The split is read with mnist_mlp.idx (no torchvision import in a run): the same pixels and
    labels, the labels with their dtype, as torchvision's MNIST dataset holds, in the split rows."""
    from torchvision.datasets import MNIST

    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    dm.prepare_data()
    dm.setup()
    theirs = MNIST(str(data_dir), train=True, download=False)
    train, val = split_indices(len(theirs.targets), 100, dm.split_seed)
    expected = {"train": train, "val": val, "test": None}
    for split, rows in expected.items():
        if split == "test":
            theirs = MNIST(str(data_dir), train=False, download=False)
            rows = torch.arange(len(theirs.targets))
        x, y = dm.tensors[split]
        assert x.dtype == theirs.data.dtype and y.dtype == theirs.targets.dtype
        assert torch.equal(x, theirs.data[rows].flatten(1))
        assert torch.equal(y, theirs.targets[rows])
