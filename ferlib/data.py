"""The FER+ dataset: class names, generated split folders, label modes and the torch Dataset.

A generated split (``FER2013Train|Valid|Test``: PNGs + ``label.csv``) is read into memory once as uint8 images
and the 10 raw vote counts. Label modes turn votes into training targets with the semantics of the FER+ paper's
reference code (Barsoum et al., ICMI 2016): ``majority``, ``probability``, ``crossentropy`` and
``multi_target``; ``no_unknown`` is the seed project's filter (no unknown / not-a-face vote, label = most-voted
emotion). Votes can come from the split's own ``label.csv`` or from another folder of ``label.csv`` files
(Microsoft's older per-folder files, which the seed used).
"""

from __future__ import annotations

import csv
import functools
import os
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

CLASS_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
NUM_CLASSES = len(CLASS_NAMES)
VOTE_COLUMNS = CLASS_NAMES + ("unknown", "NF")
SPLIT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
LABEL_FILE = "label.csv"
LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target", "no_unknown")
UNKNOWN = VOTE_COLUMNS.index("unknown")
MULTI_TARGET_EPSILON = 0.001  # the reference code keeps targets off exact 0/1 in multi_target mode
MAX_VOTES = 1000  # FER+ has 10 votes per face; a count far above that is a damaged file, not a larger crowd
# a whole number written as digits (at most 9, so that it converts exactly), optionally with a ".0" as some tools write
WHOLE_NUMBER = r"\s*\d{1,9}(?:\.0*)?\s*"
IMAGE_EXPECTED = "expected a 48x48 8-bit grayscale PNG as the generator writes"
# how PIL's modes read in a message; anything but "L" is rejected, not converted (a 16-bit face shrunk to 8 bits by
# PIL's convert("L") comes out all white, and a colour one would silently differ from the FER images)
MODE_NAMES = {"1": "1-bit", "L": "8-bit grayscale", "LA": "grayscale + alpha", "P": "palette", "RGB": "colour (RGB)",
              "RGBA": "colour (RGBA)", "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale",
              "I": "32-bit integer", "F": "32-bit float"}


@dataclass(frozen=True)
class FerPlusSplit:
    """One generated split held in memory: image names, 48x48 uint8 images and the 10 vote counts."""

    name: str  # "train", "valid" or "test"
    image_names: np.ndarray  # str (N,)
    images: np.ndarray  # uint8 (N, 48, 48)
    votes: np.ndarray  # int64 (N, 10), columns VOTE_COLUMNS
    folder: Path | None = None  # where it was read from, for messages
    label_file: Path | None = None  # where the votes came from

    def __len__(self) -> int:
        return len(self.image_names)


def parse_votes(path: Path | str, columns: list[pd.Series], lines: np.ndarray) -> np.ndarray:
    """Turn vote texts into (N, 10) int64 counts: one Series of strings per VOTE_COLUMNS entry, ``lines[i]`` the
    file line of row i. A vote that is not a whole number from 0 to MAX_VOTES raises a ValueError naming the file,
    the (first) line, the column and the value. The one check for label.csv and fer2013new.csv alike.
    """
    lines = np.asarray(lines)
    votes = np.empty((len(lines), len(VOTE_COLUMNS)), dtype=np.int64)
    bad = np.zeros(votes.shape, dtype=bool)
    for j, texts in enumerate(columns):
        # a missing field (a short row) is NaN, not a string: it fails the pattern like any other bad value
        whole = texts.str.fullmatch(WHOLE_NUMBER).fillna(False).to_numpy(dtype=bool)
        votes[:, j] = texts.where(whole, "-1").to_numpy(dtype=object).astype(np.float64).astype(np.int64)
        bad[:, j] = ~whole | (votes[:, j] > MAX_VOTES)
    if bad.any():
        row, j = (int(i) for i in np.argwhere(bad)[0])
        value = columns[j].iat[row]
        shown = repr(value) if isinstance(value, str) else "missing"
        raise ValueError(
            f"{path}: line {lines[row]}: column {VOTE_COLUMNS[j]} is {shown}; "
            f"expected a whole number of votes from 0 to {MAX_VOTES}"
        )
    return votes


