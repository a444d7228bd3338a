"""The report says each number once: per-class scores in one table, the averages in another, no
column that repeats another, and the per-class accuracy said once to be the recall."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_mlp import report
from tests.helpers.predictions import results_of


def _tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table of the report: header and rows of cells."""
    out, lines = [], md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                rows.append([c.strip() for c in lines[j].strip("|").split("|")])
                j += 1
            out.append(([c.strip() for c in line.strip("|").split("|")], rows))
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    rng = np.random.default_rng(4)
    label = rng.integers(0, 10, 800)
    pred = np.where(rng.random(800) < 0.8, label, rng.integers(0, 10, 800))
    r = results_of(label, pred)
    folder = tmp_path_factory.mktemp("layout")
    report.write_report(report.Settings(dir=str(folder)), r, "net", {"learning_rate": 0.1})
    return r, (folder / "report.md").read_text()


def test_each_class_s_scores_are_in_one_table_row(written):
    r, md = written
    for k in range(10):
        scores = [f"{r.per_class[s][k]:.4f}" for s in ("precision", "recall", "f1")]
        rows = [row for _, rows in _tables(md) for row in rows
                if row[0] == str(k) and all(v in row for v in scores)]
        assert len(rows) == 1, k
    assert "```\n" + report.text_report(r).splitlines()[0] not in md  # no text-layout copy


def test_the_averages_appear_once(written):
    r, md = written
    cells = [row for _, rows in _tables(md) for row in rows]
    for average in ("macro", "weighted"):
        f1 = f"{r.averages[average]['f1']:.4f}"
        assert sum(row[0].startswith(average) and f1 in row for row in cells) == 1
    assert not [row for row in cells if row[0].startswith("micro")]  # = the accuracy, said so


def test_no_column_repeats_another(written):
    _, md = written
    for header, rows in _tables(md):
        if len(rows) < 3:
            continue
        columns = list(zip(*rows, strict=True))
        for i in range(len(columns)):
            for j in range(i + 1, len(columns)):
                assert columns[i] != columns[j], (header[i], header[j])


def test_the_per_class_accuracy_is_said_once_to_be_the_recall(written):
    _, md = written
    assert md.count("is the class's recall") == 1
    header = next(h for h, _ in _tables(md) if "Support" in h)
    assert "Recall (= accuracy)" in header and "Accuracy" not in header
    section = md.split("## Classification report\n\n", 1)[1].split("\n## ", 1)[0]
    assert "classification_report.txt" in section and "|" not in section  # the files, no table
