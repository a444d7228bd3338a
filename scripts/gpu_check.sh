#!/usr/bin/env bash
# The GPU check of issue #10, about 3-5 minutes on one H100/H200 (README "Speed", "GPU check").
#
# Needs, in the repository copy on the GPU machine (which has torch, lightning, torchmetrics,
# scikit-learn and matplotlib, but no hydra-core, omegaconf or mlflow, and no internet):
#   .whl/             wheels for Python 3.12, made here by `make gpu-wheels`
#   data/MNIST/raw/   the four MNIST files (the *.gz ones are 11 MB), as `make data` leaves them
# Runs: the 30-epoch reference on cuda (wall time, test accuracy, which training step ran), the
# report-vs-scikit-learn check on that run's report files, and `python -m bench --devices cuda`.
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
sys.exit(1 if bad or len(rows) != 10000 else 0)
PY

echo "== 3. python -m bench --devices cuda"
"$PY" -m bench --devices cuda --epochs 3 --warmup 1 --profile-epochs 1 --process-epochs 0 \
    --no-torchvision --out "$OUT/bench" 2>&1 | grep -v -i warn | tee "$OUT/bench.txt"