def read_label_rows(path: Path | str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a FER+ ``label.csv`` (no header: name, face box, 10 votes) into (names, votes, file lines).

    Every problem is a ValueError naming the file and the line: a row without 12 columns, an empty or path-like
    image name, a name given twice, a vote that is not a whole number from 0 to MAX_VOTES (``parse_votes``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    layout = "image name, face box, then votes for " + ", ".join(VOTE_COLUMNS)
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            start = 1  # the line a row starts on (a quoted field may run over several)
            for row in reader:
                if row:  # blank lines carry nothing, as pandas skips them
                    rows.append(row)
                    lines.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file ({error}); expected a label.csv: {layout}") from None
    except csv.Error as error:
        raise ValueError(f"{path}: line {start}: {error}; expected a label.csv: {layout}") from None
    if not rows:
        raise ValueError(f"{path}: empty label file; expected one row per image: name, face box, "
                         f"{len(VOTE_COLUMNS)} votes")
    first_line: dict[str, int] = {}
    for row, line in zip(rows, lines):
        if len(row) != 2 + len(VOTE_COLUMNS):
            raise ValueError(f"{path}: line {line}: {len(row)} columns; expected {2 + len(VOTE_COLUMNS)} ({layout})")
        name = row[0]
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"{path}: line {line}: image name is {name!r}; expected a file name in the split folder")
        if name in first_line:
            # one face counted twice would weigh double in training and in every accuracy figure
            raise ValueError(f"{path}: lines {first_line[name]} and {line} both name {name}; expected one row per image")
        first_line[name] = line
    texts = [pd.Series([row[2 + j] for row in rows], dtype=object) for j in range(len(VOTE_COLUMNS))]
    votes = parse_votes(path, texts, np.array(lines))
    return np.array([row[0] for row in rows], dtype=str), votes, np.array(lines)


def read_label_csv(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Read a FER+ ``label.csv`` (no header: name, face box, 10 votes) into (names, votes); see read_label_rows."""
    names, votes, _ = read_label_rows(path)
    return names, votes


def read_face_image(path: Path, named_at: str = "") -> np.ndarray:
    """One split image as a (48, 48) uint8 array. A missing file is a FileNotFoundError; a folder, an unreadable or
    truncated file, or anything but a 48x48 8-bit grayscale PNG a ValueError naming the file (``named_at`` says
    which label.csv line names it)."""
    where = f" ({named_at} names it)" if named_at else ""
    pixels, kind = None, None
    try:
        with Image.open(path) as image:
            kind = (image.format, image.mode, image.size)
            if kind == ("PNG", "L", (48, 48)):
                image.load()  # decodes now, so that a truncated file fails here, with its name
                pixels = np.asarray(image)
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder{where}; {IMAGE_EXPECTED}") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found{where}; {IMAGE_EXPECTED}") from None
    # PIL reports damaged files as OSError (UnidentifiedImageError, "truncated"), SyntaxError ("broken PNG file"),
    # zlib.error or ValueError depending on where the damage is
    except (OSError, SyntaxError, ValueError, zlib.error, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error}){where}; {IMAGE_EXPECTED}") from None
    if pixels is None:
        file_format, mode, (width, height) = kind
        raise ValueError(
            f"{path}: a {width}x{height} {MODE_NAMES.get(mode, mode)} {file_format} image{where}; {IMAGE_EXPECTED} "
            "(16-bit, colour and other kinds are rejected, not converted)"
        )
    return pixels


def load_split(data_dir: Path | str, split: str, labels: Path | str | None = None) -> FerPlusSplit:
    """Load ``data_dir/FER2013<Split>`` into memory.

    ``labels`` picks the vote source: ``None`` uses the split's own label.csv (written from fer2013new.csv by
    the generator); a folder path uses ``<labels>/FER2013<Split>/label.csv`` instead, matched by image name
    (for example Microsoft's older files in ``../shared/data/ferplus_repo_labels``).
    """
    if not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"data_dir {data_dir!r}: expected the folder holding FER2013Train, FER2013Valid and "
                         "FER2013Test (a str or Path)")
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLIT_FOLDERS)}")
    folder = Path(data_dir) / SPLIT_FOLDERS[split]
    if not (folder / LABEL_FILE).is_file():
        raise FileNotFoundError(
            f"{folder}: no generated FER+ split here; create it with "
            "python fer_generator/generate_training_data.py -d DATA_DIR -fer fer2013.csv -ferplus fer2013new.csv"
        )
    names, votes, lines = read_label_rows(folder / LABEL_FILE)
    images = np.empty((len(names), 48, 48), dtype=np.uint8)
    for i, (name, line) in enumerate(zip(names, lines)):
        images[i] = read_face_image(folder / name, f"{LABEL_FILE} line {line}")  # the label.csv beside it
    label_file = folder / LABEL_FILE
    if labels is not None:
        label_file = Path(labels) / SPLIT_FOLDERS[split] / LABEL_FILE
        votes = _votes_by_name(label_file, names)
    return FerPlusSplit(split, names, images, votes, folder, label_file)


def same_faces(reference: FerPlusSplit, folder: Path | str, labels: Path | str | None = None) -> FerPlusSplit:
    """The split ``reference`` is, read from another generated folder (the same faces cropped another way); a
    ValueError where its images or votes are not the reference's, row for row."""
    other = load_split(folder, reference.name, labels)
    check_same_faces(reference, other)
    return other


def check_same_faces(reference: FerPlusSplit, other: FerPlusSplit) -> None:
    """ValueError, naming the first row that differs, unless ``other`` holds ``reference``'s faces (image names and
    votes) row for row."""
    where = f"{other.folder}: the faces of {reference.folder} cropped another way were expected"
    if len(other) != len(reference):
        raise ValueError(f"{where}, but it has {len(other)} faces against {len(reference)}")
    different = np.flatnonzero((other.image_names != reference.image_names) | (other.votes != reference.votes).any(1))
    if len(different):
        row = different[0]
        raise ValueError(f"{where}, but row {row} is {other.image_names[row]} with votes {other.votes[row].tolist()}"
                         f" against {reference.image_names[row]} with {reference.votes[row].tolist()}")


def _votes_by_name(label_path: Path, names: np.ndarray) -> np.ndarray:
    other_names, other_votes = read_label_csv(label_path)  # its names are unique: read_label_csv checks that
    position = pd.Index(other_names).get_indexer(names)
    if (position < 0).any() or len(other_names) != len(names):
        missing = names[position < 0][:5].tolist()
        raise ValueError(
            f"{label_path}: holds {len(other_names)} names, the images are {len(names)}; "
            f"images without votes there: {missing}"
        )
    return other_votes[position]


@functools.lru_cache(maxsize=None)
def ferplus_label_distribution(votes: tuple[int, ...], mode: str) -> tuple[float, ...] | None:
    """The 8-class target the FER+ reference code gives one face's 10 votes, or None if the face is dropped.

    Single votes are discarded as outliers first. ``majority``: one emotion with more than half of the remaining
    votes. ``probability`` / ``crossentropy``: the top-voted emotions (at most 3, until 75% of the votes are
    covered; more than half must be), as a distribution. ``multi_target``: every emotion with at least 30% of the
    votes. A face whose result is unknown or not-a-face (NF), or that fails these tests, is dropped.
    """
    counts = [0.0 if v < 1.0 + sys.float_info.epsilon else float(v) for v in votes]
    total = sum(counts)
    target = [0.0] * len(counts)
    dropped = None
    if mode == "majority":
        top = max(counts)
        if top <= 0.5 * total:
            return dropped
        target[counts.index(top)] = top
    elif mode in ("probability", "crossentropy"):
        covered, taken, valid = 0.0, 0, True
        while covered < 0.75 * total and taken < 3 and valid:
            top = max(counts)
            for i, count in enumerate(counts):
                if count != top:
                    continue
                target[i] = top
                counts[i] = 0.0
                covered += top
                taken += 1
                if i >= UNKNOWN:
                    # unknown / NF tie with the top emotion: stop here, and drop them if an emotion came first
                    valid = False
                    if sum(target) > top:
                        target[i] = 0.0
                        taken -= 1
                    break
        if sum(target) <= 0.5 * total or taken > 3:
            return dropped
    elif mode == "multi_target":
        target = [count if count >= 0.3 * total else 0.0 for count in counts]
        if sum(target) <= 0.5 * total:
            return dropped
    else:
        raise ValueError(f"label mode {mode!r}: expected one of {', '.join(LABEL_MODES)}")
    if max(range(len(target)), key=target.__getitem__) >= UNKNOWN:
        return dropped
    emotions = target[:UNKNOWN]
    return tuple(value / sum(emotions) for value in emotions)


def label_targets(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply a label mode to (N, 10) votes: return (kept mask (N,), float32 targets (kept, 8) summing to 1)."""
    votes = np.asarray(votes, dtype=np.int64)
    if mode == "no_unknown":
        keep = (votes[:, UNKNOWN:] == 0).all(axis=1)
        targets = np.eye(NUM_CLASSES, dtype=np.float32)[votes[keep, :UNKNOWN].argmax(axis=1)]
        return keep, targets
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode {mode!r}: expected one of {', '.join(LABEL_MODES)}")
    results = [ferplus_label_distribution(tuple(row), mode) for row in votes.tolist()]
    keep = np.array([r is not None for r in results], dtype=bool)
    targets = np.array([r for r in results if r is not None], dtype=np.float32).reshape(-1, NUM_CLASSES)
    return keep, targets


class FerPlusDataset(torch.utils.data.Dataset):
    """The faces a label mode keeps from a split, as (image, target) pairs.

    Images are (1, 48, 48) uint8 tensors passed through ``transform`` (see ``ferlib.transforms``) and then
    repeated to 3 channels when ``channels=3``. The target follows the reference code's training targets:
    a class index for ``majority`` and ``no_unknown``, a class index drawn from the vote distribution for
    ``probability``, the distribution itself for ``crossentropy``, and a (nearly) 0/1 vector for
    ``multi_target``. ``labels`` holds each face's most-voted class for evaluation.

    ``other_crops``: the same split cropped another way (``same_faces``; FER's crops and the face-aligned ones):
    each time a face is drawn, it comes from either at random, so a model learns both framings.
    """

    def __init__(self, split: FerPlusSplit, label_mode: str = "majority", transform=None, channels: int = 1,
                 other_crops: FerPlusSplit | None = None):
        if not isinstance(split, FerPlusSplit):
            raise ValueError(f"split {split!r}: expected a FerPlusSplit, as load_split(data_dir, 'train') gives "
                             "(load_dataset takes the folder itself)")
        if channels not in (1, 3):
            raise ValueError(f"channels={channels}: expected 1 (grayscale) or 3 (grayscale repeated as RGB)")
        keep, targets = label_targets(split.votes, label_mode)
        if not keep.any():
            # caught here, not as an "empty input array" deep inside training or scikit-learn's metrics
            where = split.folder or f"the {split.name} split"
            other_votes = split.label_file is not None and split.label_file.parent != split.folder
            votes_from = f" (votes from {split.label_file})" if other_votes else ""
            raise ValueError(
                f"{where}{votes_from}: label mode {label_mode!r} keeps none of its {len(split)} faces; expected at "
                "least one face whose votes the mode turns into a target (it drops unknown / not-a-face results "
                "and faces without a clear majority)"
            )
        self.label_mode = label_mode
        self.transform = transform
        self.channels = channels
        self.image_names = split.image_names[keep]
        self.images = torch.from_numpy(split.images[keep]).unsqueeze(1)  # (N, 1, 48, 48) uint8
        self.other_images = None
        if other_crops is not None:
            check_same_faces(split, other_crops)
            self.other_images = torch.from_numpy(other_crops.images[keep]).unsqueeze(1)
        self.distributions = torch.from_numpy(targets)
        self.labels = self.distributions.argmax(dim=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        # torch's generator: seeded per loader worker, so a resumed run draws the crops an uninterrupted one would
        if self.other_images is not None and torch.rand(()) < 0.5:
            image = self.other_images[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.channels == 3:
            image = image.expand(3, -1, -1)
        return image, self.training_target(index)

    def training_target(self, index: int) -> torch.Tensor:
        if self.label_mode in ("majority", "no_unknown"):
            return self.labels[index]
        if self.label_mode == "probability":
            return torch.multinomial(self.distributions[index], 1)[0]
        if self.label_mode == "crossentropy":
            return self.distributions[index]
        present = (self.distributions[index] > 0).float()
        return (1 - MULTI_TARGET_EPSILON) * present + MULTI_TARGET_EPSILON

    def class_counts(self) -> np.ndarray:
        """Faces per class (by most-voted class), in CLASS_NAMES order."""
        return np.bincount(self.labels.numpy(), minlength=NUM_CLASSES)


def load_dataset(data_dir: Path | str, split: str, label_mode: str = "majority", transform=None,
                 channels: int = 1, labels: Path | str | None = None) -> FerPlusDataset:
    """Load a generated split and wrap it as a FerPlusDataset in one call."""
    return FerPlusDataset(load_split(data_dir, split, labels), label_mode, transform, channels)
