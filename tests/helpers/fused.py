"""Training with the fused step in-process, for its tests (tests/unit/test_fused*.py).

Synthetic MNIST: 500 training images at batch 48 are 11 batches (the last one of 20 images), so
K=4 gives chunks of 4, 4 and 3 batches: a shorter last chunk and a shorter last batch.
"""

from __future__ import annotations

import lightning as L
import torch

from mnist_mlp import runner, validation
from mnist_mlp.speed import apply_torch_settings
from tests.helpers.configs import compose_job, quiet
from tests.helpers.data import TRAIN_SPLIT, data_overrides

BATCH = 48
STEPS_PER_EPOCH = -(-TRAIN_SPLIT // BATCH)  # 11


def fit(synthetic, tmp_path, *overrides, epochs=2):
    """Fit in-process on the synthetic MNIST at batch ``BATCH``; the model, trainer, data module."""
    data_dir, md5s = synthetic
    cfg = compose_job(*data_overrides(data_dir, md5s), "~logger", *quiet(),
                      f"data.batch_size={BATCH}", "model.net.hidden1=64",
                      f"trainer.max_epochs={epochs}", *overrides, out=tmp_path)
    validation.check(cfg)
    apply_torch_settings(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = runner.build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return model, trainer, datamodule


def assert_same_training(a, b):
    """Two ``fit`` results trained bitwise alike: weights, BatchNorm statistics, steps, metrics."""
    (model_a, trainer_a, _), (model_b, trainer_b, _) = a, b
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key  # bitwise, BatchNorm stats too
    assert trainer_a.global_step == trainer_b.global_step
    for key in ("loss/train", "acc/train", "loss/val", "acc/val"):
        assert torch.equal(trainer_a.callback_metrics[key], trainer_b.callback_metrics[key]), key


def fake_module(device="cuda", optimizer=None, strategy=None, callbacks=(), **hparams):
    """What ``graph_blocker`` reads of a LightningModule on a GPU (no GPU needed)."""
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import Precision
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = optimizer or torch.optim.SGD(params, lr=0.1, momentum=0.9)
    trainer = SimpleNamespace(
        world_size=2 if strategy == "ddp" else 1, precision=hparams.pop("precision", "32-true"),
        strategy=DDPStrategy() if strategy == "ddp" else SingleDeviceStrategy("cpu"),
        lr_scheduler_configs=hparams.pop("schedulers", []), precision_plugin=Precision(),
        callbacks=list(callbacks), train_dataloader=SimpleNamespace(batch_size=2))
    module = torch.nn.Module()  # the hooks graph_blocker looks for are a module's
    module.net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    module.device, module.trainer, module.hparams = torch.device(device), trainer, hparams
    module.optimizers = lambda: SimpleNamespace(optimizer=optimizer)
    return module
