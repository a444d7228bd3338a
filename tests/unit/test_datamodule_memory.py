"""The data module decodes only what a stage needs, and a run frees the training splits after fit:
their memory goes even where Lightning still holds the loaders, and such a loader fails loudly."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from mnist_mlp import runner
from mnist_mlp.datamodule import MnistDataModule
from tests.helpers.configs import compose_job, quiet
from tests.helpers.data import data_overrides


def _datamodule(synthetic_mnist) -> MnistDataModule:
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    dm.prepare_data()
    return dm


def test_testing_decodes_the_test_file_alone_and_fitting_the_training_file_alone(synthetic_mnist):
    dm = _datamodule(synthetic_mnist)
    dm.setup("test")  # evaluate.py: no training images decoded and normalised
    assert set(dm.tensors) == {"test"}
    dm.setup("fit")
    assert set(dm.tensors) == {"test", "train", "val"}
    other = _datamodule(synthetic_mnist)
    other.setup("fit")
    assert set(other.tensors) == {"train", "val"}
    both = _datamodule(synthetic_mnist)
    both.setup()
    for split in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(both.tensors[split], dm.tensors[split],
                                                     strict=True))


def test_released_splits_are_freed_although_lightning_keeps_its_loaders(synthetic_mnist, tmp_path):
    cfg = compose_job(*data_overrides(*synthetic_mnist), *quiet(), "~logger", "trainer.max_epochs=1",
                      out=tmp_path)
    datamodule, model, trainer = runner.build(cfg)
    trainer.fit(model, datamodule=datamodule)
    before = [t.clone() for t in datamodule.tensors["train"]]
    freed = [weakref.ref(t) for split in ("train", "val") for t in datamodule.tensors[split]]
    stale = trainer.train_dataloader  # the loader Lightning's fit loop still holds
    datamodule.release("train", "val")
    gc.collect()
    assert set(datamodule.tensors) == set() and all(ref() is None for ref in freed)
    with pytest.raises(RuntimeError, match="train tensors of this loader were released"):
        next(iter(stale))
    datamodule.setup("fit")  # asked again: decoded again, the same split
    assert all(torch.equal(a, b) for a, b in zip(datamodule.tensors["train"], before, strict=True))


def test_a_run_tests_and_reports_after_freeing_the_training_splits(synthetic_mnist, tmp_path):
    cfg = compose_job(*data_overrides(*synthetic_mnist), *quiet(), "~logger", "trainer.max_epochs=1",
                      "report.background=false", out=tmp_path)
    datamodule, model, trainer = runner.build(cfg)
    results, written = runner.fit_and_test(cfg, datamodule, model, trainer,
                                           runner.config.build(cfg.report, "report"),
                                           runner.PhaseClock())
    written.wait()
    assert set(datamodule.tensors) == {"test"} and "test/acc" in results
    assert (tmp_path / "report" / "report.html").is_file()
