"""Comparing runs: McNemar, Holm, seed spread and refusals against independent computations
(mnist_mlp/report/comparison.py; the comparison a sweep leaves: tests/integration/test_sweep.py)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from mnist_mlp.errors import UserError
from mnist_mlp.report.comparison import RunPredictions, compare, holm, mcnemar_exact
from mnist_mlp.report.comparison_files import comparison_csv, conclusions, sections, write_comparison

LABELS = list(range(10))


def _run(rid, seed, right, params=None, md5=None, n=400, label_seed=0):
    label = np.random.default_rng(label_seed).integers(0, 10, n)
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(n) < right, label, rng.integers(0, 10, n))
    return RunPredictions(rid, f"run{rid}", np.arange(n), label, pred,
                          {"seed": str(seed), "model.lr": "0.1", **(params or {})},
                          md5 or {"test_images": "aa", "test_labels": "bb"})


def _holm_by_hand(p):
    m, order, out, running = len(p), sorted(range(len(p)), key=lambda i: p[i]), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_mcnemar_is_scipys_binomial_test_on_the_discordant_pairs():
    a, b = _run("a", 1, 0.8), _run("b", 2, 0.7)
    only_a = sum(x and not y for x, y in zip(a.correct, b.correct, strict=True))
    only_b = sum(y and not x for x, y in zip(a.correct, b.correct, strict=True))
    assert mcnemar_exact(a.correct, b.correct) == (
        only_a, only_b, pytest.approx(binomtest(only_a, only_a + only_b, 0.5).pvalue, rel=1e-12))
    assert mcnemar_exact(a.correct, a.correct) == (0, 0, 1.0)


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03, 0.5], [0.2], [0.03, 0.03, 0.9], []])
def test_holm_equals_the_step_down_procedure(p):
    assert holm(p) == pytest.approx(_holm_by_hand(p))


def test_runs_are_ranked_seed_spread_collapsed_and_tested_against_the_best(tmp_path):
    runs = [_run("a", 1, 0.7), _run("b", 2, 0.8), _run("c", 3, 0.75),
            _run("d", 4, 0.9, {"model.lr": "0.01"}), _run("e", 5, 0.85, {"model.lr": "0.01"})]
    cmp = compare(runs)
    acc = {r.run_id: float(r.correct.mean()) for r in runs}
    assert [r.run.run_id for r in cmp.rows] == sorted(acc, key=lambda k: -acc[k])
    assert cmp.keys == ["model.lr", "seed"]
    groups = {g.config: g for g in cmp.configs}
    assert set(groups) == {"model.lr=0.1", "model.lr=0.01"}
    three = [acc[k] for k in "abc"]
    assert groups["model.lr=0.1"].mean == pytest.approx(np.mean(three))
    assert groups["model.lr=0.1"].std == pytest.approx(np.std(three, ddof=1))
    best = cmp.best.run
    raw = [binomtest(int((best.correct & ~r.run.correct).sum()),
                     int((best.correct != r.run.correct).sum())).pvalue for r in cmp.rows[1:]]
    rows = list(csv.DictReader(io.StringIO(comparison_csv(cmp))))
    assert rows[0]["mcnemar_p"] == "" and rows[0]["run_id"] == best.run_id
    assert [float(r["mcnemar_p"]) for r in rows[1:]] == pytest.approx(raw, rel=1e-12)
    assert [float(r["mcnemar_p_holm"]) for r in rows[1:]] == pytest.approx(_holm_by_hand(raw))
    for row, run in zip(rows, (r.run for r in cmp.rows), strict=True):
        ref = f1_score(run.label, run.pred, labels=LABELS, average=None, zero_division=0)
        assert [float(row[f"f1_class_{k}"]) for k in LABELS] == pytest.approx(ref)
        ci = binomtest(int(run.correct.sum()), len(run.label)).proportion_ci(method="wilson")
        assert (float(row["acc_ci_low"]), float(row["acc_ci_high"])) == pytest.approx((ci.low, ci.high))
    files = write_comparison(tmp_path, cmp)
    page = files["comparison.html"].read_text()
    assert "Seed spread of model.lr=0.1 over 3 seeds" in page and 'src="data:image/png' in page


def test_runs_tested_on_different_data_are_refused():
    with pytest.raises(UserError, match=r"different data \(tags data.md5.test_images differ\)"):
        compare([_run("a", 1, 0.8), _run("b", 2, 0.8, md5={"test_images": "zz", "test_labels": "bb"})])
    with pytest.raises(UserError, match=r"400 test images\) and b \(runb, 300 test images\)"):
        compare([_run("a", 1, 0.8), _run("b", 2, 0.8, n=300)])
    with pytest.raises(UserError, match="sizes or labels differ"):
        compare([_run("a", 1, 0.8), _run("b", 2, 0.8, label_seed=1)])


# A comparison with one run per configuration, one other run, or one run at all says what it has:
# the value of a single run (no ± 0.0000), distinct column names, a plain McNemar sentence.


def _same_config_run(rid: str, seed: int, right: float, lr: str = "0.1",
                     n: int = 400) -> RunPredictions:
    """A run whose params (seed included) are ``lr``'s alone: runs of one lr are one config."""
    return _run(rid, seed, right, {"seed": "1", "model.lr": lr}, {"test_images": "aa"}, n)


def _table(cmp, title):
    section = next(s for s in sections(cmp) if s.title.startswith(title))
    return next(b for b in section.blocks if b[0] == "table")[1:]


def test_one_run_per_configuration_shows_its_value_without_a_spread():
    cmp = compare([_same_config_run("a", 1, 0.9, "0.1"), _same_config_run("b", 2, 0.7, "0.01")])
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
    a, b = _same_config_run("a", 1, 0.92), _same_config_run("b", 2, right)
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
    cmp = compare([_same_config_run(k, s, 0.8) for k, s in (("a", 1), ("b", 2), ("c", 3))])
    text = " ".join(conclusions(cmp))
    assert "differs significantly from none of the 2 other runs" in text
    _, rows = _table(cmp, "Configurations")
    assert rows[0][1] == 3 and " ± " in rows[0][2] and " – " in rows[0][3]  # a spread of 3 seeds
    assert _table(cmp, "Runs ranked")[0][-1] == "Holm p"


def test_a_single_run_is_not_compared_with_anything():
    cmp = compare([_same_config_run("a", 1, 0.8)])
    text = conclusions(cmp)
    assert text[1] == "It is the only run: there is nothing to compare it with."
    assert not [t for t in text if "McNemar" in t or "±" in t]
    _, rows = _table(cmp, "Configurations")
    assert rows == [["same settings", 1, f"{cmp.best.accuracy:.4f}", "", "runa"]]
    header, _ = _table(cmp, "Runs ranked")
    assert header[-1] == "macro F1"  # no McNemar columns: nothing to test against
