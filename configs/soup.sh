#!/usr/bin/env bash
# A model soup (issue 14's one network at >= 88%): three fine-tunes of the fourth lease's 50-epoch network
# e50_born_again_d05 (configs/soup_ingredient.toml: 4 epochs at a tenth of the learning rate; seeds, learning rates
# and crops differ), then their weights averaged with their start's, greedily on validation (python -m ferlib.soup),
# and the soup scored on the test split (plain and flip TTA) and on the faces from outside FER. About 30 minutes on
# a 2-core AVX-512 CPU. A finished run (runs/NAME/summary.json) is kept.
#   bash configs/soup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
START=reports/distill/h100_long_2026-11-27/e50_born_again_d05.safetensors
REPORTS=${REPORTS:-reports/distill/soup_2026-11-28}
mkdir -p runs "$REPORTS"
train_ingredient() {  # NAME, then the settings that make it differ from configs/soup_ingredient.toml
    local name=$1 settings=() setting
    shift
    for setting in "$@"; do settings+=(--set "$setting"); done
    if [ -f "runs/$name/summary.json" ]; then
        echo "$name: done earlier"
        return
    fi
    echo "$name: training (log runs/$name.log)"
    "$PY" -m ferlib.train --config configs/soup_ingredient.toml --run-name "$name" "${settings[@]}" --resume \
        --no-progress > "runs/$name.log" 2>&1 || { echo "$name failed: see runs/$name.log"; exit 1; }
}
train_ingredient soup_a seed=1
train_ingredient soup_b seed=2 lr=0.0004
train_ingredient soup_c seed=3 'other_crops="data/aligned"'
"$PY" -m ferlib.soup --weights "$START" runs/soup_a/best.safetensors runs/soup_b/best.safetensors \
    runs/soup_c/best.safetensors --data data --out runs/soup/greedy.safetensors --json "$REPORTS/greedy_soup.json"
"$PY" -m ferlib.evaluate --weights runs/soup/greedy.safetensors --data data --split test --no-progress \
    --json "$REPORTS/greedy_soup_test.json"
"$PY" -m ferlib.evaluate --weights runs/soup/greedy.safetensors --data data --split test --tta --no-progress \
    --json "$REPORTS/greedy_soup_test_tta.json"
