"""The models on labelled faces from outside FER: accuracy and recall per class on CK+48 and the muxspace subset.

    python benchmarks/cross_dataset.py [--data-dir ../shared/xdata] [--weights new_model.safetensors ...]
        [--ensemble MODEL MODEL ...] [--paths direct detect] [--tta] [--json reports/cross_dataset/cross_dataset.json]
        [--figure bars.png]
    python benchmarks/cross_dataset.py --from-json reports/cross_dataset/cross_dataset.json [--figure bars.png]

The shipped models named in SHIPPED (models/<name>.safetensors, with the default engine) and any ``--weights`` file
are fed each face two ways: directly (``EmotionRecognizer.classify_faces``: the crop resized to 48x48 gray) and
through the detect-and-align path (``EmotionRecognizer.detect_emotions`` on the crop enlarged to at least 192
pixels a side and given a replicated border of a quarter of that side, as FER's own crops are prepared; the
largest face is the answer, a crop where no face is found counts as wrong). ``--tta`` runs every model with flip
test-time augmentation (``EmotionRecognizer(tta=True)``). Each ``--ensemble`` (shipped models' names or model
files) is measured as one model, the mean of its members' probabilities (``EmotionRecognizer([...])``). Detection and alignment do not depend on the model, so each
crop is detected once and its aligned face given to every model.

Sets: CK+48 per image and per sequence (the class most of a sequence's three frames get; a tie goes to the tied
class with the highest summed probability), with and without contempt; muxspace without and with contempt. Without
contempt drops the contempt images; a model may still answer contempt (or neutral, which CK+48 lacks), and that is
wrong. Macro recall is the mean recall over the classes present in the set. `fer`'s figures are quoted from
../shared/xdata/README.md, not measured here. These sets are for evaluation only: nothing is tuned on them.
Prints Markdown tables; ``--json`` writes every figure (and the confusion matrices). ``--from-json`` prints the
tables of a report written before, and draws its figure, without measuring anything.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

# YuNet's OpenMP threads wait for work by spinning: on this 2-core machine shared with another job, one thread
# detects 3-5 times faster than two. Set before yuface loads; it changes no result.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from ferlib.data import CLASS_NAMES  # noqa: E402
from ferlib.faces import DETECTOR_NAMES  # noqa: E402
from ferlib.files import atomic_path, check_writable, write_json  # noqa: E402
from ferlib.measure import (CROSS_GOALS, CROSS_SETS, FER_QUOTED, benchmark_models, classify_directly,  # noqa: E402
                            cross_set_scores, detect_and_classify, read_xdata_images, read_xdata_labels)
from ferlib.models import SHIPPED_MODELS  # noqa: E402
from ferlib.plots import cross_dataset_figure  # noqa: E402
from ferlib.recognizer import EmotionRecognizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "xdata"
SHIPPED = ["ferplus_cnn", "ferplus_cnn_aligned", "seed_cnn", "ferplus_cnn_balanced", "ferplus_cnn_robust"]
PATHS = ("direct", "detect")
PATH_TITLES = {"direct": "direct (classify_faces)", "detect": "detect + align (detect_emotions)"}
SETS = {chosen.key: chosen for chosen in CROSS_SETS}


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-core {name} CPU, no GPU used"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help="the xdata folder (with labels.csv)")
    parser.add_argument("--weights", type=Path, nargs="+", default=[],
                        help="extra model files (.safetensors or .onnx) measured beside the shipped ones")
    parser.add_argument("--ensemble", nargs="+", action="append", default=[], metavar="MODEL",
                        help="shipped models' names or model files measured as one ensemble (may be repeated)")
    parser.add_argument("--no-shipped", action="store_true", help="measure only the --weights and --ensemble models")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="how faces are fed")
    parser.add_argument("--detector", default="auto", choices=("auto",) + DETECTOR_NAMES,
                        help="the detect path's detector (EmotionRecognizer's)")
    parser.add_argument("--json", type=Path, help="write every figure here (atomically)")
    parser.add_argument("--figure", type=Path, help="write a bar chart of accuracy per model and set here (PNG)")
    parser.add_argument("--tta", action="store_true",
                        help="every model with flip test-time augmentation (EmotionRecognizer(tta=True))")
    parser.add_argument("--from-json", type=Path, metavar="REPORT",
                        help="print the tables of this report (written by --json) and draw --figure; no measuring")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def check_inputs(args: argparse.Namespace):
    """The labels table, the models (name -> file) and their engines (name -> loaded engine), or ValueError /
    OSError with one line saying what is wrong."""
    table = read_xdata_labels(args.data_dir)
    models = {} if args.no_shipped and not args.weights else benchmark_models(SHIPPED, args.weights, args.no_shipped)
    for members in args.ensemble:
        named = benchmark_models([name for name in members if name in SHIPPED_MODELS],
                                 [Path(name) for name in members if name not in SHIPPED_MODELS])
        models[" + ".join(named)] = list(named.values())
    if not models:
        raise ValueError("--no-shipped: give at least one model with --weights or --ensemble")
    if args.tta:
        models = {f"{name}, flip TTA": path for name, path in models.items()}
    for output in (args.json, args.figure):
        if output is not None:
            check_writable(output)
    # loaded before the long run, so that a file that is not a model fails at once, in one line
    engines = {name: EmotionRecognizer(path, tta=args.tta).engine for name, path in models.items()}
    return table, models, engines


def measure(args, table, images, engines: dict) -> tuple[list[dict], dict[str, float]]:
    """Every model (name -> engine) through every path on every set: rows of (model, path, set, scores), and the
    detect path's found rate per dataset."""
    progress = not args.no_progress
    by_path = {}
    if "direct" in args.paths:
        by_path["direct"] = {name: classify_directly(engine, images, progress=progress)
                             for name, engine in engines.items()}
    found_rate = {}
    if "detect" in args.paths:
        by_path["detect"], found = detect_and_classify(engines, images, args.detector, progress)
        found_rate = {dataset: float(found[(table["dataset"] == dataset).to_numpy()].mean())
                      for dataset in table["dataset"].unique()}
    rows = []
    for path, probabilities in by_path.items():
        for name, model_probabilities in probabilities.items():
            for key, scores in cross_set_scores(table, model_probabilities).items():
                rows.append({"model": name, "path": path, "set": key, **scores})
    return rows, found_rate


