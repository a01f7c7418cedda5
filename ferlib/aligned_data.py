"""The face-aligned FER+ training set: every FER+ image passed through the live app's detect-align-crop path
(``ferlib.faces``), written as FER2013Train/Valid/Test folders with the same label.csv votes, so a model trained on
it sees faces framed exactly as ``video_application.py`` will crop them.

    python -m ferlib.aligned_data --data data --out data/aligned --detector mediapipe

A face the detector misses keeps its whole original image; how many were missed per split goes to
``<out>/alignment.json`` and the console.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ferlib.data import SPLIT_FOLDERS, load_split
from ferlib.faces import FER_FRAMINGS, align_face, build_detector, detect_in_fer_image
from ferlib.files import write_json
from ferlib.generate import write_dataset

ALIGNMENT_FILE = "alignment.json"


def align_fer_images(images: np.ndarray, detector, framing, progress: bool = True,
                     desc: str = "aligning") -> tuple[np.ndarray, np.ndarray]:
    """Each 48x48 image aligned by the detector's eyes (or box); the original where no face is found.
    Returns the aligned images and a boolean mask of the faces that were found."""
    aligned = images.copy()
    found = np.zeros(len(images), bool)
    for i, image in enumerate(tqdm(images, desc=desc, unit="img", disable=not progress)):
        face = detect_in_fer_image(detector, image)
        if face is not None:
            aligned[i] = align_face(image, face, framing)
            found[i] = True
    return aligned, found


def write_aligned_dataset(data_dir: Path | str, out_dir: Path | str, detector_name: str = "mediapipe",
                          progress: bool = True) -> dict:
    """Align every split of the FER+ dataset in ``data_dir`` and write it to ``out_dir``; return the summary."""
    detector = build_detector(detector_name)
    framing = FER_FRAMINGS[detector.name]
    started = time.perf_counter()
    splits, summary = {}, {"detector": detector.name, "framing": framing.__dict__, "splits": {}}
    try:
        for split, folder in SPLIT_FOLDERS.items():
            data = load_split(data_dir, split)
            aligned, found = align_fer_images(data.images, detector, framing, progress, desc=f"aligning {split}")
            splits[folder] = (data.image_names, aligned, data.votes)
            summary["splits"][folder] = {"images": len(found), "face_found": int(found.sum()),
                                         "fallback_whole_image": int((~found).sum()),
                                         "found_fraction": round(float(found.mean()), 4)}
    finally:
        detector.close()
    write_dataset(out_dir, splits, progress=progress)
    write_json(Path(out_dir) / ALIGNMENT_FILE, summary)
    return {**summary, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the face-aligned FER+ dataset (detect, align, crop each image).")
    parser.add_argument("--data", default="data", help="folder with the generated FER2013Train/Valid/Test")
    parser.add_argument("--out", default="data/aligned", help="folder to write the aligned splits into")
    parser.add_argument("--detector", default="mediapipe", help="mediapipe, yunet or haar")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        summary = write_aligned_dataset(args.data, args.out, args.detector, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for folder, counts in summary["splits"].items():
        print(f"{folder}: {counts['face_found']}/{counts['images']} faces found "
              f"({counts['found_fraction']:.1%}); {counts['fallback_whole_image']} kept whole")
    print(f"wrote {args.out} with the {summary['detector']} detector in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
