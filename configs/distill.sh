#!/usr/bin/env bash
# The distilled model, end to end: four teachers (configs/teacher.toml: widths 2.0, 2.0, 1.5 and 1.0, seeds 1-4),
# each and their ensemble scored on the test split (flip TTA), then two students distilled from them
# (configs/student.toml, the teachers' share 0.5 and 1.0), chosen between on validation and scored on test.
# Runs that already finished (runs/NAME/summary.json) are kept, so an interrupted script continues where it stopped
# (an interrupted run itself continues with --resume).
#   bash configs/distill.sh                                  # the CPU: one run after another
#   PYTHON=python3 PARALLEL=1 WORKERS=3 bash configs/distill.sh   # a GPU: the teachers side by side
#   bash configs/distill.sh --set max_faces=300 --set epochs=1    # extra settings for every run (a smoke run)
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data}
WORKERS=${WORKERS:-1}        # data-loading processes per teacher (each student gets twice as many)
SIDE_BY_SIDE=${PARALLEL:-0}  # 1: train the teachers at once, then the students at once
REPORTS=${REPORTS:-reports/distill}
EXTRA=("$@")
mkdir -p runs "$REPORTS"

train() {  # name config workers settings...
    local name=$1 config=$2 workers=$3; shift 3
    if [ -f "runs/$name/summary.json" ]; then echo "$name: done earlier"; return; fi
    local resume=(); [ -f "runs/$name/last.pt" ] && resume=(--resume)
    echo "$name: training (log runs/$name.log)"
    "$PY" -m ferlib.train --config "$config" --run-name "$name" --set "data_dir=$DATA" --set "num_workers=$workers" \
        "$@" "${EXTRA[@]}" "${resume[@]}" --export "runs/$name/model.safetensors" --no-progress > "runs/$name.log" 2>&1 \
        || { echo "$name failed: see runs/$name.log"; tail -3 "runs/$name.log"; return 1; }
    tail -1 "runs/$name.log"
}

run_all() {  # side by side or one after another; fails if any failed
    local pids=() status=0
    for job in "$@"; do
        if [ "$SIDE_BY_SIDE" = 1 ]; then eval "$job" & pids+=($!); else eval "$job" || status=1; fi
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    return $status
}

score() {  # report-name weights... (test split, plain and flip TTA)
    local name=$1; shift
    "$PY" -m ferlib.evaluate --weights "$@" --data "$DATA" --split test --no-progress --json "$REPORTS/${name}_test.json" | sed -n 4p
    "$PY" -m ferlib.evaluate --weights "$@" --data "$DATA" --split test --no-progress --tta --json "$REPORTS/${name}_test_tta.json" | sed -n 4p
}

TEACHERS=(w2_s1:2.0:1 w2_s2:2.0:2 w15_s3:1.5:3 w1_s4:1.0:4)
jobs=()
for teacher in "${TEACHERS[@]}"; do
    IFS=: read -r name width seed <<< "$teacher"
    jobs+=("train teacher_$name configs/teacher.toml $WORKERS --set width=$width --set seed=$seed")
done
run_all "${jobs[@]}"
weights=()
for teacher in "${TEACHERS[@]}"; do
    name=teacher_${teacher%%:*}; weights+=("runs/$name/best.safetensors")
    echo "$name (majority protocol, test; plain then flip TTA):"; score "$name" "runs/$name/best.safetensors"
done
echo "ensemble of the ${#weights[@]} teachers:"; score teachers_ensemble "${weights[@]}"

run_all "train student_d05 configs/student.toml $((2 * WORKERS)) --set distill_weight=0.5" \
        "train student_d10 configs/student.toml $((2 * WORKERS)) --set distill_weight=1.0"
for name in student_d05 student_d10; do
    cp "runs/$name/summary.json" "$REPORTS/${name}_training.json"
    echo "$name (majority protocol, test; plain then flip TTA):"; score "$name" "runs/$name/best.safetensors"
done
for name in "${TEACHERS[@]}"; do cp "runs/teacher_${name%%:*}/summary.json" "$REPORTS/teacher_${name%%:*}_training.json"; done
