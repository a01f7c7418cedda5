#!/usr/bin/env bash
# Students of the shipped models on a lent GPU held for a few minutes (issue 14): networks of the headline's size
# (width 1, 4.9M parameters) trained side by side with the headline recipe (default.toml, the weight average's
# warm-up, augmentation on the GPU), the same epochs for each, so that one change separates them (RUN_SET below
# picks the set; the default set's four):
#   kd_online_d05   ferplus_cnn reads every augmented batch (mirrored too); targets mix votes and its answers 1:1
#   kd_online_d10   the same with the teacher's answers alone (distill_weight 1.0)
#   kd_offline_d05  the 87.40% cross-crop ensemble (ferplus_cnn on FER's crops, the aligned model on its own),
#                   read once per training face (python -m ferlib.distill), mixed 1:1 with the votes
#   control         no teacher
# The four epoch times of a 15-minute H100 lease (four runs side by side: 8-10 s an epoch) set EPOCHS; max_minutes
# still stops a run that would pass BUDGET_S. The test split is not packed, to leave room for the teacher in the 64
# MiB a call carries: the weights come back (float16, in 15 MB pieces of one tarball) and are scored here.
#   here:  mkdir -p .devicedata/students
#          python -m ferlib.pack --data data --out .devicedata/students/pack --splits train,valid
#          python -m ferlib.distill --weights models/ferplus_cnn.int8.onnx models/ferplus_cnn_aligned.int8.onnx \
#              --data data data/aligned --out .devicedata/students/shipped_two.npz
#          cp models/ferplus_cnn.safetensors .devicedata/students/
#   there: EPOCHS=30 BUDGET_S=520 OUT=/some/folder bash configs/device_students.sh       # the 2026-11-27 lease's runs
#          EPOCHS=24 BUDGET_S=370 EXTRA_SET="seed=7" OUT=/some/folder bash configs/device_students.sh  # its second call
#   the evening lease (RUN_SET=long): .devicedata/long holds the same pack, the third lease's online 0.5 student
#          (STUDENT = reports/distill/h100_students_2026-11-27/student_online_d05.safetensors) and
#          python -m ferlib.distill --weights STUDENT models/ferplus_cnn.safetensors \
#              models/ferplus_cnn_aligned.safetensors --data data data data/aligned \
#              --out .devicedata/long/ensemble_three.npz
#   there: RUN_SET=long FROM=.devicedata/long EPOCHS=50 BUDGET_S=560 WORKERS=4 OUT=/some/folder \
#              bash configs/device_students.sh
#   its last minutes (RUN_SET=third): .devicedata/third holds the pack and the long set's born_again_d05 weights
#   there: RUN_SET=third FROM=.devicedata/third EPOCHS=40 BUDGET_S=250 TAIL_S=35 WORKERS=8 OUT=/some/folder \
#              bash configs/device_students.sh
#   here:  cat students.tgz.* | tar xz; python -m ferlib.evaluate --weights weights/NAME.safetensors --data data ...
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
FROM=${FROM:-.devicedata/students}
DATA=${DATA:-data}
EPOCHS=${EPOCHS:-32}
BUDGET_S=${BUDGET_S:-520}  # from the start of this script to the last copy to $OUT
TAIL_S=${TAIL_S:-40}       # kept back for the runs' last validation and the copy
WORKERS=${WORKERS:-3}      # data-loading processes per run
OUT=${OUT:?set OUT to the folder results go to}
RUNS_DIR=runs/device_students
extra=(); for kv in ${EXTRA_SET:-}; do extra+=(--set "$kv"); done  # settings for every run (smoke: max_faces=200)
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }

# RUN_SET picks the runs: "students" (the 2026-11-27 lease), "long" (the 2026-11-27 evening lease: three side by
# side for 50 epochs) or "third" (that lease's last minutes)
case ${RUN_SET:-students} in
    students) RUNS=(
        "kd_online_d05|seed=1 teachers=$FROM/ferplus_cnn.safetensors distill_weight=0.5"
        "kd_online_d10|seed=2 teachers=$FROM/ferplus_cnn.safetensors distill_weight=1.0"
        "kd_offline_d05|seed=3 teacher_targets=$FROM/shipped_two.npz distill_weight=0.5"
        "control|seed=4"
    ) ;;
    # born_again: the third lease's online 0.5 student teaches a second generation (Furlanello et al., ICML 2018);
    # ensemble_three: offline targets of that student, ferplus_cnn and the aligned model, each on its own crops
    long) RUNS=(
        "born_again_d05|seed=21 teachers=$FROM/student_online_d05.safetensors distill_weight=0.5"
        "ensemble_three_d05|seed=22 teacher_targets=$FROM/ensemble_three.npz distill_weight=0.5"
        "control|seed=23"
    ) ;;
    # one process alone on the GPU for the lease's last minutes: a third generation, taught by born_again_d05
    third) RUNS=("born_again3_d05|seed=31 teachers=$FROM/born_again_d05.safetensors distill_weight=0.5") ;;
    *) echo "RUN_SET=$RUN_SET: expected students, long or third" >&2; exit 2 ;;
