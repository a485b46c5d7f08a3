#!/usr/bin/env bash
# The CPU recipe of the shipped CNN, end to end, three seeds side by side on the 2 cores:
#   part 1  fer2013_cnn_cpu_long.toml                  100 epochs from scratch (the teachers)
#   part 3  fer2013_cnn_cpu_view_part3.toml            16 epochs from part 1's model, taught by
#           the ensemble of all three seeds' part-1 models through their logits computed once
#           on 8 augmented views of each training face
# Seed 0's part-3 model is the one to ship (release/ship_model.py): REFIT=1 and
# --set data.split_seed=0 --set device.cpu_bf16=true, as below.
# Until the 100-epoch part 1 measured better on validation, parts 1 and 2 were
# fer2013_cnn_cpu_ema_erase.toml (40 epochs) and fer2013_cnn_cpu_restart.toml (36 epochs from
# part 1's model): PART1_CONFIG=fer2013_cnn_cpu_ema_erase.toml
# PART2_CONFIG=fer2013_cnn_cpu_restart.toml runs them; part 3 then starts from and is taught by
# the part-2 models.
#
#   OUT=/tmp/recipe DATA=/path/fer2013-images.tar.gz release/cnn_cpu_recipe.sh \
#     [--set KEY=VALUE ...]
#
# Extra arguments go to every `ferlab cnn train`, e.g. --set device.cpu_bf16=true on a CPU with
# bfloat16 instructions (AVX-512 BF16 or AMX), or a tiny check:
#   --set solver.epochs=1 --set data.train_limit=512
# Each seed holds out its own validation part, so in part 3 two of the three teachers have trained
# on most of a student's validation part and its validation accuracy is optimistic (about 0.8
# points: benchmarks/validation_leak.py); `ferlab cnn train` warns of it. --set data.split_seed=0
# gives every seed the same part, which no teacher then sees.
# Interrupted, it continues where it stopped when run again with the same OUT: a finished part
# (its summary.json) is kept, an unfinished one resumes from its checkpoint. Writes
# OUT/recipe.json: each run's accuracies and training seconds, and the recipe's wall clock.
# Environment: OUT (default ./cnn-cpu-recipe), DATA (FER2013 tar.gz or folder; default
# shared/data/ or /work/shared/data/), PYTHON (default: .venv/bin/python if present, else
# python3), SEEDS (default "0 1 2"), PART2_FROM (part-2 model files, {seed} standing for the seed,
# relative to the repository root or absolute: run part 3 only, e.g. on another machine from the
# models kept with a record:
#   PART2_FROM='benchmarks/results/models/fer2013_cnn_cpu_split0_long_seed{seed}.safetensors'
# together with the --set those models were trained with, data.split_seed included),
# TEACHER_SEEDS (default SEEDS: the seeds whose part-2 models teach part 3, e.g. "0 1 2 3 4" for
# five teachers and three students; a teacher seed outside SEEDS takes its model from PART2_FROM
# or from an earlier run with the same OUT), UNTIL (default part3; part2 stops after the
# teachers, e.g. to train more of them: SEEDS="3 4" UNTIL=part2), PART3_CONFIG (default
# fer2013_cnn_cpu_view_part3.toml, whose own five teachers the recipe replaces with TEACHER_SEEDS';
# fer2013_cnn_cpu_short_distill.toml runs the teachers on every batch for 8 epochs instead),
# PART1_CONFIG and PART2_CONFIG (default fer2013_cnn_cpu_long.toml and none: part 1's models are
# the part-2 models; a config for part 2 trains it from part 1's models),
# PART3_INIT (a part-2 model file every student starts from, like PART2_FROM; default: each seed's
# own), REFIT (1: part 3 also trains on the validation part, data.refit, and keeps its last epoch).
# The shipped model: seed 0 of REFIT=1, all with --set data.split_seed=0 --set device.cpu_bf16=true
# (3 seeds on a 2-core AMD EPYC Zen 5: part 1 about 145 min, part 3 52 min).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/cnn-cpu-recipe}
SEEDS=${SEEDS:-0 1 2}
TEACHER_SEEDS=${TEACHER_SEEDS:-$SEEDS}
UNTIL=${UNTIL:-part3}
PART1_CONFIG=${PART1_CONFIG:-fer2013_cnn_cpu_long.toml}
PART2_CONFIG=${PART2_CONFIG:-none}
PART3_CONFIG=${PART3_CONFIG:-fer2013_cnn_cpu_view_part3.toml}
configs=("$PART1_CONFIG" "$PART3_CONFIG")
[[ $PART2_CONFIG == none ]] || configs+=("$PART2_CONFIG")
for config in "${configs[@]}"; do
  [[ -f src/ferlab/configs/$config ]] ||
    { echo "cnn_cpu_recipe.sh: no config src/ferlab/configs/$config" >&2; exit 2; }
done
[[ $UNTIL == part2 || $UNTIL == part3 ]] ||
  { echo "cnn_cpu_recipe.sh: UNTIL is part2 or part3, not $UNTIL" >&2; exit 2; }
[[ -z "${REFIT:-}" || $REFIT == 1 ]] ||
  { echo "cnn_cpu_recipe.sh: REFIT is 1 or unset, not $REFIT" >&2; exit 2; }
