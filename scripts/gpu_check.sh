#!/usr/bin/env bash
# The GPU check of issues #10 and #19, meant to fit in 5 minutes on one H100/H200 (docs: Performance and Development,
# "GPU check"). It asserts, and exits non-zero at the first check that fails.
#
# Needs, in the repository copy on the GPU machine (which has torch, lightning, torchmetrics,
# scikit-learn and matplotlib, but no hydra-core, omegaconf or mlflow, and no internet):
#   .whl/             wheels for Python 3.12, made here by `make gpu-wheels`
#   data/MNIST/raw/   the four MNIST files (the *.gz ones are 11 MB), as `make data` leaves them
# Runs: (1) the 30-epoch reference on cuda: the CUDA graph step ran and never fell back, wall time;
# (2) that run's report against scikit-learn, and its test accuracy >= 0.980; (3) one epoch with
# the CUDA graph step against one with the eager step: weights allclose; (4) two replays of the
# captured step on the same batch draw different dropout masks; (5) `python -m bench --devices cuda`.
# Figures land in $OUT (or gpu_check/ when OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD" MPLBACKEND=Agg
PY="${PYTHON:-python3}"

if ! "$PY" -c "import hydra, omegaconf, mlflow" 2>/dev/null; then
    [ -d .whl ] || { echo "error: no .whl/ folder: run 'make gpu-wheels' where pip can reach PyPI" >&2; exit 2; }
    "$PY" -m pip install --quiet --no-index --find-links .whl hydra-core "omegaconf>=2.3,<2.4" \
        "mlflow==3.17.*" 2>&1 | tail -5
fi
ls data/MNIST/raw/train-images-idx3-ubyte* >/dev/null 2>&1 \
    || { echo "error: no MNIST under data/MNIST/raw: copy it there (make data fetches it)" >&2; exit 2; }
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

echo "== 1. python train.py, the 30-epoch reference on cuda"
RUN="$OUT/reference"
START=$(date +%s.%N)
rc=0
"$PY" train.py trainer.accelerator=gpu hydra.run.dir="$RUN" \
    logger.tracking_uri="sqlite:///$OUT/mlruns/mlflow.db" logger.artifact_location="$OUT/mlruns/artifacts" \
    > "$OUT/train.log" 2>&1 || rc=$?
END=$(date +%s.%N)
grep -E "Training step:|Time:|Test set|error" "$OUT/train.log" || true
[ "$rc" = 0 ] || { tail -30 "$OUT/train.log"; echo "train.py failed (exit $rc)" >&2; exit "$rc"; }
grep -q "Training step: one CUDA graph" "$OUT/train.log" \
    || { echo "FAIL: the reference did not train with the CUDA graph step" >&2; exit 1; }
! grep -q "Training step: eager" "$OUT/train.log" \
    || { echo "FAIL: the CUDA graph step fell back to eager (line above)" >&2; exit 1; }
"$PY" - "$START" "$END" <<'PY' | tee "$OUT/train_wall.txt"
import sys
print(f"python train.py wall, startup included: {float(sys.argv[2]) - float(sys.argv[1]):.1f} s (target <= 25 s)")
PY

echo "== 2. the run's report against scikit-learn"
"$PY" - "$RUN/report" <<'PY' | tee "$OUT/report_check.txt"
import csv, json, sys
from pathlib import Path
from sklearn.metrics import accuracy_score, classification_report
folder = Path(sys.argv[1])
with open(folder / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
label = [int(r["label"]) for r in rows]
pred = [int(r["pred"]) for r in rows]
want = classification_report(label, pred, labels=range(10), output_dict=True, zero_division=0)
have = json.loads((folder / "classification_report.json").read_text())
bad = []
for key, value in want.items():
    got = have.get(key, have.get(str(key)))
    if isinstance(value, dict):
        bad += [f"{key}/{k}" for k, v in value.items() if got is None or abs(got[k] - v) > 1e-9]
    elif got is None or abs(got - value) > 1e-9:
        bad.append(key)
acc = accuracy_score(label, pred)
print(f"{len(rows)} test images, accuracy {acc:.4f} (target >= 0.980); report vs scikit-learn: "
      + ("equal" if not bad else f"DIFFERENT in {bad[:5]}"))
sys.exit(1 if bad or len(rows) != 10000 or acc < 0.980 else 0)
PY

echo "== 3. one epoch, CUDA graph step against eager step: weights allclose"
for step in graph eager; do
    case "$step" in graph) choice=model.cuda_graph=true ;; *) choice=model.cuda_graph=false ;; esac
    "$PY" train.py trainer.accelerator=gpu trainer.max_epochs=1 "~logger" "$choice" \
        hydra.run.dir="$OUT/epoch_$step" > "$OUT/epoch_$step.log" 2>&1 \
        || { tail -30 "$OUT/epoch_$step.log"; echo "FAIL: the one-epoch $step run" >&2; exit 1; }
    grep "Training step:" "$OUT/epoch_$step.log"
