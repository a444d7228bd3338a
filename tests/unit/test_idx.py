"""The IDX files: broken ones named in one message and left as they are, a CSV round trip
(mnist_mlp/idx.py, read through fetch.ensure_mnist). train.py meeting them: tests/integration."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from mnist_mlp import fetch, idx
from mnist_mlp.errors import UserError
from tests.helpers.data import mnist_csv, snapshot, synthetic_arrays, write_synthetic_mnist


def _break(raw: Path, name: str, data: bytes) -> None:
    (raw / name).write_bytes(data)


def _header(magic_dims: int, *shape: int) -> bytes:
    return struct.pack(">HBB", 0, idx.UBYTE, magic_dims) + struct.pack(f">{len(shape)}I", *shape)


def _wrong_magic(raw: Path) -> None:
    data = (raw / "train-labels-idx1-ubyte").read_bytes()
    _break(raw, "train-labels-idx1-ubyte", b"\x00\x00\x09\x01" + data[4:])


def _wrong_dims(raw: Path) -> None:  # an image file where the labels belong
    _break(raw, "t10k-labels-idx1-ubyte", (raw / "t10k-images-idx3-ubyte").read_bytes())


def _wrong_shape(raw: Path) -> None:
    _break(raw, "train-images-idx3-ubyte", _header(3, 600, 27, 27) + bytes(600 * 27 * 27))


def _label_out_of_range(raw: Path) -> None:
    labels = synthetic_arrays(200, 1)[1].copy()
    labels[17] = 10
    idx.write(raw / "t10k-labels-idx1-ubyte", labels)


def _counts_differ(raw: Path) -> None:
    idx.write(raw / "train-labels-idx1-ubyte", synthetic_arrays(599, 0)[1])


def _truncated_header(raw: Path) -> None:
    _break(raw, "train-images-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00")


def _corrupt_gz(raw: Path) -> None:
    (raw / "t10k-images-idx3-ubyte").unlink()
    _break(raw, "t10k-images-idx3-ubyte.gz", gzip.compress(b"x" * 1000)[:-8])


CASES = [
    (_wrong_magic, "train-labels-idx1-ubyte has magic number 0x00000901"),
    (_wrong_dims, "t10k-labels-idx1-ubyte has magic number 0x00000803"),
    (_wrong_shape, "train-images-idx3-ubyte holds images of 27x27 pixels"),
    (_label_out_of_range, "t10k-labels-idx1-ubyte holds label 10; labels must be 0-9"),
    (_counts_differ, "holds 600 images but train-labels-idx1-ubyte holds 599 labels"),
    (_truncated_header, "train-images-idx3-ubyte is truncated inside its header"),
    (_corrupt_gz, "t10k-images-idx3-ubyte.gz cannot be read"),
]


@pytest.mark.parametrize(("damage", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_broken_file_is_named_and_left_as_is(tmp_path, damage, expected):
    write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    damage(raw)
    before = snapshot(tmp_path)
    with pytest.raises(UserError) as err:
        fetch.ensure_mnist(tmp_path, ("local",), None)
    assert expected in str(err.value)
    assert "run again" in str(err.value)
    assert snapshot(tmp_path) == before


def test_unreadable_file_is_named(tmp_path, monkeypatch):
    """Tests run as root, where chmod does not stop reading: the read fails as it would."""
    write_synthetic_mnist(tmp_path)
    before = snapshot(tmp_path)
    real = Path.read_bytes

    def deny(path: Path) -> bytes:
        if path.name == "train-images-idx3-ubyte":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte cannot be read \(.*Permission"):
        fetch.ensure_mnist(tmp_path, ("local",), None)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


def test_empty_data_dir_says_what_is_missing_and_how_to_get_it(tmp_path):
    with pytest.raises(UserError) as err:
        fetch.ensure_mnist(tmp_path / "empty", ("local",), None)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "missing in" in msg and "copy" in msg


def test_a_folder_where_a_file_belongs_counts_as_missing_and_stays(tmp_path):
    write_synthetic_mnist(tmp_path)
    raw = fetch.raw_dir(tmp_path)
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte").mkdir()
    with pytest.raises(UserError, match="train-labels-idx1-ubyte missing in"):
        fetch.ensure_mnist(tmp_path, ("local",), None)
    assert (raw / "train-labels-idx1-ubyte").is_dir()


def test_csv_to_idx_round_trips_pixels_and_labels(tmp_path):
    images, labels = synthetic_arrays(7, seed=3)
    got_images, got_labels = idx.csv_to_arrays(mnist_csv(images, labels), "tiny.csv")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    idx.write(tmp_path / "imgs", got_images)
    data = (tmp_path / "imgs").read_bytes()
    assert data[:4] == b"\x00\x00\x08\x03" and data[4:8] == (7).to_bytes(4, "big")
    np.testing.assert_array_equal(idx.parse(data, tmp_path / "imgs", 3), images)
