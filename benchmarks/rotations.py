"""Pictures lying sideways or upside down: what ``EmotionRecognizer.detect_emotions`` reads with and without
``try_rotations=True``.

    python benchmarks/rotations.py [--data data] [--split test] [--faces 150] [--media ../shared/media]
        [--json reports/rotations.json]

FER+ faces (majority protocol, drawn with a fixed seed) are prepared as a user's tight crop is
(``ferlib.measure.tight_crop_frame``: enlarged to 192 px with a replicated border), then turned a quarter, a half and
three quarters clockwise, as a scan or a frame with no EXIF orientation may lie. For each turn: how often the
default recognizer finds a face, how often the largest face's emotion is the majority vote's (a face not found
counts as wrong), and with ``try_rotations`` how often the turn it chose undoes the one applied. The sample photos
(``multi_face.jpg``, ``BWPictureHuman.jpg``) are turned the same ways: faces found, and how many of them get the
emotion the upright photo gets. Prints Markdown tables; ``--json`` writes every figure.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # YuNet's spinning threads: one is faster on a shared 2-core CPU

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ferlib.data import CLASS_NAMES, label_targets, load_split  # noqa: E402
from ferlib.files import check_writable, write_json  # noqa: E402
from ferlib.measure import tight_crop_frame  # noqa: E402
from ferlib.recognizer import EmotionRecognizer  # noqa: E402
from ferlib.video import DEFAULT_MODEL_NAME, ROTATIONS, turned_clockwise  # noqa: E402

SEED = 0
PHOTOS = ("multi_face.jpg", "BWPictureHuman.jpg")


def read_faces(recognizer: EmotionRecognizer, frames: list[np.ndarray], labels: np.ndarray, progress: bool) -> dict:
    rows = {}
    for degrees in ROTATIONS:
        found = {False: 0, True: 0}
        right = {False: 0, True: 0}
        undone, seconds = 0, {False: 0.0, True: 0.0}
        for frame, label in tqdm(list(zip(frames, labels)), desc=f"faces turned {degrees}", disable=not progress):
            image = turned_clockwise(frame, degrees)
            for tried in (False, True):
                start = time.perf_counter()
                faces = recognizer.detect_emotions(image, try_rotations=tried)
                seconds[tried] += time.perf_counter() - start
                if faces:
                    found[tried] += 1
                    right[tried] += faces[0].label == CLASS_NAMES[label]
                    undone += tried and faces[0].rotation == (360 - degrees) % 360
        n = len(frames)
        rows[degrees] = {"faces": n, "found": found[False] / n, "accuracy": right[False] / n,
                         "found_tried": found[True] / n, "accuracy_tried": right[True] / n, "turn_undone": undone / n,
                         "ms": 1000 * seconds[False] / n, "ms_tried": 1000 * seconds[True] / n}
    return rows


def read_photos(recognizer: EmotionRecognizer, media: Path) -> dict:
    rows = {}
    for name in PHOTOS:
        path = media / name
        if not path.is_file():
            continue
        image = cv2.imread(str(path))
        upright = recognizer.detect_emotions(image)
        for degrees in ROTATIONS:
            for tried in (False, True):
                faces = recognizer.detect_emotions(turned_clockwise(image, degrees), try_rotations=tried)
                # a face agrees when the upright photo's face whose centre, turned the same way, lies in its box
                # has its label
                agree = 0
                for face in upright:
                    mask = np.zeros(image.shape[:2], np.uint8)
                    x, y, w, h = face.box
                    mask[y + h // 2, x + w // 2] = 1
                    cy, cx = np.argwhere(turned_clockwise(mask, degrees))[0]
                    agree += any(f.label == face.label and f.box[0] <= cx < f.box[0] + f.box[2]
                                 and f.box[1] <= cy < f.box[1] + f.box[3] for f in faces)
                rows[f"{name} turned {degrees}" + (" (try_rotations)" if tried else "")] = {
                    "upright_faces": len(upright), "found": len(faces), "same_emotion": agree}
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data", help="the generated FER+ folders")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--faces", type=int, default=150, help="FER+ faces to draw (majority protocol)")
    parser.add_argument("--media", type=Path, default=Path("../shared/media"), help="folder of the sample photos")
    parser.add_argument("--json", type=Path, help="write every figure here (atomically)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.faces < 1:
            raise ValueError(f"--faces {args.faces}: expected 1 or more")
        if args.json:
            check_writable(args.json)
        split = load_split(args.data, args.split)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    kept, targets = label_targets(split.votes, "majority")
    chosen = np.random.default_rng(SEED).choice(len(targets), min(args.faces, len(targets)), replace=False)
    frames = [tight_crop_frame(image) for image in split.images[np.flatnonzero(kept)[chosen]]]
    recognizer = EmotionRecognizer()
    faces = read_faces(recognizer, frames, targets[chosen].argmax(axis=1), not args.no_progress)
    photos = read_photos(recognizer, args.media)

    print(f"\nFER+ {args.split} faces ({len(frames)}, majority protocol) as tight crops, turned clockwise; "
          f"{DEFAULT_MODEL_NAME}, {recognizer.engine.name}, default detector:\n")
    print("| turned | found | accuracy | found, try_rotations | accuracy, try_rotations | turn undone | ms a photo "
          "(plain / try_rotations) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for degrees, row in faces.items():
        print(f"| {degrees} | {row['found']:.1%} | {row['accuracy']:.1%} | {row['found_tried']:.1%} | "
              f"{row['accuracy_tried']:.1%} | {row['turn_undone']:.1%} | {row['ms']:.0f} / {row['ms_tried']:.0f} |")
    if photos:
        print("\n| photo | faces found (upright) | same emotion as upright |")
        print("| --- | ---: | ---: |")
        for name, row in photos.items():
            print(f"| {name} | {row['found']} ({row['upright_faces']}) | {row['same_emotion']} |")
    if args.json:
        report = {"data": args.data, "split": args.split, "protocol": "majority", "seed": SEED,
                  "model": DEFAULT_MODEL_NAME, "engine": recognizer.engine.name,
                  "machine": platform.processor() or platform.machine(),
                  "faces": {str(k): v for k, v in faces.items()}, "photos": photos}
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