done
"$PY" - "$OUT" <<'PY' | tee "$OUT/graph_vs_eager.txt"
# Same seed, batches and dropout masks (a replay advances the CUDA generator as the eager kernels
# do), so only the order of floating-point sums may differ, which 550 SGD steps may grow: the
# tolerance (rtol 1e-3, atol 1e-4) is far below what a wrong step (a stale lr, a warm-up left
# applied, masks repeated) gives.
import sys
import torch
out = sys.argv[1]
load = lambda step: torch.load(f"{out}/epoch_{step}/checkpoints/last.ckpt", map_location="cpu",
                               weights_only=True)["state_dict"]
graph, eager = load("graph"), load("eager")
worst = max((graph[k].double() - eager[k].double()).abs().max().item() for k in graph)
bad = [k for k in graph if not torch.allclose(graph[k].double(), eager[k].double(), rtol=1e-3, atol=1e-4)]
print(f"graph vs eager after one epoch: largest difference {worst:.3g}; allclose(rtol=1e-3, "
      f"atol=1e-4): {'all ' + str(len(graph)) + ' tensors' if not bad else 'NOT ' + str(bad[:5])}")
sys.exit(1 if bad else 0)
PY

echo "== 4. two replays of the captured step on one batch draw different dropout masks"
"$PY" - <<'PY' | tee "$OUT/dropout_replays.txt"
# lr 0: the weights stay, and BatchNorm in training mode normalises by the batch: the loss of a
# replay depends on its dropout masks only. Without dropout the replays' losses are equal.
import sys
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from mnist_mlp.module import MnistLitModule

def replay_losses(p):
    net = {"_target_": "mnist_mlp.model.MnistMlp", "dropout1": p, "dropout2": p, "dropout3": p}
    module = MnistLitModule(net=net, lr=0.0, optimizer={"_target_": "torch.optim.SGD",
                                                        "_partial_": True, "momentum": 0.9})
    losses = []

    class Replays(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step, (x, y) = pl_module.fused_step, batch
            assert step.holds_graph, "no CUDA graph was captured"
            for _ in range(3):
                before = step.loss_sum.clone()
                step(x, y)
                losses.append((step.loss_sum - before).item())
            trainer.should_stop = True

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(400, 784), torch.randint(0, 10, (400,)))
    L.Trainer(accelerator="gpu", devices=1, max_epochs=1, logger=False, callbacks=[Replays()],
              enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, DataLoader(data, batch_size=100))
    return losses

dropped, kept = replay_losses(0.5), replay_losses(0.0)
ok = len(set(dropped)) == 3 and len(set(kept)) == 1
print(f"losses of 3 replays on one batch: dropout 0.5 {dropped} (all different: "
      f"{len(set(dropped)) == 3}); dropout 0 {kept} (all equal: {len(set(kept)) == 1})")
sys.exit(0 if ok else 1)
PY

echo "== 5. python -m bench --devices cuda"
"$PY" -m bench --devices cuda --epochs 3 --warmup 1 --profile-epochs 1 --process-epochs 0 \
    --no-torchvision --out "$OUT/bench" 2>&1 | grep -v -i warn | tee "$OUT/bench.txt"
echo "GPU check passed in $SECONDS s (target <= 300 s)"
