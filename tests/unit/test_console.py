"""The console: the progress display chosen by where stdout goes, Lightning's tip filtered out."""

from __future__ import annotations

import io
import logging

import pytest

from mnist_mlp import console


class _Stdout(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(("mode", "tty", "expected"), [
    ("auto", True, console.EpochBar), ("auto", False, console.EpochLines),
    ("bar", False, console.EpochBar), ("lines", True, console.EpochLines),
])
def test_the_progress_display_follows_where_stdout_goes(monkeypatch, mode, tty, expected):
    monkeypatch.setattr("sys.stdout", _Stdout(tty))
    bar = console.progress_bar(mode=mode, refresh_rate=7)
    assert type(bar) is expected
    if expected is console.EpochBar:  # Lightning's tqdm bar, epochs numbered from 1
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
