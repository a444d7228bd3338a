"""Pairs of classes confused equally often are named together, in the conclusions, the run's
description and the pair grid, which picks one of them the same way every time and says so."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_mlp import report
from mnist_mlp.report.files import pair_grid_title
from mnist_mlp.report.numbers import derive, most_confused
from mnist_mlp.report.summary import confusion_line
from tests.helpers.predictions import from_confusion


def _tied_confusion() -> np.ndarray:
    """2↔7 and 4↔9 both mixed up 16 times (9 + 7, 12 + 4); 3↔5 5 times, 0↔6 and 1↔8 once each."""
    cm = np.diag(np.full(10, 100))
    for (t, p), n in {(2, 7): 9, (7, 2): 7, (4, 9): 12, (9, 4): 4, (3, 5): 5, (0, 6): 1,
                      (8, 1): 1}.items():
        cm[t, p] = n
    return cm


@pytest.fixture(scope="module")
def tied():
    return from_confusion(_tied_confusion())


def test_the_conclusions_name_every_pair_tied_for_most_confused(tied):
    text = " ".join(report.conclusions(tied))
    assert "The model confuses classes 2↔7 and 4↔9 most often, tied at 16 images each." in text
    assert "confuses classes 2 and 7 most often" not in text
    assert ("Most-confused pairs: 2↔7: 16 (2→7: 9, 7→2: 7); 4↔9: 16 (4→9: 12, 9→4: 4); "
            "3↔5: 5 (3→5: 5, 5→3: 0).") in text


def test_the_description_names_both_tied_pairs(tied):
    assert confusion_line(tied) == ("Most confused: 2↔7 and 4↔9, 16 images each "
                                    "(2→7: 9, 7→2: 7; 4→9: 12, 9→4: 4).")


def test_a_list_of_pairs_does_not_cut_between_equal_ones(tied):
    assert [p[:2] for p in most_confused(tied, 1)] == [(2, 7), (4, 9)]
    # 0↔6 and 1↔8 (one image each) tie for the fourth place: both or neither
    assert [p[:2] for p in most_confused(tied, 4)] == [(2, 7), (4, 9), (3, 5), (0, 6), (1, 8)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_pair_grid_picks_the_same_tied_pair_whatever_the_image_order_and_says_so(seed, tmp_path):
    r = from_confusion(_tied_confusion(), seed=seed)  # the same confusion, images shuffled apart
    n = derive(r)
    assert n.pair == (2, 7) and n.pair_ties == [(4, 9)]
    shown = {(int(r.label[k]), int(r.pred[k])) for k in n.pair_mistakes}
    assert shown == {(2, 7), (7, 2)} and len(n.pair_mistakes) == 16
    assert pair_grid_title(r, n) == ("Most-confused pair 2↔7: 16 of its 16 errors, most confident "
                                     "first\n(tied with 4↔9: the lowest class numbers shown)")
    images = np.zeros((r.total, 28, 28))
    report.write_report(report.Settings(dir=str(tmp_path)), r, "net", {}, images=images)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["most_confused_pair"] == [2, 7] and summary["most_confused_pair_ties"] == [[4, 9]]
    md = (tmp_path / "report.md").read_text()
    assert "The pair grid shows 2↔7; 4↔9 has as many mix-ups" in md


def test_without_a_tie_the_grid_title_and_note_say_nothing_of_one(tmp_path):
    cm = _tied_confusion()
    cm[9, 4] = 5  # 4↔9: 17, alone at the top
    r = from_confusion(cm)
    n = derive(r)
    assert n.pair == (4, 9) and n.pair_ties == []
    assert pair_grid_title(r, n) == "Most-confused pair 4↔9: 17 of its 17 errors, most confident first"
    assert "confuses classes 4 and 9 most often." in " ".join(report.conclusions(r))
