"""Writing a file so that a reader (or a crash) never meets half of it: the project's one way.

The content goes to a hidden temporary file beside the target (the same folder, so the same file
system and an atomic ``os.replace``), is flushed and fsynced, then renamed over the target. A kill
at any moment leaves either the old file or the new one. Used for checkpoints (Lightning's own
write stages in the system temp folder, which may be another file system, making the final move a
copy), the report files and the outage journal's bookkeeping.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[BinaryIO], None]) -> None:
    """Write ``data`` (text, bytes, or a function writing into the open binary file) to ``path``."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:  # created with the usual permissions (umask), unlike mkstemp
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files(folder: str | os.PathLike, files: Mapping[str, str | bytes]) -> dict[str, Path]:
    """Each of ``files`` (name -> content) written atomically into ``folder`` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_atomic(folder / name, data)
    return {name: folder / name for name in files}
