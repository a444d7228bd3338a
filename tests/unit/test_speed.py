"""The phases of a run: a second job in the same process counts only its own startup
(mnist_mlp/speed.py)."""

from __future__ import annotations

import time

import pytest

from mnist_mlp import speed


def test_a_second_clock_in_the_process_counts_only_its_own_startup(monkeypatch):
    monkeypatch.setattr(speed.PhaseClock, "_previous_end", None)
    first = speed.PhaseClock()
    first.mark("fit")
    time.sleep(0.05)
    second = speed.PhaseClock()
    assert first.seconds["startup"] == pytest.approx(speed.process_age(), abs=1.0)
    assert 0.05 <= second.seconds["startup"] < 0.5