def cell(scores: dict | None) -> str:
    return "" if scores is None else f"{scores['accuracy']:.1%} / {scores['macro_recall']:.1%}"


def print_tables(rows: list[dict], found_rate: dict[str, float]) -> None:
    present = [key for key in SETS if any(row["set"] == key for row in rows)]
    lookup = {(row["model"], row["path"], row["set"]): row for row in rows}
    units = {row["set"]: row["items"] for row in rows}
    print("## Accuracy / macro recall\n")
    print("| model | input | " + " | ".join(f"{SETS[key].title} ({units[key]})" for key in present) + " |")
    print("|---|---|" + "---|" * len(present))
    for model, path in dict.fromkeys((row["model"], row["path"]) for row in rows):
        print(f"| {model} | {PATH_TITLES[path]} | "
              + " | ".join(cell(lookup.get((model, path, key))) for key in present) + " |")
    print("| fer (quoted from xdata/README.md, not measured here; accuracy only) | direct | "
          + " | ".join(f"{FER_QUOTED[key]:.1%}" if key in FER_QUOTED else "" for key in present) + " |")
    if found_rate:
        print("\nDetect path, crops with a face found (the same for every model): "
              + ", ".join(f"{dataset} {rate:.1%}" for dataset, rate in found_rate.items())
              + "; a crop without one counts as wrong.")
    print("\nGoals (issue 14, through classify_faces): "
          + "; ".join(f"{SETS[key].title} >= {goal:.1%}" for key, goal in CROSS_GOALS.items()))
    for model in dict.fromkeys(row["model"] for row in rows):
        verdicts = [f"{SETS[key].title} {lookup[model, 'direct', key]['accuracy']:.1%} "
                    f"({'met' if lookup[model, 'direct', key]['accuracy'] >= goal else 'not met'})"
                    for key, goal in CROSS_GOALS.items() if (model, "direct", key) in lookup]
        if verdicts:
            print(f"- {model}: " + "; ".join(verdicts))
    # recall of a class does not depend on which other classes are in the set, so these three cover all six
    for key in ("ckplus48", "ckplus48_sequences", "muxspace"):
        if key in present:
            print_recall_table(key, [row for row in rows if row["set"] == key])


