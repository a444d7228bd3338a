"""The IDX file format of MNIST: strict reading, writing, and conversion from the CSV layout.

torchvision decodes IDX too, but with bare asserts; reading here first turns a truncated or foreign
file into a message that names it and says what to do.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from mnist_mlp.errors import UserError

UBYTE = 0x08
IMAGE_SHAPE = (28, 28)


def _fail(path: Path, problem: str) -> UserError:
    return UserError(
        f"MNIST file {path} {problem}. Delete or replace that file with the original MNIST IDX "
        "file (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte, optionally .gz) and run again."
    )


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of an IDX file, gunzipping ``*.gz`` in memory."""
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise _fail(path, f"cannot be read ({err})") from None


def read(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file of ``ndim`` dimensions (``read_bytes``, then ``parse``)."""
    return parse(read_bytes(path), path, ndim)


def parse(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """Decode IDX bytes into a uint8 array of ``ndim`` dimensions, refusing anything malformed."""
    if len(data) < 4:
        raise _fail(path, f"is truncated: {len(data)} bytes, shorter than the IDX header")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise _fail(
            path,
            f"has magic number 0x{data[:4].hex()}, expected 0x{UBYTE:04x}{ndim:02x}"
            f" (unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}): not an MNIST "
            f"{'image' if ndim == 3 else 'label'} file",
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _fail(path, "is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if ndim == 3 and shape[1:] != IMAGE_SHAPE:
        raise _fail(path, f"holds images of {shape[1]}x{shape[2]} pixels, expected 28x28")
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "longer than its header says"
        raise _fail(path, f"is {kind}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def csv_to_arrays(text: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×28×28) and labels (N) from MNIST CSV: a header row, then label and 784 pixels."""
    body = text.split(b"\n", 1)[1] if text[:1].isalpha() else text
    try:
        table = np.loadtxt(body.decode("ascii").splitlines(), delimiter=",", dtype=np.int16,
                           ndmin=2)
    except ValueError as err:
        raise UserError(f"{source} is not MNIST CSV ({err}).") from None
    if table.shape[1] != 1 + 28 * 28:
        raise UserError(
            f"{source} has {table.shape[1]} columns, expected 785 (label + 784 pixels)."
        )
    if table.min() < 0 or table.max() > 255 or table[:, 0].max() > 9:
        raise UserError(f"{source} holds values outside 0-255 or labels outside 0-9.")
    images = table[:, 1:].astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    return images, table[:, 0].astype(np.uint8)
