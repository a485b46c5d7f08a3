#!/usr/bin/env bash
# The whole GPU run of the FER2013 CNN in one go (< 10 minutes on one H100):
# copy the data to local disk, train the shipped config fer2013_cnn_gpu, evaluate PublicTest and
# PrivateTest without and with test-time augmentation, and write everything under $OUT.
#
#   OUT=/tmp/out DATA=/path/fer2013-images.tar.gz release/cnn_gpu_run.sh [--set KEY=VALUE ...]
#
# Environment: OUT (results folder, default ./cnn-gpu-out), DATA (FER2013 tar.gz or folder;
# default shared/data/ or /work/shared/data/), PYTHON (default: .venv/bin/python if present,
# else python3), DEVICE (default auto). Extra arguments go to `ferlab cnn train`, e.g. a tiny
# CPU check: DEVICE=cpu release/cnn_gpu_run.sh --set solver.epochs=1 --set data.train_limit=512
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/cnn-gpu-out}
DEVICE=${DEVICE:-auto}
source release/run_env.sh
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export FERLAB_CACHE_DIR="$WORK/cache"

started=$(date +%s)
cp -r "$DATA" "$WORK/"
DATA_LOCAL="$WORK/$(basename "$DATA")"
"$PYTHON" - <<'PY' > "$OUT/environment.json"
import json, platform, torch
info = {"torch": torch.__version__, "python": platform.python_version(),
        "cuda": torch.cuda.is_available()}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
print(json.dumps(info, indent=2))
PY
ferlab cnn train fer2013_cnn_gpu --data "$DATA_LOCAL" --out "$OUT/run" \
  --device "$DEVICE" "$@" 2> >(tr '\r' '\n' | grep -v '%|' >&2) | tee "$OUT/train.txt"
trained=$(date +%s)
for split in public private; do
  for tta in none flip tencrop; do
    ferlab evaluate --model "$OUT/run/model.safetensors" --data "$DATA_LOCAL" \
      --split "$split" --tta "$tta" --device "$DEVICE" --format json \
      --out "$OUT/eval-$split-$tta" > "$OUT/eval-$split-$tta.json"
  done
done
ferlab evaluate --model "$OUT/run/model.safetensors" --data "$DATA_LOCAL" --split public \
  --device "$DEVICE" --format text --out "$OUT/eval-public-report" > "$OUT/report-public.txt"
"$PYTHON" - "$OUT" "$started" "$trained" "$(date +%s)" <<'PY'
import json, sys
from pathlib import Path
out, started, trained, finished = Path(sys.argv[1]), *map(int, sys.argv[2:])
result = {
    "what": "FER2013 CNN, config fer2013_cnn_gpu, trained and evaluated by cnn_gpu_run.sh",
    "environment": json.loads((out / "environment.json").read_text()),
    "config": json.loads((out / "run" / "config.json").read_text()),
    "summary": json.loads((out / "run" / "summary.json").read_text()),
    "accuracy": {
        f"{split}_{tta}": json.loads((out / f"eval-{split}-{tta}.json").read_text())["accuracy"]
        for split in ("public", "private") for tta in ("none", "flip", "tencrop")
    },
    "wall_seconds": {"copy_and_train": trained - started, "total": finished - started},
}
(out / "cnn_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
print(json.dumps({"accuracy": result["accuracy"], "wall_seconds": result["wall_seconds"]}, indent=2))
PY
