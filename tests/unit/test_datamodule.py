"""The data module: one fixed split, every test image batched once, normalisation as the formula
says (mnist_mlp/datamodule.py)."""

from __future__ import annotations

import torch

from mnist_mlp.datamodule import MnistDataModule
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
    assert x.shape == (N_TEST, 784) and x.dtype == torch.float32
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
    dm.setup()
    images, _ = dm._load(train=False)
    expected = ((images.to(torch.float32) / 255.0 - dm.mean) / dm.std).flatten(1)
    assert torch.equal(dm.tensors["test"][0], expected)


def test_the_files_decode_as_torchvision_decodes_them(synthetic_mnist):
    """The split is read with mnist_mlp.idx (no torchvision import in a run): the same tensors,
    dtypes included, as torchvision's MNIST dataset holds."""
    from torchvision.datasets import MNIST

    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    dm.prepare_data()
    for train in (True, False):
        images, labels = dm._load(train=train)
        theirs = MNIST(str(data_dir), train=train, download=False)
        assert images.dtype == theirs.data.dtype and labels.dtype == theirs.targets.dtype
        assert torch.equal(images, theirs.data) and torch.equal(labels, theirs.targets)
