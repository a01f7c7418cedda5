#!/usr/bin/env bash
# One command from a fresh clone: create .venv, install the pinned requirements and ferlib, then run the main job
# (generate the FER+ training set in data/ from fer2013.csv and fer2013new.csv, evaluate the shipped model on its
# test split (and its ONNX twins), write the face-aligned copy in data/aligned and evaluate the face-aligned model on
# it; reports go to reports/).
#
#   ./run.sh                     inputs from fer_generator/fer2013.csv(.gz) and fer_generator/fer2013new.csv
#   FER2013=path/fer2013.csv.gz FERPLUS=path/fer2013new.csv ./run.sh
#   ./run.sh --setup-only        only create / update .venv
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$candidate
      break
    fi
  done
fi
if [ -z "$python" ]; then
  echo "error: Python 3.11 is needed (python3.11 not found); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv with $python"
  "$python" -m venv .venv
fi
echo "== installing requirements.txt and ferlib into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt -e .
.venv/bin/python -m pip install --quiet --no-deps -r requirements-no-deps.txt

if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi

fer=${FER2013:-fer_generator/fer2013.csv}
if [ -z "${FER2013:-}" ] && [ ! -f "$fer" ] && [ -f "$fer.gz" ]; then
  fer=$fer.gz
fi
ferplus=${FERPLUS:-fer_generator/fer2013new.csv}
for input in "$fer" "$ferplus"; do
  if [ ! -f "$input" ]; then
    cat >&2 <<MSG
error: $input not found.
  fer2013.csv (or .csv.gz): Kaggle, "Challenges in Representation Learning: Facial Expression Recognition Challenge"
  fer2013new.csv:           Microsoft's FERPlus repository (github.com/microsoft/FERPlus)
Put them in fer_generator/, or point at them: FER2013=path/fer2013.csv FERPLUS=path/fer2013new.csv ./run.sh
MSG
    exit 1
  fi
done

echo "== generating the FER+ dataset in data/"
.venv/bin/python fer_generator/generate_training_data.py -d data -fer "$fer" -ferplus "$ferplus"

model=models/ferplus_cnn.safetensors
if [ -f "$model" ]; then
  echo "== evaluating the shipped model $model on data/FER2013Test"
  .venv/bin/python -m ferlib.evaluate --weights "$model" --data data --split test \
    --json reports/ferplus_cnn_test.json --plots reports/ferplus_cnn --history reports/ferplus_cnn_training.json
  echo "== evaluating its ONNX twins in ONNX Runtime (fp32, int8)"
  .venv/bin/python -m ferlib.evaluate --weights models/ferplus_cnn.onnx --data data --split test \
    --json reports/ferplus_cnn_onnx_test.json --no-progress
  .venv/bin/python -m ferlib.evaluate --weights models/ferplus_cnn.int8.onnx --data data --split test \
    --json reports/ferplus_cnn_int8_test.json --no-progress
fi

# the other FER-framed shipped models, each with its int8 twin
declare -A ROLE=([ferplus_cnn_fast]="the fast model (half width)"
                 [ferplus_cnn_balanced]="the re-balanced model (the rare emotions)"
                 [ferplus_cnn_robust]="the default model (EmotionRecognizer and the app)")
for name in ferplus_cnn_fast ferplus_cnn_balanced ferplus_cnn_robust; do
  [ -f "models/$name.safetensors" ] || continue
  echo "== evaluating ${ROLE[$name]} models/$name.safetensors and its int8 twin on data/FER2013Test"
  .venv/bin/python -m ferlib.evaluate --weights "models/$name.safetensors" --data data --split test \
    --json "reports/${name}_test.json" --no-progress
  .venv/bin/python -m ferlib.evaluate --weights "models/$name.int8.onnx" --data data --split test \
    --json "reports/${name}_int8_test.json" --no-progress
done

echo "== writing the face-aligned dataset in data/aligned (MediaPipe detect, align, crop)"
.venv/bin/python -m ferlib.aligned_data --data data --out data/aligned --detector mediapipe --no-progress
cp data/aligned/alignment.json reports/ferplus_cnn_aligned_alignment.json

model=models/ferplus_cnn_aligned.safetensors
if [ -f "$model" ]; then
  echo "== evaluating the face-aligned model $model on data/aligned/FER2013Test"
  .venv/bin/python -m ferlib.evaluate --weights "$model" --data data/aligned --split test \
    --json reports/ferplus_cnn_aligned_test.json --plots reports/ferplus_cnn_aligned \
    --history reports/ferplus_cnn_aligned_training.json
  .venv/bin/python -m ferlib.evaluate --weights models/ferplus_cnn_aligned.int8.onnx --data data/aligned --split test \
    --json reports/ferplus_cnn_aligned_int8_test.json --no-progress
fi
model=models/ferplus_cnn_robust.int8.onnx
if [ -f "$model" ]; then
  echo "== evaluating the default model's int8 twin $model on data/aligned/FER2013Test (the app's crops)"
  .venv/bin/python -m ferlib.evaluate --weights "$model" --data data/aligned --split test \
    --json reports/ferplus_cnn_robust_int8_test_app_crops.json --no-progress
fi
