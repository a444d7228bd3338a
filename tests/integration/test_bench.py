"""The benchmark runs end to end (one tiny epoch per path, synthetic MNIST); no timing asserted.

The fixed-cost section (whole processes) is tested in tests/integration/test_bench_cost.py.

Speed targets live in ``python -m bench``'s printed figures, not in unit tests.
"""

from __future__ import annotations

import json

import torch

from bench import cli
from tests.helpers.data import data_overrides


def test_bench_runs_every_path_and_writes_figures(synthetic_mnist, tmp_path, capsys):
    data_dir, md5s = synthetic_mnist
    threads = torch.get_num_threads()
    out = tmp_path / "bench"
    code = cli.main(["--epochs", "1", "--warmup", "1", "--threads", "1", "--devices", "cpu",
                       "--cost-rounds", "0", "--profile-epochs", "1", "--out", str(out),
                       *data_overrides(data_dir, md5s), "data.batch_size=50",
                       "trainer.enable_progress_bar=false", "callbacks.progress_bar=null"])
    assert code == 0
    printed = capsys.readouterr().out
    for expected in ("(a) project", "(b) bare", "(c) torchvision", "test evaluation",
                     "where (a)'s time goes", "peak RSS"):
        assert expected in printed
    figures = json.loads(next(out.glob("bench-*.json")).read_text())
    paths = figures["cpu"]["paths"]
    assert {"a", "b1", "c"} <= set(paths)
    assert figures["cpu"]["steps_per_iteration"] == 10 and figures["cpu"]["step"] == "eager"
    assert all(p["s_per_epoch"] > 0 and p["n"] == 1 for p in paths.values())

    # the profile: one row per layer added to a bare Trainer, the last one being (a) itself
    layers = figures["cpu"]["profile"]
    assert [row["layer"].split(" ")[0] for row in layers] == ["Trainer", "+", "+", "+", "+", "+"]
    assert all(row["step_s"] > 0 and row["bare_step_s"] > 0 for row in layers)
    assert layers[0]["epoch_end_s"] < layers[-1]["epoch_end_s"]  # no validation in the first

    torch.set_num_threads(threads)  # the bench applies the config's thread count process-wide
