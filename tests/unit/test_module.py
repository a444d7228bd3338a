"""The LightningModule trains: one batch overfits, the same seed gives the same test result
(mnist_mlp/module.py, on the synthetic MNIST)."""

from __future__ import annotations

import lightning as L
import torch

from mnist_mlp.datamodule import MnistDataModule
from mnist_mlp.module import MnistLitModule


def _dm(data_dir, md5s, **kw):
    return MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s, **kw)


def _module(**kw):
    net = {"_target_": "mnist_mlp.model.MnistMlp", "hidden1": 64, "hidden2": 32, "hidden3": 16}
    return MnistLitModule(net=net, optimizer={"_target_": "torch.optim.Adam", "_partial_": True},
                          **kw)


def test_overfitting_one_batch_reaches_full_train_accuracy(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    L.seed_everything(0)
    module = _module(lr=0.01)
    module.net.dropout1.p = module.net.dropout2.p = module.net.dropout3.p = 0.0
    trainer = L.Trainer(overfit_batches=1, max_epochs=60, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=_dm(data_dir, md5s, batch_size=32))
    assert trainer.callback_metrics["acc/train"] == 1.0


def test_same_seed_gives_the_same_test_accuracy(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    accs = []
    for _ in range(2):
        L.seed_everything(7)
        trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu")
        module = _module(lr=0.01)
        dm = _dm(data_dir, md5s, batch_size=50, shuffle_seed=7)
        trainer.fit(module, datamodule=dm)
        accs.append(trainer.test(module, datamodule=dm, verbose=False)[0])
    assert accs[0] == accs[1]
    assert torch.isfinite(torch.tensor(accs[0]["test/loss"]))
