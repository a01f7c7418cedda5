#!/usr/bin/env bash
# Fine-tuning for real inputs, end to end: the shipped ferplus_cnn fine-tuned 6 epochs with augmentation = "real"
# (configs/finetune_real.toml), again with half as much damage (damage_share 0.5), with looser framing
# (augmentation = "framed": "strong" plus a zoom-out of half the faces) and, as the control, with the headline's
# "strong" augmentation; each exported (ONNX fp32 + int8, as the shipped models are) and scored on the
# FER+ test split, on FER+ test faces under damage (benchmarks/robustness.py, the shipped models beside them) and on
# the faces from outside FER (benchmarks/cross_dataset.py, fed directly, the shipped ferplus_cnn beside them).
# A finished run (runs/NAME/summary.json) is kept and an interrupted one resumed.
#   bash configs/finetune.sh
#   bash configs/finetune.sh --set max_faces=300 --set epochs=1   # extra settings for every run (a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA:-data}
XDATA=${XDATA:-../shared/xdata}
REPORTS=${REPORTS:-reports/finetune}
EXTRA=("$@")
mkdir -p runs "$REPORTS" reports/robustness

declare -A SETTINGS=([finetune_real]="" [finetune_real_half]="damage_share=0.5" [finetune_strong]="augmentation=strong"
                     [finetune_framed]="augmentation=framed")
RUNS=(finetune_real finetune_real_half finetune_strong finetune_framed)
for name in "${RUNS[@]}"; do
    settings=()
    for setting in ${SETTINGS[$name]}; do settings+=(--set "$setting"); done
    if [ -f "runs/$name/summary.json" ]; then
        echo "$name: done earlier"
    else
        echo "$name: training (log runs/$name.log)"
        "$PY" -m ferlib.train --config configs/finetune_real.toml --run-name "$name" --set "data_dir=$DATA" \
            "${settings[@]}" "${EXTRA[@]}" --resume --no-progress > "runs/$name.log" 2>&1 \
            || { echo "$name failed: see runs/$name.log"; tail -3 "runs/$name.log"; exit 1; }
    fi
    "$PY" -m ferlib.export --weights "runs/$name/best.safetensors" --data "$DATA"
    "$PY" -m ferlib.evaluate --weights "runs/$name/best.safetensors" --data "$DATA" --split test --no-progress \
        --json "$REPORTS/${name}_test.json" | tail -4
    cp "runs/$name/summary.json" "$REPORTS/${name}_training.json"
done

models=(runs/finetune_strong/best.safetensors runs/finetune_real_half/best.safetensors runs/finetune_real/best.safetensors
        runs/finetune_framed/best.safetensors)
"$PY" benchmarks/robustness.py --data "$DATA" --weights "${models[@]}" --no-progress \
    --json reports/robustness/robustness.json --figure reports/robustness/robustness.png
if [ -f "$XDATA/labels.csv" ]; then
    "$PY" benchmarks/cross_dataset.py --data-dir "$XDATA" --paths direct --no-shipped --no-progress \
        --weights models/ferplus_cnn.safetensors "${models[@]}" \
        --json "$REPORTS/cross_dataset.json" --figure "$REPORTS/cross_dataset.png"
else
    echo "no $XDATA/labels.csv: the faces from outside FER are not measured"
fi
