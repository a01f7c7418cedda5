"""Which models make the best ensemble: every subset of the members scored on FER+ validation, the best one chosen
there, and its test score reported beside every single member's.

    python benchmarks/ensembles.py [--data data] [--aligned data/aligned] [--members M[@aligned] ...] [--tta]
        [--engine torch] [--json reports/ensembles.json]

A member is a model (a shipped model's name or a .safetensors / .onnx file) reading FER's own crops (``--data``) or,
with ``@aligned``, the face-aligned crops of the same faces (``--aligned``, written by ``./run.sh``). By default the
shipped FER+ models, the two that were trained on aligned crops also reading those. An ensemble answers the mean of
its members' probabilities (``ferlib.engine.EnsembleEngine``, ``EmotionRecognizer([...])``); each member reads each
face once (twice with ``--tta``, flip test-time augmentation), and every subset is scored from those answers.
Majority protocol on both splits (the test split's 3,152 faces). The subset with the best validation accuracy is
chosen (a tie goes to the one with fewer members); the test column is only read, never used to choose. Prints
Markdown tables; ``--json`` writes every subset's scores.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import numpy as np

from ferlib.data import CLASS_NAMES, load_split
from ferlib.evaluate import classification_metrics, ensemble_probabilities, protocol_faces
from ferlib.files import check_writable, write_json
from ferlib.video import as_engine

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MEMBERS = ["ferplus_cnn", "ferplus_cnn_aligned@aligned", "ferplus_cnn_balanced", "ferplus_cnn_robust",
                   "ferplus_cnn_robust@aligned", "ferplus_cnn_fast", "seed_cnn"]
SPLITS = ("valid", "test")
GOAL = 0.89  # issue 14: the teachers' ensemble, with flip TTA, on the majority protocol
SHOWN = 10  # the best subsets printed


def parse_member(spec: str) -> tuple[str, str]:
    """``"model"`` or ``"model@aligned"`` as (model, crops), crops being "fer" or "aligned"; ValueError otherwise."""
    model, _, crops = spec.partition("@")
    crops = crops or "fer"
    if not model or crops not in ("fer", "aligned"):
        raise ValueError(f"--members {spec!r}: expected MODEL or MODEL@aligned (a shipped model's name or a model "
                         "file, reading FER's crops or the aligned ones)")
    return model, crops


def member_answers(members: list[str], data: Path, aligned: Path, engine: str, tta: bool,
                   progress: bool) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Each member's probabilities (N, 8) on each split's majority-protocol faces, and those faces' classes."""
    folders = {"fer": data, "aligned": aligned}
    engines = {spec: as_engine(model, engine, threads=None) for spec, (model, _) in
               ((spec, parse_member(spec)) for spec in members)}  # every file checked before the long part
    answers: dict[str, dict[str, np.ndarray]] = {spec: {} for spec in members}
    classes = {}
    for split in SPLITS:
        reference = load_split(data, split)
        keep, classes[split] = protocol_faces(reference, "majority")
        for spec in members:
            folder = folders[parse_member(spec)[1]]
            answers[spec][split] = ensemble_probabilities([engines[spec]], [folder], reference, data, keep,
                                                          tta=tta, progress=progress)
    return answers, classes


def subset_scores(answers: dict[str, dict[str, np.ndarray]], classes: dict[str, np.ndarray],
                  max_members: int | None = None) -> list[dict]:
    """Every non-empty subset of the members (up to ``max_members``) as an equal-weight ensemble: its accuracy and
    macro F1 on each split, best validation accuracy first (fewer members first among equals)."""
    members = list(answers)
    rows = []
    for size in range(1, min(len(members), max_members or len(members)) + 1):
        for subset in itertools.combinations(members, size):
            row = {"members": list(subset)}
            for split in SPLITS:
                mean = np.mean([answers[member][split] for member in subset], axis=0)
                metrics = classification_metrics(classes[split], mean.argmax(axis=1))
                row[split] = {"accuracy": metrics["accuracy"], "f1_macro": metrics["f1_macro"],
                              "recall": {name: metrics["per_class"][name]["recall"] for name in CLASS_NAMES}}
            rows.append(row)
    return sorted(rows, key=lambda row: (-row["valid"]["accuracy"], len(row["members"])))


