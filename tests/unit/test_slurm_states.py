"""Slurm job states without accounting (mnist_mlp/slurm/states.py), read from squeue's own output
format; no cluster needed. The same watcher runs against a real cluster in tests/services/test_slurm.py."""

from __future__ import annotations

import pytest

from mnist_mlp.slurm import states


@pytest.fixture
def watcher(monkeypatch) -> states.JobStates:
    monkeypatch.setattr(states, "_fails", lambda command: True)  # sacct: accounting is off
    watcher = states.JobStates()
    for job in ("7_0", "7_1", "7_2"):
        watcher.register_job(job)
    return watcher


def test_without_accounting_states_come_from_squeue(watcher):
    command = watcher._make_command()
    assert command[0] == "squeue" and "--states=all" in command and "--me" in command


def test_with_accounting_submitits_sacct_call_stays(monkeypatch):
    monkeypatch.setattr(states, "_fails", lambda command: False)
    watcher = states.JobStates()
    watcher.register_job("7_0")
    assert watcher._make_command()[:2] == ["sacct", "-o"]


def test_squeue_lines_give_each_array_task_its_state(watcher):
    watcher._make_command()
    info = watcher.read_info("7_0|RUNNING|vm\n7_[1-2]|PENDING|\n")
    assert {job: info[job]["State"] for job in ("7_0", "7_1", "7_2")} == {
        "7_0": "RUNNING", "7_1": "PENDING", "7_2": "PENDING"}


def test_a_job_the_controller_forgot_has_ended(watcher):
    """Seen once, then no longer listed (older than MinJobAge): ended, so a sweep never waits for it."""
    watcher._make_command()
    watcher._info_dict.update(watcher.read_info("7_0|RUNNING|vm\n7_1|RUNNING|vm\n7_2|PENDING|\n"))
    watcher._info_dict.update(watcher.read_info("7_1|COMPLETED|vm\n"))
    assert watcher.get_state("7_0", mode="cache") == states.GONE
    assert watcher.is_done("7_0", mode="cache") and watcher.is_done("7_1", mode="cache")


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED",
                                   "REQUEUED", "REQUEUE_HOLD", "PREEMPTED"])
def test_transient_states_are_not_an_end(watcher, state):
    watcher._make_command()
    watcher._info_dict.update(watcher.read_info(f"7_0|{state}|vm\n"))
    assert not watcher.is_done("7_0", mode="cache")


@pytest.mark.parametrize("state", ["COMPLETED", "CANCELLED", "CANCELLED by 0", "FAILED", "TIMEOUT",
                                   "OUT_OF_MEMORY", "NODE_FAIL"])
def test_final_states_are_an_end(watcher, state):
    watcher._make_command()
    watcher._info_dict.update(watcher.read_info(f"7_0|{state}|vm\n"))
    assert watcher.is_done("7_0", mode="cache")


def test_sacct_is_asked_once(monkeypatch):
    asked = []
    monkeypatch.setattr(states, "_fails", lambda command: asked.append(command) or True)
    watcher = states.JobStates()
    watcher.register_job("7_0")
    for _ in range(3):
        watcher._make_command()
    assert len(asked) == 1 and asked[0][0] == "sacct"


def test_a_failing_sacct_says_nothing_on_the_console(capfd):
    assert states._fails(["sh", "-c", "echo 'Slurm accounting storage is disabled' >&2; exit 1"])
    assert states._fails(["true"]) is False
    assert capfd.readouterr() == ("", "")
