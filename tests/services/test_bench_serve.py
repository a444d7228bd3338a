"""``python -m bench serve`` end to end on the synthetic MNIST, tiny counts; no timing asserted.

Speed targets live in its printed figures (docs/serving.md), not in tests.
"""

from __future__ import annotations

import json

import pytest
import torch

from bench import cli
from tests.helpers.data import data_overrides

pytestmark = pytest.mark.slow


def test_bench_serve_times_every_cell_and_prints_the_ratios(synthetic_mnist, tmp_path, capsys):
    data_dir, md5s = synthetic_mnist
    threads = torch.get_num_threads()
    out = tmp_path / "bench"
    code = cli.main(["serve", "--clients", "1,2", "--sizes", "1,5", "--requests", "2",
                     "--rounds", "2", "--calls", "2", "--seconds", "30", "--out", str(out),
                     *data_overrides(data_dir, md5s)])
    torch.set_num_threads(threads)  # the bench sets its thread count process-wide
    assert code == 0
    printed = capsys.readouterr().out
    for expected in ("paired paths, 2 rounds x 2 calls", "served image       5 images",
                     "load: concurrent clients", "served pixels (5 images, 1 client) / in-process",
                     "in-process predict (5 images) / bare forward:", "(target <= 3x"):
        assert expected in printed, printed
    figures = json.loads(next(out.glob("bench-serve-*.json")).read_text())
    for n in ("1", "5"):
        assert set(figures["paired"][n]) == {"forward", "predict", "predict, image", "served image",
                                             "served pixels"}
        assert all(row["n"] == 4 for row in figures["paired"][n].values())
    cells = figures["cells"]
    assert set(cells) == {f"{f}/{n}/{c}" for f in ("image", "pixels") for n in (1, 5)
                          for c in (1, 2)}
    assert all(c["n"] >= 2 and c["images_per_s"] > 0 and c["p95_ms"] >= c["p50_ms"]
               for c in cells.values())
    assert len(figures["ratios"]) == 3 and all(r["ratio"] > 0 for r in figures["ratios"])
