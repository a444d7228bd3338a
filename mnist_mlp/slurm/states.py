"""Slurm job states for submitit, read with ``squeue`` where Slurm keeps no accounting (no ``sacct``)."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from submitit.slurm.slurm import SlurmInfoWatcher

log = logging.getLogger(__name__)

#: The state given to a job that ``squeue`` listed before and no longer lists: the controller
#: forgets a job ``MinJobAge`` seconds (300 by default) after it ended.
GONE = "GONE"
#: States of a job that has not ended: submitit's list, and the transient states it lacks (a job
#: in one of those would otherwise count as ended, and its missing result as a failure).
NOT_ENDED = frozenset({
    "READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED",
    "CONFIGURING", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
    "SIGNALING", "STAGE_OUT", "STOPPED",
})
#: Seconds between two state reads at most: well under ``MinJobAge``, so no end goes unseen.
POLL_S = 15
_FIELDS = "JobID|State|NodeList"  # what submitit asks sacct for
_SQUEUE_FORMAT = "%i|%T|%N"  # the same fields from squeue


class JobStates(SlurmInfoWatcher):
    """submitit's job-state watcher (``sacct``), reading ``squeue`` where ``sacct`` cannot answer.

    submitit reads job states only with ``sacct``. On a cluster without accounting (no slurmdbd)
    that fails on every poll: submitit logs a warning each time and never learns that a job
    ended without writing its result (``scancel``, a crash, a kill), so a sweep waited for a
    cancelled job forever. The controller itself knows every job until ``MinJobAge`` seconds
    after it ended: ``squeue --states=all`` gives the same three fields as submitit's ``sacct``
    call, so submitit's parsing and caching stay as they are. This replaces the state source
    rather than silencing the warning, because silencing would leave the hang. Whether ``sacct``
    answers is asked once, with its output captured, so its error never reaches the console.
    """

    def __init__(self, delay_s: int = POLL_S) -> None:
        super().__init__(delay_s=delay_s)
        self._squeue: bool | None = None  # unknown until the first poll
        self._seen: set[str] = set()

    def _make_command(self) -> list[str] | None:
        sacct = super()._make_command()
        if sacct is None:
            return None
        if self._squeue is None:
            self._squeue = _fails(sacct)
        # --me, not --jobs: squeue fails when none of the given jobs is known any more.
        squeue = ["squeue", "--me", "--noheader", "--states=all", f"--format={_SQUEUE_FORMAT}"]
        return squeue if self._squeue else sacct

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if not self._squeue:
            return super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        info = super().read_info(f"{_FIELDS}\n{text}")
        watched = self._registered - self._finished
        for job_id in (self._seen & watched) - set(info):
            info[job_id] = {"JobID": job_id, "State": GONE, "NodeList": ""}
        self._seen |= watched & set(info)
        return info

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode).upper().split()[0] not in NOT_ENDED


def _fails(command: list[str]) -> bool:
    """Whether ``sacct`` fails here (``Slurm accounting storage is disabled``), said once in the log."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("sacct cannot be used (%s): job states come from squeue", err)
        return True
    if done.returncode:
        log.debug("sacct cannot be used (%s): job states come from squeue",
                 (done.stderr or done.stdout).strip()[:200])
    return done.returncode != 0


def watch(jobs: list[Any], states: JobStates | None = None) -> JobStates:
    """Make ``jobs`` (submitit ``SlurmJob``s) read their states from one ``JobStates``.

    submitit's jobs share a class-level watcher; an instance attribute takes its place for these
    jobs only, so nothing else in the process changes.
    """
    states = states or JobStates()
    for job in jobs:
        job.watcher = states
        states.register_job(job.job_id)
    return states
