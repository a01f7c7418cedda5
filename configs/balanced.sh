#!/usr/bin/env bash
# Re-balancing for the rare emotions, end to end, for both shipped FER+ models (issue 14): each fine-tuned 6 epochs
# on class-balanced draws (configs/finetune_balanced.toml, configs/finetune_balanced_aligned.toml), then mixed with
# the model it started from and logit-adjusted, the share and tau chosen together on the validation split
# (ferlib.adjust --interpolate-from, a validation accuracy at most one point below the best), then scored on the
# FER+ test split (plain and flip TTA) and on the faces from outside FER (benchmarks/cross_dataset.py, fed directly,
# the shipped models beside them). A finished run (runs/NAME/summary.json) is kept and an interrupted one resumed.
#   bash configs/balanced.sh
#   bash configs/balanced.sh --set max_faces=300 --set epochs=1   # extra settings for every run (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data}
XDATA=${XDATA:-../shared/xdata}
REPORTS=${REPORTS:-reports/finetune}
EXTRA=("$@")
mkdir -p runs runs/adjusted "$REPORTS"

declare -A CONFIG=([finetune_oversample]=finetune_balanced [finetune_oversample_aligned]=finetune_balanced_aligned)
declare -A BASE=([finetune_oversample]=ferplus_cnn [finetune_oversample_aligned]=ferplus_cnn_aligned)
declare -A FACES=([finetune_oversample]="$DATA" [finetune_oversample_aligned]="$DATA/aligned")
adjusted=()
for name in finetune_oversample finetune_oversample_aligned; do
    if [ -f "runs/$name/summary.json" ]; then
        echo "$name: done earlier"
    else
        echo "$name: training (log runs/$name.log)"
        "$PY" -m ferlib.train --config "configs/${CONFIG[$name]}.toml" --set "data_dir=${FACES[$name]}" \
            "${EXTRA[@]}" --resume --no-progress > "runs/$name.log" 2>&1 \
            || { echo "$name failed: see runs/$name.log"; tail -3 "runs/$name.log"; exit 1; }
    fi
    out="runs/adjusted/${name}_interpolated.safetensors"
    "$PY" -m ferlib.adjust --weights "runs/$name/best.safetensors" --interpolate-from "models/${BASE[$name]}.safetensors" \
        --data "${FACES[$name]}" --max-accuracy-drop 0.01 --out "$out" \
        --json "$REPORTS/${name}_interpolated_valid_sweep.json" | tail -1
    "$PY" -m ferlib.evaluate --weights "$out" --data "${FACES[$name]}" --split test --no-progress \
        --json "$REPORTS/${name}_interpolated_test.json" | sed -n 4p
    "$PY" -m ferlib.evaluate --weights "$out" --data "${FACES[$name]}" --split test --no-progress --tta \
        --json "$REPORTS/${name}_interpolated_test_tta.json" | sed -n 4p
    adjusted+=("$out")
done
if [ -d "$XDATA" ]; then
    "$PY" benchmarks/cross_dataset.py --data-dir "$XDATA" --weights "${adjusted[@]}" --paths direct --no-progress \
        --json "$REPORTS/balanced_cross_dataset.json"
else
    echo "no $XDATA: the faces from outside FER are not scored"
fi
