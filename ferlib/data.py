"""The FER+ dataset: class names, generated split folders, label modes and the torch Dataset.

A generated split (``FER2013Train|Valid|Test``: PNGs + ``label.csv``) is read into memory once as uint8 images
and the 10 raw vote counts. Label modes turn votes into training targets with the semantics of the FER+ paper's
reference code (Barsoum et al., ICMI 2016): ``majority``, ``probability``, ``crossentropy`` and
``multi_target``; ``seed`` is the seed project's filter (no unknown / not-a-face vote, label = most-voted
emotion). Votes can come from the split's own ``label.csv`` or from another folder of ``label.csv`` files
(Microsoft's older per-folder files, which the seed used).
"""

from __future__ import annotations

import functools
import sys
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
LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target", "seed")
UNKNOWN = VOTE_COLUMNS.index("unknown")
MULTI_TARGET_EPSILON = 0.001  # the reference code keeps targets off exact 0/1 in multi_target mode


@dataclass(frozen=True)
class FerPlusSplit:
    """One generated split held in memory: image names, 48x48 uint8 images and the 10 vote counts."""

    name: str  # "train", "valid" or "test"
    image_names: np.ndarray  # str (N,)
    images: np.ndarray  # uint8 (N, 48, 48)
    votes: np.ndarray  # int64 (N, 10), columns VOTE_COLUMNS

    def __len__(self) -> int:
        return len(self.image_names)


def read_label_csv(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """Read a FER+ ``label.csv`` (no header: name, face box, 10 votes) into (names, votes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    frame = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    if frame.shape[1] != 2 + len(VOTE_COLUMNS):
        raise ValueError(
            f"{path}: {frame.shape[1]} columns; expected {2 + len(VOTE_COLUMNS)} "
            "(image name, face box, then votes for " + ", ".join(VOTE_COLUMNS) + ")"
        )
    votes = frame.iloc[:, 2:].apply(pd.to_numeric, errors="coerce")
    bad = votes.isna().any(axis=1).to_numpy()
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 1
        raise ValueError(f"{path}: line {line}: votes must be whole numbers, found {frame.iloc[line - 1, 2:].tolist()}")
    return frame.iloc[:, 0].to_numpy(dtype=str), votes.to_numpy(dtype=np.int64)


def load_split(data_dir: Path | str, split: str, labels: Path | str | None = None) -> FerPlusSplit:
    """Load ``data_dir/FER2013<Split>`` into memory.

    ``labels`` picks the vote source: ``None`` uses the split's own label.csv (written from fer2013new.csv by
    the generator); a folder path uses ``<labels>/FER2013<Split>/label.csv`` instead, matched by image name
    (for example Microsoft's older files in ``../shared/data/ferplus_repo_labels``).
    """
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(SPLIT_FOLDERS)}")
    folder = Path(data_dir) / SPLIT_FOLDERS[split]
    if not (folder / LABEL_FILE).is_file():
        raise FileNotFoundError(
            f"{folder}: no generated FER+ split here; create it with "
            "python fer_generator/generate_training_data.py -d DATA_DIR -fer fer2013.csv -ferplus fer2013new.csv"
        )
    names, votes = read_label_csv(folder / LABEL_FILE)
    images = np.empty((len(names), 48, 48), dtype=np.uint8)
    for i, name in enumerate(names):
        with Image.open(folder / name) as image:
            if image.size != (48, 48):
                raise ValueError(f"{folder / name}: image is {image.size[0]}x{image.size[1]}; expected 48x48")
            images[i] = np.asarray(image.convert("L"))
    if labels is not None:
        votes = _votes_by_name(Path(labels) / SPLIT_FOLDERS[split] / LABEL_FILE, names)
    return FerPlusSplit(split, names, images, votes)


def _votes_by_name(label_path: Path, names: np.ndarray) -> np.ndarray:
    other_names, other_votes = read_label_csv(label_path)
    index = pd.Index(other_names)
    if not index.is_unique:
        raise ValueError(f"{label_path}: names {sorted(index[index.duplicated()].unique())[:5]} appear twice")
    position = index.get_indexer(names)
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
    if mode == "seed":
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
    a class index for ``majority`` and ``seed``, a class index drawn from the vote distribution for
    ``probability``, the distribution itself for ``crossentropy``, and a (nearly) 0/1 vector for
    ``multi_target``. ``labels`` holds each face's most-voted class for evaluation.
    """

    def __init__(self, split: FerPlusSplit, label_mode: str = "majority", transform=None, channels: int = 1):
        if channels not in (1, 3):
            raise ValueError(f"channels={channels}: expected 1 (grayscale) or 3 (grayscale repeated as RGB)")
        keep, targets = label_targets(split.votes, label_mode)
        self.split_name = split.name
        self.label_mode = label_mode
        self.transform = transform
        self.channels = channels
        self.image_names = split.image_names[keep]
        self.images = torch.from_numpy(split.images[keep]).unsqueeze(1)  # (N, 1, 48, 48) uint8
        self.votes = torch.from_numpy(split.votes[keep])
        self.distributions = torch.from_numpy(targets)
        self.labels = self.distributions.argmax(dim=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.channels == 3:
            image = image.expand(3, -1, -1)
        return image, self.training_target(index)

    def training_target(self, index: int) -> torch.Tensor:
        if self.label_mode in ("majority", "seed"):
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
