"""Tiny made-up FER2013 / FER+ files in the real CSV formats, for smoke runs (the notebooks' smoke mode, quick
experiments without the real data). Each face is a drawn cartoon whose mouth and brows depend on its class, under
noise, so that a model can learn something from a few dozen of them; the votes mostly agree on that class.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ferlib.data import CLASS_NAMES, VOTE_COLUMNS
from ferlib.generate import FER2013_CLASS_NAMES

USAGES = {"train": "Training", "valid": "PublicTest", "test": "PrivateTest"}


def cartoon_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 uint8 face: head, eyes, and a mouth and brows shaped by the class index (0-7)."""
    image = np.full((48, 48), rng.integers(20, 80), np.uint8)
    centre = (24 + int(rng.integers(-2, 3)), 25 + int(rng.integers(-2, 3)))
    cv2.ellipse(image, centre, (17, 21), 0, 0, 360, int(rng.integers(150, 220)), -1)
    for dx in (-7, 7):
        cv2.circle(image, (centre[0] + dx, centre[1] - 5), 2, 30, -1)
        brow_tilt = (label - 3.5) * dx / 7
        cv2.line(image, (centre[0] + dx - 3, centre[1] - 10 + int(brow_tilt)),
                 (centre[0] + dx + 3, centre[1] - 10 - int(brow_tilt)), 40, 1)
    mouth_open = 1 + 2 * (label % 3)
    start, end = (0, 180) if label % 2 else (180, 360)
    cv2.ellipse(image, (centre[0], centre[1] + 9), (7, mouth_open), 0, start, end, 30, -1)
    noise = rng.normal(0, 12, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_synthetic_csvs(folder: Path | str, faces_per_class: dict[str, int] | None = None,
                         seed: int = 0) -> tuple[Path, Path]:
    """Write ``fer2013.csv`` and ``fer2013new.csv`` with ``faces_per_class`` faces of each of the 8 classes per split
    (default 8 train, 2 valid, 2 test); return their paths."""
    faces_per_class = faces_per_class or {"train": 8, "valid": 2, "test": 2}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fer_rows, ferplus_rows = [], []
    for split, per_class in faces_per_class.items():
        for label in range(len(CLASS_NAMES)):
            for _ in range(per_class):
                votes = np.zeros(len(VOTE_COLUMNS), int)
                votes[label] += int(rng.integers(6, 10))
                votes[rng.integers(0, len(CLASS_NAMES), 10 - votes.sum())] += 1
                name = f"fer{len(fer_rows):07d}.png"
                fer_label = FER2013_CLASS_NAMES.index(CLASS_NAMES[label]) if CLASS_NAMES[label] in \
                    FER2013_CLASS_NAMES else FER2013_CLASS_NAMES.index("neutral")
                pixels = " ".join(map(str, cartoon_face(label, rng).ravel()))
                fer_rows.append({"emotion": fer_label, "pixels": pixels, "Usage": USAGES[split]})
                ferplus_rows.append({"Usage": USAGES[split], "Image name": name,
                                     **dict(zip(VOTE_COLUMNS, votes.tolist()))})
    fer_path, ferplus_path = folder / "fer2013.csv", folder / "fer2013new.csv"
    pd.DataFrame(fer_rows).to_csv(fer_path, index=False)
    pd.DataFrame(ferplus_rows).to_csv(ferplus_path, index=False)
    return fer_path, ferplus_path
