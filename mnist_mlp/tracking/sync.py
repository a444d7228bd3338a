"""Send what a server outage kept back: ``python -m mnist_mlp.tracking.sync <output dir>``.

A run whose tracking server did not answer before it ended keeps its writes in
``<output dir>/mlflow_buffer`` (``mnist_mlp.tracking.journal``). This sends them, in their order,
into the same run (metrics keep their original timestamps and steps), uploads the kept artifacts and
model (registered under the run's ``logger.registered_model_name``), and sets the end status the
run recorded, so the run ends FINISHED (or KILLED/FAILED) as if the server had never gone away.
Sending again is harmless: what was sent is counted and skipped.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from mnist_mlp.errors import UserError, exit_on_user_error
from mnist_mlp.tracking.journal import Journal, describe, journals, send
from mnist_mlp.tracking.offline import reason, unreachable
from mnist_mlp.tracking.store import fail_fast_http


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_not_running(journal: Journal, meta: dict[str, Any]) -> None:
    if meta.get("host") == socket.gethostname() and meta.get("pid") != os.getpid() \
            and _process_alive(int(meta.get("pid", -1))):
        raise UserError(
            f"The run that keeps {journal.root} is still going (pid {meta['pid']}): it sends its "
            "buffer itself when the server answers. Run this command after it has ended."
        )


def _send_all(client: Any, journal: Journal, entries: list[dict[str, Any]], uri: str) -> None:
    """Send ``entries`` from the first not yet sent on, marking each one sent as it goes."""
    for i in range(journal.sent(), len(entries)):
        try:
            send(client, entries[i], uri)
        except Exception as err:  # noqa: BLE001  (one paragraph, not a traceback)
            left = describe(entries[i:])
            if unreachable(err):
                raise UserError(
                    f"The MLflow server {uri} does not answer ({reason(err)}). Nothing was lost: "
                    f"{left} are still kept in {journal.root}. Start the server (or give "
                    "--tracking-uri) and run this command again."
                ) from None
            raise UserError(f"MLflow refused a kept {entries[i]['op']} for run {entries[i]['run_id']} "
                            f"({reason(err)}); {left} are still kept in {journal.root}.") from None
        journal.mark_sent(i + 1)


def sync(folder: str | os.PathLike, tracking_uri: str | None = None, timeout: int = 30) -> str:
    """Send the pending entries of ``folder``'s journal; returns a one-line summary."""
    journal = next(journals(folder), None)
    if journal is None:
        raise UserError(
            f"{folder} holds no MLflow buffer (mlflow_buffer/journal.jsonl): give the output folder "
            "of a run that warned that its tracking server did not answer."
        )
    meta = journal.meta()
    _check_not_running(journal, meta)
    uri = tracking_uri or meta["tracking_uri"]
    fail_fast_http(timeout)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    entries, first = journal.entries(), journal.sent()
    if first >= len(entries):
        return f"Nothing to send: all {len(entries)} kept writes of {journal.root} are in {uri}."
    _send_all(client, journal, entries, uri)
    ends = {e["run_id"]: e["status"] for e in entries if e["op"] == "set_terminated"}
    status = []
    for run_id in sorted({e["run_id"] for e in entries}):
        if run_id not in ends:  # the process died before it could record how the run ended
            ends[run_id] = client.get_run(run_id).info.status
            if ends[run_id] == "RUNNING":
                client.set_terminated(run_id, "FAILED")
                ends[run_id] = "FAILED (its process ended without an end status)"
        status.append(f"{run_id} {ends[run_id]}")
    return f"Sent {describe(entries[first:])} from {journal.root} to {uri}: run {', '.join(status)}."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_mlp.tracking.sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the run's output folder (or its mlflow_buffer folder)")
    parser.add_argument("--tracking-uri", help="send to this server instead of the run's own")
    parser.add_argument("--timeout", type=int, default=30, help="seconds per request (default 30)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        print(sync(args.folder, args.tracking_uri, args.timeout))


if __name__ == "__main__":
    main()
