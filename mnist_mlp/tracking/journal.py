"""The outage journal: the writes a tracking server did not take, kept in order until they are sent.

One folder per run (``logger.buffer_dir``, default ``<output>/mlflow_buffer``): ``journal.jsonl``
(one JSON line per write, appended and fsynced), ``sent`` (how many lines have been sent),
``meta.json`` (server, process) and ``files/`` (copies of artifacts and the model payload, since
their sources, such as temporary folders, vanish). Append-only, so a crash mid-write loses at most
the line being written, and the folder stays the record of what was buffered.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_mlp.atomic import write_atomic

JOURNAL, SENT, META, FILES = "journal.jsonl", "sent", "meta.json", "files"
SYNC_COMMAND = "python -m mnist_mlp.tracking.sync"


class Journal:
    """The writes not yet sent: ``journal.jsonl`` plus ``sent``, the count already sent."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def exists(self) -> bool:
        return (self.root / JOURNAL).is_file()

    def start(self, tracking_uri: str) -> None:
        """Create the folder and its ``meta.json`` (server, process) on the first kept write."""
        if self.exists():
            return
        (self.root / FILES).mkdir(parents=True, exist_ok=True)
        meta = {"tracking_uri": tracking_uri, "pid": os.getpid(), "host": socket.gethostname(),
                "started": time.time()}
        (self.root / META).write_text(json.dumps(meta, indent=1))
        (self.root / JOURNAL).touch()

    @property
    def folder(self) -> Path:
        """What to give the sync command: the run's output folder when the buffer is in it."""
        return self.root.parent if self.root.name == "mlflow_buffer" else self.root

    def meta(self) -> dict[str, Any]:
        return json.loads((self.root / META).read_text())

    def append(self, entry: dict[str, Any]) -> None:
        with open(self.root / JOURNAL, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        lines = (self.root / JOURNAL).read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def sent(self) -> int:
        path = self.root / SENT
        return int(path.read_text()) if path.is_file() else 0

    def pending(self) -> list[tuple[int, dict[str, Any]]]:
        done = self.sent()
        return [(i, e) for i, e in enumerate(self.entries()) if i >= done]

    def mark_sent(self, count: int) -> None:
        write_atomic(self.root / SENT, str(count))

    def _slot(self, name: str) -> Path:
        """A new, numbered place in ``files/`` for a kept file called ``name``."""
        dst = self.root / FILES / f"{len(list((self.root / FILES).iterdir())):04d}" / name
        dst.parent.mkdir(parents=True)
        return dst

    def keep(self, src: str | os.PathLike) -> str:
        """A copy of a file or folder in ``files/``; returns its path."""
        src = Path(src)
        dst = self._slot(src.name)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return str(dst)

    def keep_payload(self, payload: dict[str, Any]) -> str:
        """The model payload (plain tensors and values) saved in ``files/``; returns its path."""
        import torch

        dst = self._slot("model.pt")
        torch.save(payload, dst)
        return str(dst)


def send(client: Any, entry: dict[str, Any], tracking_uri: str) -> None:
    """Perform one journal entry against ``client`` (a live entry carries the model payload itself,
    a kept one the path of its copy)."""
    from mlflow.entities import Metric, Param, RunTag

    op, run_id = entry["op"], entry["run_id"]
    if op == "log_batch":
        client.log_batch(run_id, metrics=[Metric(*m) for m in entry.get("metrics", [])],
                         params=[Param(*p) for p in entry.get("params", [])],
                         tags=[RunTag(*t) for t in entry.get("tags", [])])
    elif op == "log_artifact":
        client.log_artifact(run_id, entry["local"], entry.get("artifact_path"))
    elif op == "log_artifacts":
        client.log_artifacts(run_id, entry["local"], entry.get("artifact_path"))
    elif op == "set_tag":
        client.set_tag(run_id, entry["key"], entry["value"])
    elif op == "set_terminated":
        client.set_terminated(run_id, entry["status"], entry.get("end_time"))
    elif op == "log_model":
        from mnist_mlp.tracking.model import log_model

        log_model(run_id, tracking_uri, entry["payload"] if "payload" in entry else _load(entry["local"]),
                  entry.get("registered_model_name"))
    else:
        raise ValueError(f"unknown journal entry {op!r}")


def _load(path: str) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors and values


def counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    """What a list of entries holds: metric values, params, tags, artifact uploads, models, ends."""
    out = dict.fromkeys(("metric value", "param", "tag", "artifact upload", "model", "end status"), 0)
    for e in entries:
        out["metric value"] += len(e.get("metrics", []))
        out["param"] += len(e.get("params", []))
        out["tag"] += len(e.get("tags", [])) + (e["op"] == "set_tag")
        out["artifact upload"] += e["op"] in ("log_artifact", "log_artifacts")
        out["model"] += e["op"] == "log_model"
        out["end status"] += e["op"] == "set_terminated"
    return out


def describe(entries: list[dict[str, Any]]) -> str:
    """``99 metric values, 1 tag, 2 artifact uploads, the model, the end status``."""
    parts = []
    for what, n in counts(entries).items():
        if what in ("model", "end status") and n:
            parts.append(f"the {what}")
        elif n:
            parts.append(f"{n} {what}{'s' if n > 1 else ''}")
    return ", ".join(parts) or "nothing"


def journals(folder: str | os.PathLike) -> Iterator[Journal]:
    """The journal in an output folder (``<folder>/mlflow_buffer``) or the folder itself."""
    folder = Path(folder)
    for candidate in (folder, folder / "mlflow_buffer"):
        if (candidate / JOURNAL).is_file():
            yield Journal(candidate)
            return
