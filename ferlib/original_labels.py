"""FER2013's own labels (one annotator's, in fer2013.csv) as extra training targets beside the FER+ votes.

FER+ re-labelled FER2013 with ten crowd votes a face, and the crowd calls many faces neutral that FER2013's one
annotator gave an emotion: on the training split, half the faces first labelled sadness and a third of those
labelled anger or fear have a neutral FER+ majority. Posed lab faces (CK+) and news photos read that way too: a
slight frown is anger there. This module writes those first labels, one-hot in FER+'s class order, as a file of
targets that training mixes into the votes exactly as it mixes a teacher's answers (``teacher_targets`` with
``distill_weight``, see ``ferlib.distill``)::

    python -m ferlib.original_labels --fer fer2013.csv.gz --ferplus fer2013new.csv \
        --out runs/teacher_targets/fer2013_original.npz

A face whose first label is missing or invalid gets its own training target (``crossentropy`` mode's vote shares), so
mixing leaves it as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.data import CLASS_NAMES, NUM_CLASSES, label_targets
from ferlib.distill import save_teacher_targets
from ferlib.files import check_writable
from ferlib.generate import FER2013_CLASS_NAMES, InputFormatError, read_ferplus_rows

# FER2013's class index -> FER+'s (FER2013 has no contempt)
FER2013_TO_FERPLUS = np.array([CLASS_NAMES.index(name) for name in FER2013_CLASS_NAMES])


def original_label_targets(fer_labels: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """(N, 8) targets: each face's FER2013 label one-hot in FER+'s order, or where it has none (-1) the target the
    headline's ``crossentropy`` label mode trains it on (uniform for a face that mode drops, which is not trained)."""
    targets = np.zeros((len(fer_labels), NUM_CLASSES), np.float32)
    labelled = fer_labels >= 0
    targets[np.flatnonzero(labelled), FER2013_TO_FERPLUS[fer_labels[labelled]]] = 1.0
    if not labelled.all():
        kept, own = label_targets(votes[~labelled], "crossentropy")  # own: a row per kept face
        unlabelled = np.full((len(kept), NUM_CLASSES), 1.0 / NUM_CLASSES, np.float32)
        unlabelled[kept] = own
        targets[~labelled] = unlabelled
    return targets


def neutral_shares(fer_labels: np.ndarray, votes: np.ndarray) -> pd.DataFrame:
    """For each FER2013 class: how many of its faces the FER+ majority protocol keeps (``ferlib.data.label_targets``,
    the protocol every test figure uses), and the share of those whose majority is neutral."""
    kept, targets = label_targets(votes, "majority")
    majority = np.full(len(votes), -1)
    majority[kept] = targets.argmax(axis=1)
    rows = []
    for index, name in enumerate(FER2013_CLASS_NAMES):
        faces = kept & (fer_labels == index)
        rows.append({"FER2013 label": name, "faces": int(faces.sum()),
                     "FER+ majority neutral": float((majority[faces] == CLASS_NAMES.index("neutral")).mean())
                     if faces.any() else float("nan")})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferlib.original_labels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fer", type=Path, required=True, help="fer2013.csv (or .csv.gz): its emotion column")
    parser.add_argument("--ferplus", type=Path, required=True, help="fer2013new.csv: the image names and votes")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="train")
    parser.add_argument("--out", type=Path, required=True, help="the .npz file of targets to write")
    args = parser.parse_args(argv)
    try:
        for flag, path in (("--fer", args.fer), ("--ferplus", args.ferplus)):
            if args.out.resolve() == path.resolve():
                raise ValueError(f"--out {args.out}: the same file as {flag}; write the targets elsewhere")
        check_writable(args.out)
        rows = read_ferplus_rows(args.fer, args.ferplus, log=lambda line: print(line, file=sys.stderr))
        in_split = rows.splits == args.split
        fer_labels, votes = rows.fer_labels[in_split], rows.votes[in_split]
        targets = original_label_targets(fer_labels, votes)
        source = {"what": "FER2013's original labels, one-hot in FER+'s class order", "fer": str(args.fer),
                  "ferplus": str(args.ferplus), "split": args.split,
                  "faces_without_label": int((fer_labels < 0).sum())}
        save_teacher_targets(args.out, rows.names[in_split], targets, source)
    except (InputFormatError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(neutral_shares(fer_labels, votes).to_string(index=False, float_format=lambda x: f"{x:.1%}"))
    print(f"{args.out}: FER2013's labels of the {in_split.sum()} faces of the {args.split} split "
          f"({source['faces_without_label']} without one, given their own training target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
