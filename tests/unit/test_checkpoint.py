"""evaluate.py, checkpoint loading, a training run's report vs scikit-learn, DDP exactness."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, data_overrides, store_overrides, write_synthetic_mnist
from sklearn.metrics import classification_report

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


# ------------------------------------------------------------------------ end to end (subprocess)


def _run(script, *overrides, timeout=400):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), *overrides], cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short train.py run on a synthetic MNIST (203 test images: uneven DDP shards)."""
    tmp = tmp_path_factory.mktemp("run")
    md5s = write_synthetic_mnist(tmp / "data", n_train=400, n_test=203)
    data = data_overrides(tmp / "data", md5s)
    result = _run("train.py", "trainer.max_epochs=1", "data.batch_size=50", *data,
                  *store_overrides(tmp))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, data


def _acc_line(stdout):
    return [ln for ln in stdout.splitlines() if ln.startswith("Test set:")][0].split(";")[0]


@pytest.mark.slow
def test_training_report_matches_scikit_learn_and_evaluate_reproduces_it(trained):
    tmp, data = trained
    folder = tmp / "outputs" / "report"
    table = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1)
    assert len(table) == 203 and sorted(table[:, 0]) == list(range(203))
    y, p = table[:, 1].astype(int), table[:, 2].astype(int)
    ref = classification_report(y, p, labels=list(range(10)), digits=4, zero_division=0)
    assert (folder / "classification_report.txt").read_text() == ref
    page = (folder / "report.html").read_text()
    assert "<h2>Conclusions</h2>" in page and "data:image/png;base64," in page

    ckpt = next((tmp / "outputs" / "checkpoints").glob("epoch*.ckpt"))  # the tested "best"
    out = tmp / "eval"
    result = _run("evaluate.py", f"ckpt_path={ckpt}", *data, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Testing DataLoader" not in result.stdout + result.stderr  # no bar off a terminal
    unbarred = _run("evaluate.py", f"ckpt_path={ckpt}", *data, f"hydra.run.dir={tmp}/eval2",
                    "trainer.enable_progress_bar=false")
    assert unbarred.returncode == 0, unbarred.stderr[-3000:]
    again = json.loads((out / "report" / "classification_report.json").read_text())
    first = json.loads((folder / "classification_report.json").read_text())
    assert again == first  # same accuracy, same every other number
    assert (out / "report" / "predictions.csv").read_text() == (
        folder / "predictions.csv").read_text()
    # the learning curves up to the checkpoint's own epoch, as the training report drew them
    assert (out / "report" / "learning_curves.csv").read_text() == (
        folder / "learning_curves.csv").read_text()


@pytest.mark.slow
def test_ddp_test_metrics_equal_one_process(trained):
    tmp, data = trained
    ckpt = tmp / "outputs" / "checkpoints" / "last.ckpt"
    runs = {}
    for name, extra in (("one", []), ("ddp", ["trainer.strategy=ddp", "trainer.accelerator=cpu",
                                             "trainer.devices=2"])):
        out = tmp / f"eval_{name}"
        result = _run("evaluate.py", f"ckpt_path={ckpt}", *data, *extra, f"hydra.run.dir={out}")
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = (out / "report", _acc_line(result.stdout))
    (one, one_line), (ddp, ddp_line) = runs["one"], runs["ddp"]
    assert one_line == ddp_line
    for name in ("classification_report.json", "confusion_matrix.csv", "per_class_metrics.csv"):
        assert (one / name).read_text() == (ddp / name).read_text(), name
    a = np.loadtxt(one / "predictions.csv", delimiter=",", skiprows=1)
    b = np.loadtxt(ddp / "predictions.csv", delimiter=",", skiprows=1)
    assert len(b) == 203  # every test image once: no padding of the odd-sized set
    np.testing.assert_array_equal(a[:, :3], b[:, :3])
    np.testing.assert_allclose(a[:, 3:], b[:, 3:], atol=1e-6)
    # The ranking collection's list states are gathered across ranks: the same AUROC/AP/ECE.
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, ddp))
    for key in ("auroc", "ap", "auroc_macro", "ap_macro", "ece", "accuracy_ci", "f1_macro_ci"):
        assert s2[key] == pytest.approx(s1[key], abs=1e-6), key


def test_evaluate_cli_without_a_usable_checkpoint_says_so(tmp_path):
    result = _run("evaluate.py", f"ckpt_path={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert f"error: ckpt_path={tmp_path}/nope.ckpt does not exist" in result.stderr
    assert "Traceback" not in result.stderr
