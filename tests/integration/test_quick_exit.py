"""A command's exit skips the modules' teardown (``speed.command``) but keeps what a user sees of an
exit: the exit status, flushed output, joined threads and ``atexit`` handlers. The libraries are
imported with the collector off, then frozen (``speed.importing_libraries``). And ``train.py``
itself imports no torch, Lightning or MLflow (a joblib sweep's parent and the report's worker
rely on it).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.configs import ROOT

SCRIPT = """
import atexit, gc, sys, threading, time
from pathlib import Path
from mnist_mlp import speed

out = Path(sys.argv[1])

def main():
    atexit.register(lambda: (out / "atexit").write_text("ran"))

    def late():
        time.sleep(0.3)
        (out / "thread").write_text("joined")

    threading.Thread(target=late).start()
    sys.stdout.write("buffered, no newline")
    if sys.argv[2] != "return":
        sys.exit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])

with speed.command():
    main()
"""


@pytest.mark.parametrize(("how", "status"), [("return", 0), ("0", 0), ("3", 3), ("why not", 1)])
def test_a_quick_exit_keeps_status_output_threads_and_atexit(tmp_path, how, status):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), how], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == status, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert ("why not" in proc.stderr) is (how == "why not")


IMPORTS = """
import gc, sys
from mnist_mlp import speed
with speed.importing_libraries():
    off = not gc.isenabled()
    import lightning
print(off, gc.isenabled(), gc.get_freeze_count() > 100_000)
with speed.importing_libraries():  # imported already: the collector is left alone
    print(gc.isenabled())
"""


def test_the_libraries_import_with_the_collector_off_then_frozen():
    proc = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True", "True"]


LEAN = """
import sys
from mnist_mlp import speed
with speed.importing_libraries():
    import lightning, mlflow, torchmetrics
    from mnist_mlp import fetch
    from mnist_mlp.datamodule import MnistDataModule
dm = MnistDataModule(sys.argv[1], val_size=100, sources=("local",), md5=dict.fromkeys(fetch.FILES))
dm.prepare_data()
dm.setup()
print(sorted({"torchvision", "scipy.signal", "matplotlib"} & set(sys.modules)))
accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes=3, average="micro")
accuracy.update(*__import__("torch").tensor([[0, 1, 2, 2], [0, 1, 1, 2]]))
print(float(accuracy.compute()))
from lightning_utilities.core.imports import RequirementCache, package_available
print(bool(RequirementCache("torchvision")), package_available("matplotlib"))
import torchmetrics.utilities.imports as seen
print(seen._MATPLOTLIB_AVAILABLE)
"""


def test_a_run_imports_no_torchvision_scipy_signal_or_matplotlib(synthetic_mnist):
    """torchmetrics imports them when they are installed; a run uses none of them, and its data
    is decoded without torchvision. The checks it was told otherwise work again afterwards."""
    proc = subprocess.run([sys.executable, "-c", LEAN, str(synthetic_mnist[0])],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["[]", "0.75", "True True"]
    assert "matplotlib is not imported in this process (mnist_mlp.speed.UNUSED_BACKENDS)" in lines[3]


def test_train_py_imports_no_torch_lightning_or_mlflow():
    """What a sweep's parent process and the report's worker (which re-imports train.py) pay."""
    code = ("import runpy, sys; runpy.run_path('train.py', run_name='__mp_main__'); "
            "print(sorted({'torch', 'lightning', 'mlflow', 'matplotlib'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_sweeps_parent_imports_no_torch_or_lightning_for_its_callbacks_and_launchers():
    """The parent of a sweep builds the Hydra callbacks (the parent run, the comparison, the
    champion), the launcher and the sweeper from conf/: none of them may pull torch in (each
    joblib worker has its own), which the console's summary once did through Lightning."""
    modules = ["mnist_mlp.tracking.sweep", "mnist_mlp.slurm.launcher", "mnist_mlp.search",
               "mnist_mlp.console", "mnist_mlp.epochs"]
    code = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
            "print(sorted({'torch', 'lightning'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