def member_label(spec: str) -> str:
    """A member as the tables show it: a file by its name without folder and suffix (``reports/x/e50.safetensors``
    -> ``e50``), a shipped model by its name; ``@aligned`` kept."""
    model, crops = parse_member(spec)
    name = Path(model).stem if Path(model).suffix in (".safetensors", ".onnx") else model
    return name if crops == "fer" else f"{name}@{crops}"


def members_label(members: list[str]) -> str:
    return " + ".join(member_label(spec) for spec in members)


def table_row(row: dict) -> str:
    return (f"| {members_label(row['members'])} | {len(row['members'])} | {row['valid']['accuracy']:.2%} | "
            f"{row['test']['accuracy']:.2%} | {row['test']['f1_macro']:.2%} |")


def print_tables(rows: list[dict], classes: dict[str, np.ndarray], tta: bool) -> dict:
    header = "| members | n | validation | **test** | test macro F1 |\n| --- | ---: | ---: | ---: | ---: |"
    faces = ", ".join(f"{split} {len(classes[split]):,}" for split in SPLITS)
    print(f"Majority protocol ({faces} faces){', flip TTA' if tta else ''}.\n\n## Each member alone\n\n{header}")
    for row in sorted((row for row in rows if len(row["members"]) == 1), key=lambda row: -row["valid"]["accuracy"]):
        print(table_row(row))
    print(f"\n## The {min(SHOWN, len(rows))} best subsets on validation\n\n{header}")
    for row in rows[:SHOWN]:
        print(table_row(row))
    chosen = rows[0]
    best_test = max(rows, key=lambda row: row["test"]["accuracy"])
    print(f"\nChosen on validation: {members_label(chosen['members'])}: test {chosen['test']['accuracy']:.2%} "
          f"(goal {GOAL:.0%}: {'met' if chosen['test']['accuracy'] >= GOAL else 'not met'}), macro F1 "
          f"{chosen['test']['f1_macro']:.2%}; recall " + ", ".join(
              f"{name} {recall:.0%}" for name, recall in chosen["test"]["recall"].items()))
    print(f"For scale, not a result (chosen on the test split): the best test score of any subset is "
          f"{best_test['test']['accuracy']:.2%} ({members_label(best_test['members'])}).")
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data", help="the generated FER+ folders")
    parser.add_argument("--aligned", type=Path, help="the same faces aligned (default: DATA/aligned)")
    parser.add_argument("--members", nargs="+", default=DEFAULT_MEMBERS, help="MODEL or MODEL@aligned, 1-12")
    parser.add_argument("--engine", default="torch", choices=("auto", "onnx", "torch"),
                        help="the members' engine (torch: the float32 networks themselves)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation for every member")
    parser.add_argument("--max-members", type=int, help="largest subset scored (default: all)")
    parser.add_argument("--json", type=Path, help="write every subset's scores here (atomically)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    aligned = args.aligned or args.data / "aligned"
    try:
        if not 1 <= len(args.members) <= 12 or len(set(args.members)) != len(args.members):
            raise ValueError(f"--members: expected 1 to 12 different members, got {len(args.members)}")
        if args.max_members is not None and args.max_members < 1:
            raise ValueError(f"--max-members {args.max_members}: expected 1 or more")
        for spec in args.members:
            parse_member(spec)
        if args.json is not None:
            check_writable(args.json)
        answers, classes = member_answers(args.members, args.data, aligned, args.engine, args.tta,
                                          not args.no_progress)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows = subset_scores(answers, classes, args.max_members)
    chosen = print_tables(rows, classes, args.tta)
    if args.json is not None:
        write_json(args.json, {"protocol": "majority", "faces": {split: int(len(classes[split])) for split in SPLITS},
                               "engine": args.engine, "flip_tta": args.tta, "members": args.members,
                               "cpus": os.cpu_count(), "chosen_on_validation": chosen, "goal": GOAL,
                               "subsets": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
