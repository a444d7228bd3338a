"""evaluate.py, checkpoint loading, a training run's report vs scikit-learn, DDP exactness."""

from __future__ import annotations

import os

import pytest
import torch

from mnist_mlp import checkpoint
from mnist_mlp.errors import UserError
from mnist_mlp.module import MnistLitModule

NET = {"_target_": "mnist_mlp.model.MnistMlp", "hidden1": 16, "hidden2": 8, "hidden3": 8}


def _ckpt(path, **changes):
    module = MnistLitModule(net=NET, optimizer={"_target_": "torch.optim.SGD", "_partial_": True})
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "epoch": 0}
    for key, value in changes.items():
        ckpt[key] = value
    torch.save(ckpt, path)
    return module


def test_a_good_checkpoint_rebuilds_its_own_network_and_weights(tmp_path):
    saved = _ckpt(tmp_path / "ok.ckpt")
    module, _ = checkpoint.load_module(tmp_path / "ok.ckpt")
    assert module.net.wih.out_features == 16  # from the checkpoint, not from any config
    for key, value in saved.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"not a checkpoint at all"), "not a readable PyTorch checkpoint"),
        (lambda p: (_ckpt(p), p.write_bytes(p.read_bytes()[:500])), "not a readable PyTorch"),
        (lambda p: torch.save({"weights": torch.zeros(3)}, p), "not a checkpoint written by train.py"),
        (lambda p: torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, p),
         "no network hyperparameters"),
        (lambda p: torch.save({"state_dict": {}, "x": Evil()}, p), "weights_only=True refuses"),
        (lambda p: _ckpt(p, hyper_parameters={"net": {"_target_": "os.system", "command": "ls"},
                                              "optimizer": {}}), "outside the allowed prefixes"),
        (lambda p: _ckpt(p, state_dict={"net.wih.weight": torch.zeros(2, 2)}), "does not fit"),
    ],
    ids=["missing", "garbage", "truncated", "foreign", "no_hparams", "pickled_code",
         "disallowed_target", "wrong_weights"],
)
def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, make, message):
    path = tmp_path / "model.ckpt"
    make(path)
    with pytest.raises(UserError, match=message) as err:
        checkpoint.load_module(path)
    assert str(path) in str(err.value)
