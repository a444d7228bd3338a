"""The console: the progress display chosen by where stdout goes, Lightning's tip filtered out, and
the startup phase of a second job in the same process."""

from __future__ import annotations

import io
import logging
import time

import pytest
from lightning.pytorch.callbacks import TQDMProgressBar

from mnist_mlp import console, speed


class _Stdout(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(("mode", "tty", "expected"), [
    ("auto", True, TQDMProgressBar), ("auto", False, console.EpochLines),
    ("bar", False, TQDMProgressBar), ("lines", True, console.EpochLines),
])
def test_the_progress_display_follows_where_stdout_goes(monkeypatch, mode, tty, expected):
    monkeypatch.setattr("sys.stdout", _Stdout(tty))
    bar = console.progress_bar(mode=mode, refresh_rate=7)
    assert type(bar) is expected
    if expected is TQDMProgressBar:
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


def test_a_second_clock_in_the_process_counts_only_its_own_startup(monkeypatch):
    monkeypatch.setattr(speed.PhaseClock, "_previous_end", None)
    first = speed.PhaseClock()
    first.mark("fit")
    time.sleep(0.05)
    second = speed.PhaseClock()
    assert first.seconds["startup"] == pytest.approx(speed.process_age(), abs=1.0)
    assert 0.05 <= second.seconds["startup"] < 0.5
