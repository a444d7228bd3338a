"""The fused training iteration: K optimizer steps per Lightning iteration change no arithmetic.

Synthetic MNIST: 500 training images at batch 48 are 11 batches (the last one of 20 images), so
K=4 gives chunks of 4, 4 and 3 batches: a shorter last chunk and a shorter last batch.
"""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_mlp import fused, runner, validation
from mnist_mlp.datamodule import TensorBatches
from mnist_mlp.errors import UserError
from tests.helpers.configs import compose_job, quiet
from tests.helpers.data import data_overrides
from tests.helpers.fused import BATCH, STEPS_PER_EPOCH, assert_same_training, fake_module, fit


def test_k_steps_per_iteration_give_bitwise_the_weights_and_metrics_of_one(synthetic_mnist,
                                                                           tmp_path):
    one = fit(synthetic_mnist, tmp_path / "k1", "model.steps_per_iteration=1")
    four = fit(synthetic_mnist, tmp_path / "k4", "model.steps_per_iteration=4")
    assert one[1].num_training_batches == STEPS_PER_EPOCH
    assert four[1].num_training_batches == 3  # chunks of 4, 4 and 3 batches
    assert four[1].global_step == 2 * STEPS_PER_EPOCH  # optimizer steps, not iterations
    assert_same_training(one, four)


def test_train_metrics_equal_an_independent_computation(synthetic_mnist, tmp_path):
    """loss/train and acc/train against the logits the network really produced, in float64."""
    data_dir, md5s = synthetic_mnist
    logits: list[torch.Tensor] = []
    seen = []

    class Record(L.Callback):
        def on_train_start(self, trainer, pl_module):
            pl_module.net.register_forward_hook(
                lambda mod, inp, out: logits.append(out.detach().clone()) if mod.training else None)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.extend(b[2] for b in batch)

    cfg = compose_job(*data_overrides(data_dir, md5s), "~logger", *quiet(),
                      f"data.batch_size={BATCH}", "model.steps_per_iteration=4",
                      "trainer.max_epochs=1", out=tmp_path)
    L.seed_everything(cfg.seed)
    datamodule, model, trainer = runner.build(cfg)
    trainer.callbacks.append(Record())
    trainer.fit(model, datamodule=datamodule)

    y = datamodule.tensors["train"][1]
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(cfg.data.shuffle_seed))
    assert torch.equal(torch.cat(seen), order)  # the epoch's order, every sample once
    labels = y[order].split(BATCH)
    assert len(logits) == len(labels) == STEPS_PER_EPOCH
    pairs = list(zip(logits, labels, strict=True))
    loss_sum = sum(F.cross_entropy(lg.double(), t, reduction="sum") for lg, t in pairs)
    correct = sum(int((lg.argmax(1) == t).sum()) for lg, t in pairs)
    metrics = trainer.callback_metrics
    assert float(metrics["loss/train"]) == pytest.approx(float(loss_sum) / len(y), rel=1e-6)
    assert float(metrics["acc/train"]) == pytest.approx(correct / len(y), abs=1e-7)
    # and what per-batch torchmetrics updates weighted by batch size give (accuracy bitwise; the loss
    # to float32 rounding, summed in float64 here). The module's old MeanMetric(nan_strategy=
    # "disable") dropped the weights, a torchmetrics 1.9 quirk: its loss/train was the mean of batch
    # means, equal to this only when every batch is full.
    old_loss, old_acc = MeanMetric(), MulticlassAccuracy(10, average="micro")
    for lg, t in pairs:
        old_loss.update(F.cross_entropy(lg, t), weight=len(t))
        old_acc.update(lg, t)
    assert float(metrics["loss/train"]) == pytest.approx(float(old_loss.compute()), rel=1e-6)
    assert torch.equal(metrics["acc/train"], old_acc.compute())


