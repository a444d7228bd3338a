"""The console: the progress display chosen by where stdout goes, Lightning's tip filtered out."""

from __future__ import annotations

import io
import logging

import pytest

from mnist_mlp import console, progress
from mnist_mlp.paths import default_tracking_uri
from mnist_mlp.report.summary import headline_numbers
from mnist_mlp.tracking import ui


class _Stdout(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(("mode", "tty", "expected"), [
    ("auto", True, progress.EpochBar), ("auto", False, progress.EpochLines),
    ("bar", False, progress.EpochBar), ("lines", True, progress.EpochLines),
])
def test_the_progress_display_follows_where_stdout_goes(monkeypatch, mode, tty, expected):
    monkeypatch.setattr("sys.stdout", _Stdout(tty))
    bar = progress.progress_bar(mode=mode, refresh_rate=7)
    assert type(bar) is expected
    if expected is progress.EpochBar:  # Lightning's tqdm bar, epochs numbered from 1
        assert bar.refresh_rate == 7


def test_lightnings_tip_is_dropped_and_other_messages_kept():
    console.quiet_libraries()
    console.quiet_libraries()  # idempotent: one filter
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        logger.info("💡 Tip: For seamless cloud logging ... litlogger ...")
        logger.info("GPU available: False, used: False")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert [r.getMessage() for r in seen] == ["GPU available: False, used: False"]
    assert logger.filters.count(console._no_tips) == 1


# The summary a command ends with: one line per item off a terminal, and the MLflow address a
# person can open (the local store's ``make ui`` page, or the server's).


ITEMS = [("Test set", "accuracy 0.9812"), ("Report", "/o/report/report.html"),
         ("MLflow run", "http://127.0.0.1:5000/#/experiments/1/runs/abc")]


def _stream(tty: bool) -> io.StringIO:
    out = io.StringIO()
    out.isatty = lambda: tty  # a terminal, or a file / CI log
    return out


def test_off_a_terminal_the_summary_is_one_plain_line_per_item():
    out = _stream(tty=False)
    console.summary(ITEMS, out)
    assert out.getvalue().splitlines() == [f"{label}: {text}" for label, text in ITEMS]


def test_on_a_terminal_the_labels_are_aligned_and_bold_and_still_one_line_each():
    out = _stream(tty=True)
    console.summary(ITEMS, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "" and len(lines) == 1 + len(ITEMS)
    assert all(line.startswith("\033[1m") for line in lines[1:])
    starts = {line.index(text) for line, (_, text) in zip(lines[1:], ITEMS, strict=True)}
    assert len(starts) == 1  # the texts start in one column


def test_the_headline_numbers_give_the_interval_and_the_macro_f1():
    metrics = {"test/acc": 0.98123, "test/acc_ci_low": 0.97851, "test/acc_ci_high": 0.98376,
               "test/f1_macro": 0.98101, "test/loss": 0.06112}
    assert headline_numbers(metrics) == ("accuracy 0.9812 [0.9785, 0.9838] (95% interval), "
                                     "macro F1 0.9810, loss 0.0611")


def test_the_local_store_points_at_the_make_ui_page_of_the_run():
    text = ui.address(default_tracking_uri(), "3", "abc")
    assert text == ("http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning "
                    "(run `make ui` to serve it)")


@pytest.mark.parametrize(("uri", "expected"), [
    ("http://mlflow.team:5000/", "http://mlflow.team:5000/#/experiments/3/runs/abc"
                                 "?workflowType=machine_learning"),
    ("sqlite:////tmp/other.db", "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType="
                                "machine_learning (serve it with `mlflow ui --backend-store-uri "
                                "sqlite:////tmp/other.db --port 5000`)"),
])
def test_a_server_gives_its_own_page_and_another_file_the_command_that_serves_it(uri, expected):
    assert ui.address(uri, "3", "abc") == expected
