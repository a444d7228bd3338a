"""The report files: every number equals scikit-learn's on the written predictions.csv."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from mnist_mlp import atomic, report
from mnist_mlp.errors import UserError
from tests.helpers.predictions import CASES, measure, rng

LABELS = list(range(10))
HPARAMS = {"learning_rate": 0.1, "batch_size": 100, "epochs": 30}
SECTIONS = ["Model description", "Hyperparameters", "Test set", "Test data class sizes",
            "General metrics", "Per-class metrics", "Confusion matrix", "Classification report",
            "Ranking: ROC and precision-recall", "Calibration", "Conclusions"]


def _write(tmp_path, case, digits=4):
    label, pred = CASES[case](rng(sorted(CASES).index(case)))
    results, _ = measure(label, pred)
    report.write_report(report.Settings(dir=str(tmp_path), digits=digits), results, "MnistMlp(...)",
                        HPARAMS)
    return results


def _tokens(text):
    return [[float(t) if t[0].isdigit() else t for t in line.split()] for line in text.splitlines()]


def _read_predictions(folder):
    table = np.loadtxt(folder / "predictions.csv", delimiter=",", skiprows=1, ndmin=2)
    header = (folder / "predictions.csv").read_text().splitlines()[0].split(",")
    return header, table


@pytest.mark.usefixtures("undrawn_figures")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("digits", [4, 2])
def test_files_equal_scikit_learn_on_their_own_predictions(tmp_path, case, digits):
    _write(tmp_path, case, digits)
    header, table = _read_predictions(tmp_path)
    assert header == ["index", "label", "pred", *(f"prob_{k}" for k in LABELS)]
    y, p = table[:, 1].astype(int), table[:, 2].astype(int)
    np.testing.assert_allclose(table[:, 3:].sum(axis=1), 1.0, atol=1e-5)
    kw = {"labels": LABELS, "zero_division": 0}
    text, ref_text = (tmp_path / "classification_report.txt").read_text(), classification_report(
        y, p, digits=digits, **kw)
    if case == "one_class_all_wrong":
        # scikit-learn 1.9 prints supports as floats ("50.0") when no prediction is right;
        # ours stay integers: same layout, same numbers.
        assert _tokens(text) == _tokens(ref_text)
    else:
        assert text == ref_text
    ref = classification_report(y, p, output_dict=True, **kw)
    ours = json.loads((tmp_path / "classification_report.json").read_text())
    assert list(ours) == list(ref)
    for key, value in ref.items():
        if isinstance(value, dict):
            assert list(ours[key]) == list(value)
            for field, v in value.items():
                assert ours[key][field] == pytest.approx(v, abs=1e-6), (key, field)
        else:
            assert ours[key] == pytest.approx(value, abs=1e-6)
    with open(tmp_path / "per_class_metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "support", "accuracy", "precision", "recall", "f1"]
    for row in rows:
        d = ref[row["class"]]
        assert int(row["support"]) == d["support"]
        assert float(row["accuracy"]) == pytest.approx(d["recall"], abs=1e-6)
        assert float(row["precision"]) == pytest.approx(d["precision"], abs=1e-6)
        assert float(row["recall"]) == pytest.approx(d["recall"], abs=1e-6)
        assert float(row["f1"]) == pytest.approx(d["f1-score"], abs=1e-6)
    cm = np.loadtxt(tmp_path / "confusion_matrix.csv", delimiter=",", skiprows=1, dtype=int)
    np.testing.assert_array_equal(cm[:, 1:], confusion_matrix(y, p, labels=LABELS))


def test_markdown_and_html_show_every_section_with_the_numbers(tmp_path):
    r = _write(tmp_path, "mostly_right")
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for title in SECTIONS:
        assert f"## {title}" in md and f"<h2>{title}</h2>" in page
    # 5 tables: the classification report is its files only (its numbers are the per-class and
    # general tables'), not a third copy of them
    assert page.count("<table>") == 5 and page.count('src="data:image/png;base64,') == 4
    for png in ("confusion_matrix.png", "roc_curves.png", "pr_curves.png", "reliability.png"):
        assert f"]({png})" in md and (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "classification_report.txt" in md and (tmp_path / "classification_report.txt").is_file()
    assert f"{r.correct}/{r.total}" in md and f"{r.averages['macro']['f1']:.4f}" in page
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_conclusions_name_sizes_best_worst_and_most_confused_pairs():
    # 100 images per class except class 5 (60); 4 and 9 are mixed up most, then 3 and 5.
    label = np.repeat(np.arange(10), [100] * 5 + [60] + [100] * 4)
    pred = label.copy()
    pred[np.flatnonzero(label == 4)[:12]] = 9
    pred[np.flatnonzero(label == 9)[:7]] = 4
    pred[np.flatnonzero(label == 3)[:5]] = 5
    pred[np.flatnonzero(label == 0)[:1]] = 6
    r, _ = measure(label, pred)
    text = " ".join(report.conclusions(r))
    assert "from 60 images (class 5) to 100 (class 0)" in text and "1.67 times" in text
    assert "imbalanced" in text
    assert "confuses classes 4 and 9 most often" in text
    assert "4↔9: 19 (4→9: 12, 9→4: 7); 3↔5: 5 (3→5: 5, 5→3: 0); 0↔6: 1" in text
    assert "Highest F1-score: class 1 (1.0000), 2 (1.0000)" in text
    assert "lowest: class 4" in text and ", 9 (" in text


@pytest.mark.usefixtures("undrawn_figures")
def test_a_failed_write_leaves_the_complete_old_file(tmp_path, monkeypatch):
    _write(tmp_path, "random")
    before = (tmp_path / "predictions.csv").read_bytes()

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken)
    with pytest.raises(UserError, match=rf"Cannot write the report files into {tmp_path}"):
        _write(tmp_path, "mostly_right")
    assert (tmp_path / "predictions.csv").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("digits", [-1, 2.5, "4", True])
def test_bad_digits_are_refused_naming_the_key(digits):
    with pytest.raises(UserError, match=r"report\.digits=.* must be a whole number >= 0"):
        report.Settings(digits=digits)
