"""Made-up FER2013 / FER+ files in the real CSV formats: the one writer of ``fer2013.csv`` + ``fer2013new.csv``
pairs, for the tests' fixtures, the notebooks' smoke mode and the generator benchmark.

Two kinds of rows: ``cartoon_rows`` draws faces whose mouth and brows depend on their class, under noise, with
votes that mostly agree on that class, so that a model can learn something from a few dozen of them;
``noise_rows`` gives random pixels and votes (what the generator's tests and benchmark need: every pixel value,
any vote pattern).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import CLASS_NAMES, VOTE_COLUMNS
from ferlib.files import atomic_path
from ferlib.generate import FER2013_CLASS_NAMES, FER_COLUMNS, FERPLUS_COLUMNS, USAGE_TO_SPLIT

USAGES = {split: usage for usage, split in USAGE_TO_SPLIT.items()}  # "train" -> "Training", ...
# FER+'s rough vote shares over VOTE_COLUMNS, for random vote rows
VOTE_SHARES = (0.3, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03)


@dataclass
class SyntheticRow:
    """One row of both files: fer2013.csv's (emotion, pixels, Usage) and fer2013new.csv's (Usage, name, votes)."""

    usage: str  # "Training", "PublicTest" or "PrivateTest"
    name: str  # "" for FER+'s unnamed rows
    pixels: np.ndarray  # uint8 (48, 48)
    votes: list[int]  # 10 counts, VOTE_COLUMNS order
    emotion: int = 0  # fer2013.csv's own label, an index into FER2013_CLASS_NAMES


def write_csv_pair(folder: Path | str, rows: list[SyntheticRow], gz: bool = False) -> tuple[Path, Path]:
    """Write ``rows`` as ``fer2013.csv`` (``.csv.gz`` with ``gz``) and ``fer2013new.csv`` in ``folder``; return the
    two paths. Each file is written whole or not at all (``ferlib.files.atomic_path``)."""
    folder = Path(folder)
    fer_lines = [",".join(FER_COLUMNS)] + [
        f"{row.emotion},{' '.join(map(str, np.asarray(row.pixels).ravel()))},{row.usage}" for row in rows]
    ferplus_lines = [",".join(FERPLUS_COLUMNS)] + [
        f"{row.usage},{row.name},{','.join(map(str, row.votes))}" for row in rows]
    fer_path = folder / ("fer2013.csv.gz" if gz else "fer2013.csv")
    ferplus_path = folder / "fer2013new.csv"
    for path, lines in ((fer_path, fer_lines), (ferplus_path, ferplus_lines)):
        text = "\n".join(lines) + "\n"
        with atomic_path(path) as temporary:
            if path.suffix == ".gz":
                with gzip.open(temporary, "wt") as handle:
                    handle.write(text)
            else:
                temporary.write_text(text)
    return fer_path, ferplus_path


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


def cartoon_rows(faces_per_class: dict[str, int], seed: int = 0) -> list[SyntheticRow]:
    """``faces_per_class[split]`` cartoon faces of each of the 8 classes per split, named fer0000000.png on; 6 to 9
    of a face's 10 votes go to its class, the rest at random. FER2013's own label is the same class (neutral for
    contempt, which FER2013 lacks)."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, per_class in faces_per_class.items():
        for label in range(len(CLASS_NAMES)):
            for _ in range(per_class):
                votes = np.zeros(len(VOTE_COLUMNS), int)
                votes[label] += int(rng.integers(6, 10))
                votes[rng.integers(0, len(CLASS_NAMES), 10 - votes.sum())] += 1
                emotion = FER2013_CLASS_NAMES.index(CLASS_NAMES[label] if CLASS_NAMES[label] in
                                                    FER2013_CLASS_NAMES else "neutral")
                rows.append(SyntheticRow(USAGES[split], f"fer{len(rows):07d}.png", cartoon_face(label, rng),
                                         votes.tolist(), emotion))
    return rows


def noise_rows(usages: list[str], seed: int = 0) -> list[SyntheticRow]:
    """One row per entry of ``usages``, named fer0000000.png on: random pixels (each face's first four are 0, 255,
    7 and 100, so that the extremes and 1-3 digit values always occur), 10 votes drawn with VOTE_SHARES, and a
    random FER2013 label."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, usage in enumerate(usages):
        votes = rng.multinomial(10, VOTE_SHARES).tolist()
        pixels = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
        pixels[0, :4] = [0, 255, 7, 100]
        rows.append(SyntheticRow(usage, f"fer{i:07d}.png", pixels, votes, emotion=int(rng.integers(0, 7))))
    return rows


def write_synthetic_csvs(folder: Path | str, faces_per_class: dict[str, int] | None = None,
                         seed: int = 0) -> tuple[Path, Path]:
    """Write ``fer2013.csv`` and ``fer2013new.csv`` of cartoon faces (``cartoon_rows``), ``faces_per_class`` of
    each of the 8 classes per split (default 8 train, 2 valid, 2 test); return their paths."""
    return write_csv_pair(folder, cartoon_rows(faces_per_class or {"train": 8, "valid": 2, "test": 2}, seed))
