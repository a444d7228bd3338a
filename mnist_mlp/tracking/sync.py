"""Send what a server outage kept back: ``python -m mnist_mlp.tracking.sync <output dir>``.

A run whose tracking server did not answer before it ended keeps its writes in
``<output dir>/mlflow_buffer`` (``mnist_mlp.tracking.offline``). This sends them, in their order,
into the same run (metrics keep their original timestamps and steps), uploads the kept artifacts and
model, and sets the end status the run recorded, so the run ends FINISHED (or KILLED/FAILED) as if
the server had never gone away. Sending again is harmless: what was sent is counted and skipped.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from mnist_mlp.errors import UserError, exit_on_user_error
from mnist_mlp.tracking.offline import Journal, describe, journals, reason, send, unreachable


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_not_running(journal: Journal) -> None:
    meta = journal.meta()
    if meta.get("host") == socket.gethostname() and meta.get("pid") != os.getpid() \
            and _process_alive(int(meta.get("pid", -1))):
        raise UserError(
            f"The run that keeps {journal.root} is still going (pid {meta['pid']}): it sends its "
            "buffer itself when the server answers. Run this command after it has ended."
        )


def _model_fn(tracking_uri: str, run_id: str, registered_model_name: str | None) -> Any:
    """What ``TrackedRun.log_model`` would have done, registration included."""
    from mnist_mlp.tracking.model import log_model

    return lambda payload: log_model(run_id, tracking_uri, payload, registered_model_name)


def sync(folder: str | os.PathLike, tracking_uri: str | None = None, timeout: int = 30) -> str:
    """Send the pending entries of ``folder``'s journal; returns a one-line summary."""
    journal = next(journals(folder), None)
    if journal is None:
        raise UserError(
            f"{folder} holds no MLflow buffer (mlflow_buffer/journal.jsonl): give the output folder "
            "of a run that warned that its tracking server did not answer."
        )
    _check_not_running(journal)
    uri = tracking_uri or journal.meta()["tracking_uri"]
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout))
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    pending = journal.pending()
    if not pending:
        return f"Nothing to send: all {len(journal.entries())} kept writes of {journal.root} are in {uri}."
    sent = []
    for i, entry in pending:
        if entry["op"] == "log_model":
            entry["log_fn"] = _model_fn(uri, entry["run_id"], entry.get("registered_model_name"))
        try:
            send(client, entry, uri)
        except Exception as err:  # noqa: BLE001  (one paragraph, not a traceback)
            first = reason(err)
            left = describe([e for _, e in journal.pending()])
            if unreachable(err):
                raise UserError(
                    f"The MLflow server {uri} does not answer ({first}). Nothing was lost: {left} "
                    f"are still kept in {journal.root}. Start the server (or give --tracking-uri) "
                    "and run this command again."
                ) from None
            raise UserError(f"MLflow refused a kept {entry['op']} for run {entry['run_id']} "
                            f"({first}); {left} are still kept in {journal.root}.") from None
        journal.mark_sent(i + 1)
        sent.append(entry)
    runs = sorted({e["run_id"] for e in journal.entries()})
    ends = {e["run_id"]: e["status"] for e in journal.entries() if e["op"] == "set_terminated"}
    for run_id in runs:  # the process died before it could record how the run ended
        if run_id not in ends and client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
            ends[run_id] = "FAILED (its process ended without an end status)"
    status = ", ".join(f"{r} {ends.get(r, client.get_run(r).info.status)}" for r in runs)
    return f"Sent {describe(sent)} from {journal.root} to {uri}: run {status}."


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