esac
mkdir -p "$OUT" "$RUNS_DIR"

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if [ ! -f "$DATA/FER2013Train/label.csv" ]; then
    "$PY" -m ferlib.pack --unpack "$FROM/pack" --data "$DATA" --no-progress
fi
echo "[$(elapsed) s] data ready"

# max_minutes counts training, not validation or start-up: the budget left, less the tail and ~10% for validation
minutes=$(awk -v b="$BUDGET_S" -v e="$(elapsed)" -v t="$TAIL_S" 'BEGIN { m = (b - e - t) * 0.9 / 60; if (m < 1) m = 1;
    printf "%.2f", m }')
echo "[$(elapsed) s] ${#RUNS[@]} runs, $EPOCHS epochs each, at most $minutes minutes of training"
pids=() names=()
for run in "${RUNS[@]}"; do
    name=${run%%|*} settings=(); for kv in ${run#*|}; do settings+=(--set "$kv"); done
    "$PY" -m ferlib.train --config configs/default.toml --run-name "$name" --set "runs_dir=$RUNS_DIR" \
        --set "data_dir=$DATA" --set ema_warmup=true --set "epochs=$EPOCHS" --set "patience=$EPOCHS" \
        --set "max_minutes=$minutes" --set augment_on_device=true --set "num_workers=$WORKERS" "${settings[@]}" \
        "${extra[@]}" --no-progress > "$RUNS_DIR/$name.log" 2>&1 & pids+=($!) names+=("$name")
done

# the best weights so far, as float16 (the shipped models' precision), and the logs, as one tarball in 15 MB pieces
# (no file over 16 MiB comes back); swapped in whole, so a call cut by its limit still returns a complete set
collect() {
    local stage=$RUNS_DIR/stage
    rm -rf "$stage" && mkdir -p "$stage/weights"
    "$PY" - "$RUNS_DIR" "$stage/weights" <<'EOF' || true
import sys
from pathlib import Path
from ferlib.models import export_model  # float16 by default
for best in sorted(Path(sys.argv[1]).glob("*/best.safetensors")):
    export_model(best, Path(sys.argv[2]) / f"{best.parent.name}.safetensors")
EOF
    tar czf "$stage/students.tgz" -C "$stage" weights -C "$PWD" "$RUNS_DIR"/*.log \
        $(ls "$RUNS_DIR"/*/summary.json 2>/dev/null) 2>/dev/null || true
    mkdir -p "$stage/pieces" && split -b 15000000 -d "$stage/students.tgz" "$stage/pieces/students.tgz."
    rm -f "$OUT"/students.tgz.* && mv "$stage"/pieces/* "$OUT"/
}
rm -f "$RUNS_DIR/finished"
# a copy a minute, the flag looked at every 2 s: a copier asleep for a minute once made the last copy miss the
# call's limit (the evening lease's second call)
(last=$(date +%s); while sleep 2 && [ ! -f "$RUNS_DIR/finished" ]; do
    if (( $(date +%s) - last >= 60 )); then collect; last=$(date +%s); fi; done) & copier=$!
trap 'kill $copier 2>/dev/null || true' EXIT

status=0
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then echo "[$(elapsed) s] ${names[$i]}: $(tail -1 "$RUNS_DIR/${names[$i]}.log")"
    else echo "[$(elapsed) s] ${names[$i]} failed:"; tail -5 "$RUNS_DIR/${names[$i]}.log"; status=1; fi
done
touch "$RUNS_DIR/finished"  # the copier ends after the copy it may be making
wait $copier 2>/dev/null || true
collect
echo "[$(elapsed) s] done: $(ls "$OUT")"
exit $status