[[ $UNTIL == part3 || -z "${PART2_FROM:-}" ]] ||
  { echo "cnn_cpu_recipe.sh: PART2_FROM runs part 3 only, not UNTIL=part2" >&2; exit 2; }
source release/run_env.sh
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# train PART CONFIG SEED [--set ...]: one part of one seed, skipped when finished, resumed from
# its checkpoint when interrupted; its output in OUT/PART_sSEED, its log in OUT/PART_sSEED.log.
train() {
  local part=$1 config=$2 seed=$3 run="$OUT/$1_s$3"
  shift 3
  if [[ -e "$run/summary.json" ]]; then return 0; fi
  local from=(--force)
  if [[ -e "$run/checkpoint.safetensors" ]]; then from=(--resume "$run/checkpoint.safetensors"); fi
  echo "$part seed $seed: start $(date +%s)" >> "$OUT/times.txt"
  ferlab cnn train "src/ferlab/configs/$config" --data "$DATA" --out "$run" "${from[@]}" \
    --set "seed=$seed" "$@" >> "$run.log" 2>&1 ||
    { echo "cnn_cpu_recipe.sh: $part seed $seed failed, see $run.log" >&2; return 1; }
  echo "$part seed $seed: end $(date +%s)" >> "$OUT/times.txt"
}

# side_by_side FUNCTION: run FUNCTION SEED for every seed at once; fail if any of them failed.
side_by_side() {
  local pids=() failed=0
  for seed in $SEEDS; do
    "$@" "$seed" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  return $failed
}

part1_and_2() {
  local seed=$1
  train part1 "$PART1_CONFIG" "$seed" "${EXTRA[@]}" || return 1
  if [[ $PART2_CONFIG == none ]]; then return 0; fi
  train part2 "$PART2_CONFIG" "$seed" "${EXTRA[@]}" \
    --set "model.init=$OUT/part1_s$seed/model.safetensors"
}

# part2_model SEED: the part-2 model file of SEED (the teacher and the student's start), from
# PART2_FROM when given, part 1's with PART2_CONFIG=none.
part2_model() {
  if [[ -n "${PART2_FROM:-}" ]]; then
    echo "${PART2_FROM//\{seed\}/$1}"
  elif [[ $PART2_CONFIG == none ]]; then
    echo "$OUT/part1_s$1/model.safetensors"
  else
    echo "$OUT/part2_s$1/model.safetensors"
  fi
}

part3() {
  local seed=$1 teachers="" s refit=()
  for s in $TEACHER_SEEDS; do teachers+="${teachers:+,}\"$(part2_model "$s")\""; done
  if [[ -n "${REFIT:-}" ]]; then refit=(--set data.refit=true); fi
  train part3 "$PART3_CONFIG" "$seed" "${EXTRA[@]}" "${refit[@]}" \
    --set "model.init=${PART3_INIT:-$(part2_model "$seed")}" --set "distill.teacher=[$teachers]"
}

# Every part-2 model that part 3 needs and this run does not train must exist before hours of
# training start: all of them with PART2_FROM, else the teachers outside SEEDS.
if [[ $UNTIL == part3 ]]; then
  for seed in $TEACHER_SEEDS $SEEDS; do
    if [[ -z "${PART2_FROM:-}" && " $SEEDS " == *" $seed "* ]]; then continue; fi
    model=$(part2_model "$seed")
    [[ -f "$model" ]] || { echo "cnn_cpu_recipe.sh: no part-2 model $model" >&2; exit 2; }
  done
  [[ -z "${PART3_INIT:-}" || -f "$PART3_INIT" ]] ||
    { echo "cnn_cpu_recipe.sh: no part-2 model $PART3_INIT (PART3_INIT)" >&2; exit 2; }
fi
EXTRA=("$@")
started=$(date +%s)
echo "recipe: start $started" >> "$OUT/times.txt"
if [[ -z "${PART2_FROM:-}" ]]; then side_by_side part1_and_2; fi
if [[ $UNTIL == part3 ]]; then side_by_side part3; fi
finished=$(date +%s)
echo "recipe: end $finished" >> "$OUT/times.txt"
"$PYTHON" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
# Lines "WHAT: start|end SECONDS". A recipe run again after an interruption has several
# sessions, each from a "recipe: start" to its last line; the wall clock adds them up.
sessions = []
for line in (out / "times.txt").read_text().splitlines():
    what, event, seconds = line.rsplit(" ", 2)
    if what == "recipe:" and event == "start":
        sessions.append([int(seconds), int(seconds)])
    elif sessions:
        sessions[-1][1] = int(seconds)
record = {
    "what": "the CPU recipe, run by release/cnn_cpu_recipe.sh",
    "wall_seconds": sum(end - start for start, end in sessions),
    "sessions": len(sessions),
    "parts": {},
}
for run in sorted(p for p in out.glob("part*_s*") if p.is_dir()):
    summary = json.loads((run / "summary.json").read_text())
    keys = ("val_accuracy", "epochs", "train_seconds", "public_test_accuracy", "private_test_accuracy")
    record["parts"][run.name] = {key: summary.get(key) for key in keys}
(out / "recipe.json").write_text(json.dumps(record, indent=2) + "\n")
print(f"recipe: {record['wall_seconds'] / 3600:.2f} h of wall clock; {out / 'recipe.json'}")
PY