def print_recall_table(key: str, rows: list[dict]) -> None:
    classes = list(rows[0]["recall"])
    support = rows[0]["support"]
    print(f"\n## Recall per class: {SETS[key].title}\n")
    print("| model | input | " + " | ".join(f"{name} ({support[name]})" for name in classes) + " |")
    print("|---|---|" + "---|" * len(classes))
    for row in rows:
        print(f"| {row['model']} | {row['path']} | "
              + " | ".join(f"{row['recall'][name]:.1%}" for name in classes) + " |")


def bar_figure(rows: list[dict], path: Path) -> None:
    """Per model and input path, a bar per set; fer's quoted figures as a group of their own."""
    figure = cross_dataset_figure(rows, FER_QUOTED, {key: chosen.title for key, chosen in SETS.items()})
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")


def shown_path(path: Path) -> str:
    """A path relative to the repository when it is inside it (so the report does not name this checkout)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def report(args, table, models: dict[str, Path], engines: dict, rows: list[dict],
           found_rate: dict[str, float]) -> dict:
    return {
        "data_dir": os.path.relpath(args.data_dir.resolve(), REPO), "machine": machine(), "detector": args.detector,
        "flip_tta": args.tta,
        "models": {name: {"file": [shown_path(file) for file in path] if isinstance(path, list) else shown_path(path),
                          "engine": engines[name].name} for name, path in models.items()},
        "images": {dataset: int((table["dataset"] == dataset).sum()) for dataset in table["dataset"].unique()},
        "detect_preparation": "crop enlarged (cubic) to >= 192 px on its shorter side, replicated border of 1/4 of "
                              "that side; largest face of detect_emotions; no face counts as wrong",
        "sequence_tie_break": "highest summed probability over the sequence's frames among the tied classes",
        "macro_recall": "mean recall over the classes present in the set",
        "confusion_columns": list(CLASS_NAMES) + ["no face"], "detect_found_rate": found_rate,
        "goals_classify_faces": CROSS_GOALS, "fer_quoted_not_measured": FER_QUOTED, "results": rows,
    }


def redraw(args) -> int:
    """The tables and figure of a report written before (``--from-json``)."""
    import json

    try:
        if args.figure is not None:
            check_writable(args.figure)
        report = json.loads(args.from_json.read_text())
        rows, found_rate = report["results"], report["detect_found_rate"]
        if not isinstance(rows, list) or not all(isinstance(row, dict) and row.get("set") in SETS for row in rows):
            raise ValueError("its results are not this benchmark's rows")
    except (OSError, ValueError, KeyError, TypeError) as error:
        what = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        print(f"error: --from-json {args.from_json}: expected a report written by --json ({what})", file=sys.stderr)
        return 2
    print_tables(rows, found_rate)
    if args.figure is not None:
        bar_figure(rows, args.figure)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        return redraw(args)
    try:
        table, models, engines = check_inputs(args)
        images = read_xdata_images(args.data_dir, table["file"], not args.no_progress)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows, found_rate = measure(args, table, images, engines)
    print_tables(rows, found_rate)
    if args.json is not None:
        write_json(args.json, report(args, table, models, engines, rows, found_rate))
    if args.figure is not None:
        bar_figure(rows, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
