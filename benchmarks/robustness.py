"""FER+ test faces damaged as photos and videos damage them: each model's accuracy per kind and level of damage.

    python benchmarks/robustness.py [--data data] [--weights extra.safetensors ...] [--no-shipped]
        [--json reports/robustness/robustness.json] [--figure reports/robustness/robustness.png]

The majority protocol's 3,152 test faces (labels from the split's label.csv) get one damage at a time at fixed
levels (``ferlib.measure.DAMAGES``: lower resolution, JPEG, gamma, blur, noise; the noise seeded, so every model
sees the same faces) and are fed directly through ``EmotionRecognizer.classify_faces``. The shipped models
(``ferplus_cnn``, ``seed_cnn``; the face-aligned one reads aligned crops, not these) and any ``--weights`` file are
measured. The kinds of damage are the ones ``augmentation = "real"`` trains with, so a model trained with it is
measured partly on what it saw; ``benchmarks/cross_dataset.py`` measures faces no model trained on. Prints a
Markdown table (accuracy, and the change from clean).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ferlib.data import label_targets, load_split
from ferlib.files import atomic_path, check_writable, write_json
from ferlib.measure import DAMAGES, benchmark_models, damage_accuracies
from ferlib.plots import grouped_bars_figure

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["ferplus_cnn", "seed_cnn"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data", help="the folder with FER2013Test")
    parser.add_argument("--weights", type=Path, nargs="+", default=[], help="extra model files (.safetensors or .onnx)")
    parser.add_argument("--no-shipped", action="store_true", help="measure only the --weights models")
    parser.add_argument("--json", type=Path, help="write every figure here (atomically)")
    parser.add_argument("--figure", type=Path, help="write a bar chart of accuracy per damage and model here (PNG)")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def column(kind: str, level: str) -> str:
    return f"{kind} {level}".strip()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        models = benchmark_models(SHIPPED, args.weights, args.no_shipped)
        for output in (args.json, args.figure):
            if output is not None:
                check_writable(output)
        split = load_split(args.data, "test")
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    keep, targets = label_targets(split.votes, "majority")
    images, labels = split.images[keep], targets.argmax(axis=1)
    results = damage_accuracies(models, images, labels, progress=not args.no_progress)

    print(f"{len(images)} FER+ test faces (majority protocol) from {args.data}, fed directly "
          f"(EmotionRecognizer.classify_faces); {os.cpu_count()}-CPU machine\n")
    print("| damage | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for kind, level in DAMAGES:
        cells = []
        for name in models:
            accuracy, clean = results[name][kind, level], results[name]["clean", ""]
            cells.append(f"{accuracy:.2%}" + ("" if kind == "clean" else f" ({100 * (accuracy - clean):+.1f})"))
        print(f"| {column(kind, level)} | " + " | ".join(cells) + " |")
    if args.json:
        write_json(args.json, {
            "data": os.path.relpath(args.data.resolve(), REPO), "protocol": "majority", "faces": int(len(images)),
            "fed": "EmotionRecognizer.classify_faces", "damages": {column(*key): what for key, what in DAMAGES.items()},
            "models": {name: os.path.relpath(path.resolve(), REPO) for name, path in models.items()},
            "accuracy": {name: {column(*key): value for key, value in scores.items()} for name, scores in results.items()},
        })
    if args.figure:
        series = {name: {f"{kind}\n{level}".strip(): value for (kind, level), value in scores.items()}
                  for name, scores in results.items()}
        figure = grouped_bars_figure(series, "FER+ test faces under damage (majority protocol)", "accuracy",
                                     decimals=0, figsize=(14, 4.5))
        axis = figure.axes[0]
        axis.set_ylim(0, 112)  # room above the bars for the legend
        axis.legend(fontsize=8, ncol=len(series), loc="upper center")
        with atomic_path(args.figure) as temporary:
            figure.savefig(temporary, dpi=110, format="png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
