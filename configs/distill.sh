#!/usr/bin/env bash
# The distilled model, end to end: four teachers (configs/teacher.toml: widths 2.0, 2.0, 1.5 and 1.0, seeds 1-4),
# each and their ensemble scored on the test split (plain and flip TTA), then two students distilled from them
# (configs/student.toml, the teachers' share 0.5 and 1.0), both scored; the one to keep is the one with the better
# validation accuracy, which the script names.
# A finished run (runs/NAME/summary.json) is kept and an interrupted one resumed, so running the script again with
# the same settings continues where it stopped (a run resumes only with the settings it started with).
#   bash configs/distill.sh                                       # the CPU: one run after another
#   PYTHON=python3 PARALLEL=1 WORKERS=3 bash configs/distill.sh --set augment_on_device=true   # a GPU, side by side
#   bash configs/distill.sh --set max_faces=300 --set epochs=1    # extra settings for every run (a smoke run)
# TEACHER_SET / STUDENT_SET add settings to the teachers or the students alone (configs/device_distill.sh sets their
# epochs to fit a lent GPU's minutes: TEACHER_SET="epochs=40 max_minutes=4").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data}
WORKERS=${WORKERS:-1}        # data-loading processes per teacher (each student gets twice as many)
SIDE_BY_SIDE=${PARALLEL:-0}  # 1: train the teachers at once, then the students at once
REPORTS=${REPORTS:-reports/distill}
EXTRA=("$@")
teacher_set=(); for kv in ${TEACHER_SET:-}; do teacher_set+=(--set "$kv"); done
student_set=(); for kv in ${STUDENT_SET:-}; do student_set+=(--set "$kv"); done
mkdir -p runs "$REPORTS"
pids=()

train() {  # name config workers settings...
    local name=$1 config=$2 workers=$3; shift 3
    if [ -f "runs/$name/summary.json" ]; then echo "$name: done earlier"; return; fi
    echo "$name: training (log runs/$name.log)"
    "$PY" -m ferlib.train --config "$config" --run-name "$name" --set "data_dir=$DATA" --set "num_workers=$workers" \
        "$@" "${EXTRA[@]}" --resume --export "runs/$name/model.safetensors" --no-progress > "runs/$name.log" 2>&1 \
        || { echo "$name failed: see runs/$name.log"; tail -3 "runs/$name.log"; return 1; }
    echo "$name: $(tail -1 "runs/$name.log")"
    if grep -q '"stopped": "time budget' "runs/$name/summary.json"; then
        echo "$name: warning: stopped by max_minutes before its schedule ended (it scores lower)"
    fi
}

launch() {  # train now, or with PARALLEL=1 in the background (wait_all collects it)
    if [ "$SIDE_BY_SIDE" = 1 ]; then train "$@" & pids+=($!); else train "$@"; fi
}

wait_all() {
    local status=0
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    pids=()
    return $status
}

majority() {  # report label: the majority-protocol line of a report
    "$PY" -c 'import json, sys
m = json.load(open(sys.argv[1]))["protocols"]["majority"]
print("  %s: %.2f%% majority (%d faces), macro F1 %.2f%%" % (sys.argv[2], 100 * m["accuracy"], m["n"], 100 * m["f1_macro"]))' "$1" "$2"
}

score() {  # report-name weights... (test split, plain and flip TTA)
    local name=$1; shift
    "$PY" -m ferlib.evaluate --weights "$@" --data "$DATA" --split test --no-progress --json "$REPORTS/${name}_test.json" > /dev/null
    "$PY" -m ferlib.evaluate --weights "$@" --data "$DATA" --split test --no-progress --tta --json "$REPORTS/${name}_test_tta.json" > /dev/null
    majority "$REPORTS/${name}_test.json" "$name"
    majority "$REPORTS/${name}_test_tta.json" "$name + flip TTA"
}

TEACHERS=(w2_s1:2.0:1 w2_s2:2.0:2 w15_s3:1.5:3 w1_s4:1.0:4)
for teacher in "${TEACHERS[@]}"; do
    IFS=: read -r name width seed <<< "$teacher"
    launch "teacher_$name" configs/teacher.toml "$WORKERS" --set "width=$width" --set "seed=$seed" "${teacher_set[@]}"
done
wait_all

# the students start at once; the teachers are scored while they train (side by side) or after them
launch student_d05 configs/student.toml $((2 * WORKERS)) --set distill_weight=0.5 "${student_set[@]}"
launch student_d10 configs/student.toml $((2 * WORKERS)) --set distill_weight=1.0 "${student_set[@]}"
weights=()
for teacher in "${TEACHERS[@]}"; do
    name=teacher_${teacher%%:*}
    weights+=("runs/$name/best.safetensors")
    cp "runs/$name/summary.json" "$REPORTS/${name}_training.json"
    score "$name" "runs/$name/best.safetensors"
done
score teachers_ensemble "${weights[@]}"
wait_all
for name in student_d05 student_d10; do
    cp "runs/$name/summary.json" "$REPORTS/${name}_training.json"
    score "$name" "runs/$name/best.safetensors"
done
"$PY" -c 'import json, sys
runs = {name: json.load(open(f"runs/{name}/summary.json"))["valid_accuracy"] for name in sys.argv[1:]}
best = max(runs, key=runs.get)
print("chosen on validation accuracy: %s (%s)" % (best, ", ".join("%s %.2f%%" % (n, 100 * a) for n, a in runs.items())))' \
    student_d05 student_d10
