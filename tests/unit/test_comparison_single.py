"""A comparison with one run per configuration, one other run, or one run at all says what it has:
the value of a single run (no ± 0.0000), distinct column names, a plain McNemar sentence."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy.stats import binomtest

from mnist_mlp.report.comparison import RunPredictions, compare
from mnist_mlp.report.comparison_files import comparison_csv, conclusions, sections


def _run(rid: str, seed: int, right: float, lr: str = "0.1", n: int = 400) -> RunPredictions:
    label = np.random.default_rng(0).integers(0, 10, n)
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(n) < right, label, rng.integers(0, 10, n))
    return RunPredictions(rid, f"run{rid}", np.arange(n), label, pred,
                          {"seed": "1", "model.lr": lr}, {"test_images": "aa"})


def _table(cmp, title):
    section = next(s for s in sections(cmp) if s.title.startswith(title))
    return next(b for b in section.blocks if b[0] == "table")[1:]


def test_one_run_per_configuration_shows_its_value_without_a_spread():
    cmp = compare([_run("a", 1, 0.9, "0.1"), _run("b", 2, 0.7, "0.01")])
    header, rows = _table(cmp, "Configurations")
    assert len(set(header)) == len(header)  # no two columns headed alike
    assert header[1] == "runs" and header[-1] == "run names"
    for row, group in zip(rows, cmp.configs, strict=True):
        assert row[1] == 1 and row[2] == f"{group.mean:.4f}" and "±" not in row[2] and row[3] == ""
    note = next(b[1] for s in sections(cmp) if s.title.startswith("Configurations")
                for b in s.blocks if b[0] == "p")
    assert note.startswith("Each configuration has one run")
    table = list(csv.DictReader(io.StringIO(comparison_csv(cmp))))
    assert [r["config_acc_std"] for r in table] == ["", ""]  # undefined, not 0.0
    text = " ".join(conclusions(cmp))
    assert "(one run each: no seed spread to weigh it against)" in text and "on average" not in text


@pytest.mark.parametrize("right", [0.9, 0.5])
def test_one_other_run_gets_one_plain_mcnemar_sentence(right):
    a, b = _run("a", 1, 0.92), _run("b", 2, right)
    cmp = compare([a, b])
    only_a = int((a.correct & ~b.correct).sum())
    only_b = int((~a.correct & b.correct).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue
    verdict = "differs" if p < 0.05 else "does not differ"
    text = " ".join(conclusions(cmp))
    assert f"McNemar's exact test (α = 0.05): the best run {verdict} significantly from runb (p = {p:.3g})." \
        in text
    assert "of the 1 other" not in text and "Holm" not in text
    assert (f"The two runs disagree on {only_a + only_b} test images ({only_a} only the best gets "
            f"right, {only_b} only runb).") in text
    header, rows = _table(cmp, "Runs ranked")
    assert header[-3:] == ["b", "c", "McNemar p"]  # no Holm column: with one test it is p itself
    assert rows[1][-3:] == [only_a, only_b, f"{p:.3g}"] and rows[0][-3:] == ["best", "", ""]


def test_several_other_runs_say_none_rather_than_0_of():
    cmp = compare([_run("a", 1, 0.8), _run("b", 2, 0.8), _run("c", 3, 0.8)])
    text = " ".join(conclusions(cmp))
    assert "differs significantly from none of the 2 other runs" in text
    _, rows = _table(cmp, "Configurations")
    assert rows[0][1] == 3 and " ± " in rows[0][2] and " – " in rows[0][3]  # a spread of 3 seeds
    assert _table(cmp, "Runs ranked")[0][-1] == "Holm p"


def test_a_single_run_is_not_compared_with_anything():
    cmp = compare([_run("a", 1, 0.8)])
    text = conclusions(cmp)
    assert text[1] == "It is the only run: there is nothing to compare it with."
    assert not [t for t in text if "McNemar" in t or "±" in t]
    _, rows = _table(cmp, "Configurations")
    assert rows == [["same settings", 1, f"{cmp.best.accuracy:.4f}", "", "runa"]]
    header, _ = _table(cmp, "Runs ranked")
    assert header[-1] == "macro F1"  # no McNemar columns: nothing to test against
