"""A store file that is not an SQLite database, or one cut short: the project's one paragraph
naming logger.tracking_uri and the file, before anything is trained, and the file left as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from faults_helpers import assert_one_paragraph, compose_job, quiet, run_train

from mnist_mlp import runner
from mnist_mlp.errors import UserError


def _not_a_database(path: Path) -> Path:
    path.write_bytes(b"these are not the bytes of an SQLite database\n" * 100)
    return path


def _truncated(path: Path) -> Path:
    with sqlite3.connect(path) as db:  # a real store's first pages, the rest cut off
        db.execute("CREATE TABLE t (x TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 400)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("make", [_not_a_database, _truncated], ids=["not-sqlite", "truncated"])
def test_a_damaged_store_file_is_named_and_left_untouched(tmp_path, make):
    store = make(tmp_path / "mlflow.db")
    before = _digest(store)
    cfg = compose_job(f"logger.tracking_uri=sqlite:///{store}", *quiet(), out=tmp_path / "out")
    with pytest.raises(UserError) as caught:
        runner.build(cfg)  # the logger opens the store: before any data is read or trained
    message = str(caught.value)
    assert "\n" not in message
    assert f"logger.tracking_uri=sqlite:///{store}" in message
    assert f"names {store}, which is not a usable SQLite database" in message
    assert "left as it is" in message and "nothing was trained" in message
    assert _digest(store) == before


def test_train_py_refuses_it_with_exit_2_and_no_traceback(tmp_path):
    store = _not_a_database(tmp_path / "mlflow.db")
    before = _digest(store)
    result = run_train(f"logger.tracking_uri=sqlite:///{store}", f"hydra.run.dir={tmp_path}/out",
                       *quiet(), cwd=tmp_path)
    assert_one_paragraph(result, "logger.tracking_uri=", str(store), "not a usable SQLite database")
    assert _digest(store) == before
    assert not list((tmp_path / "out").rglob("*.ckpt"))