def test_a_step_interval_scheduler_steps_once_per_optimizer_step(synthetic_mnist, tmp_path):
    scheduler = ["+model.scheduler._target_=torch.optim.lr_scheduler.StepLR",
                 "+model.scheduler._partial_=true", "+model.scheduler.step_size=5",
                 "+model.scheduler.gamma=0.5", "+model.scheduler.interval=step"]
    one = fit(synthetic_mnist, tmp_path / "k1", "model.steps_per_iteration=1", *scheduler)
    four = fit(synthetic_mnist, tmp_path / "k4", "model.steps_per_iteration=4", *scheduler)
    assert_same_training(one, four)  # the rate changes mid-chunk: equal weights need equal rates
    steps = 2 * STEPS_PER_EPOCH
    for _, trainer, _ in (one, four):
        assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == steps
        assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** (steps // 5))


def test_epoch_schedulers_and_clipping_work_with_k_steps(synthetic_mnist, tmp_path):
    extra = ["model/scheduler=plateau", "model.scheduler.patience=0", "model.gradient_clip_val=0.05"]
    one = fit(synthetic_mnist, tmp_path / "k1", "model.steps_per_iteration=1", *extra, epochs=3)
    four = fit(synthetic_mnist, tmp_path / "k4", "model.steps_per_iteration=4", *extra, epochs=3)
    assert_same_training(one, four)
    unclipped = fit(synthetic_mnist, tmp_path / "free", "model.steps_per_iteration=4",
                     "model/scheduler=plateau", "model.scheduler.patience=0", epochs=3)
    assert not torch.equal(unclipped[0].net.wih.weight, four[0].net.wih.weight)


def test_non_finite_loss_stops_within_an_iteration_with_k_steps(synthetic_mnist, tmp_path):
    with pytest.raises(UserError, match=r"Training stopped in epoch 1/\d+ \(step 4\).*NaN or infinite"):
        fit(synthetic_mnist, tmp_path, "model.lr=1e30", "model.steps_per_iteration=4",
             "callbacks.stop_on_nonfinite_loss.every_n_steps=1")
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_the_eager_path_runs_on_cpu_and_says_so(synthetic_mnist, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mnist_mlp.fused"):
        model, _, _ = fit(synthetic_mnist, tmp_path, "model.steps_per_iteration=auto", epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "mnist_mlp.fused"]
    assert lines == [f"Training step: eager, {fused.AUTO_STEPS['cpu']} optimizer steps per iteration "
                     "(no CUDA graph: the device is cpu)."]
    assert type(model.fused_step) is fused.EagerStep and model.steps_per_iteration == fused.AUTO_STEPS["cpu"]
    assert model.fused_step.direct  # nothing listens to the per-step hooks


class CountsBackward(L.Callback):
    calls = 0

    def on_after_backward(self, trainer, pl_module):
        type(self).calls += 1


def test_a_callback_on_the_step_hooks_is_called_every_step_with_the_same_arithmetic(
        synthetic_mnist, tmp_path):
    direct = fit(synthetic_mnist, tmp_path / "direct", "model.steps_per_iteration=4")
    hooked = fit(synthetic_mnist, tmp_path / "hooked", "model.steps_per_iteration=4",
                  "+callbacks.counts._target_=tests.unit.test_fused.CountsBackward")
    assert direct[0].fused_step.direct and not hooked[0].fused_step.direct
    assert CountsBackward.calls == 2 * STEPS_PER_EPOCH
    assert_same_training(direct, hooked)


@pytest.mark.parametrize("world_size", [1, 2])
def test_chunks_are_the_batches_of_the_epoch_in_order(world_size):
    x, y = torch.arange(103.0).unsqueeze(1), torch.arange(103)
    for rank in range(world_size):
        common = dict(batch_size=10, shuffle=True, seed=3, rank=rank, world_size=world_size)
        batches = list(TensorBatches(x, y, **common))
        chunks = list(TensorBatches(x, y, chunk=4, **common))
        assert len(chunks) == len(TensorBatches(x, y, chunk=4, **common)) == -(-len(batches) // 4)
        flat = [b for chunk in chunks for b in chunk]
        assert [len(c) for c in chunks][:-1] == [4] * (len(chunks) - 1)
        assert len(flat) == len(batches)
        for (xa, ya, ia), (xb, yb, ib) in zip(flat, batches, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


@pytest.mark.parametrize(
    ("override", "shown"),
    [("model.steps_per_iteration=0", "an integer >= 1 or auto"),
     ("model.steps_per_iteration=many", "an integer >= 1 or auto"),
     ("+trainer.gradient_clip_val=1.0", "model.gradient_clip_val"),
     ("+trainer.accumulate_grad_batches=2", "data.batch_size")],
)
def test_settings_the_fused_step_cannot_take_are_refused(override, shown):
    with pytest.raises(UserError, match=shown):
        validation.check(compose_job(override))


def test_a_plain_loader_of_single_batches_trains_one_step_per_batch():
    from torch.utils.data import DataLoader, TensorDataset

    from mnist_mlp.module import MnistLitModule

    torch.manual_seed(0)
    x, y = torch.randn(130, 784), torch.randint(0, 10, (130,))
    module = MnistLitModule(net={"_target_": "mnist_mlp.model.MnistMlp", "hidden1": 16},
                            optimizer={"_target_": "torch.optim.SGD", "_partial_": True})
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, accelerator="cpu",
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=50))
    assert trainer.global_step == 3
    assert 0 <= float(trainer.callback_metrics["acc/train"]) <= 1


@pytest.mark.parametrize(
    ("changes", "why"),
    [({}, None),
     ({"device": "cpu"}, "the device is cpu"),
     ({"cuda_graph": False}, "model.cuda_graph=false"),
     ({"strategy": "ddp"}, "strategy DDPStrategy"),
     ({"callbacks": [CountsBackward()]}, "on_after_backward is implemented by CountsBackward"),
     ({"precision": "bf16-mixed"}, "precision bf16-mixed"),
     ({"compile": True}, "model.compile=true"),
     ({"gradient_clip_val": 1.0}, "gradient clipping"),
     ({"schedulers": ["cosine"]}, "LR scheduler"),
     ({"optimizer": "adam"}, "Adam is not capturable"),
     ({"optimizer": "adam-capturable"}, None),
     ({"optimizer": "sgd-dampening"}, "SGD is not capturable")],
)
def test_the_cuda_graph_is_refused_where_a_captured_step_would_be_wrong(changes, why):
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizers = {"adam": torch.optim.Adam(params), "sgd-dampening":
                  torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.1),
                  "adam-capturable": torch.optim.Adam(params, capturable=True)}
    if "optimizer" in changes:
        changes = {**changes, "optimizer": optimizers[changes["optimizer"]]}
    blocker = fused.graph_blocker(fake_module(**changes))
    assert blocker == why if why is None else why in blocker
