"""Measurements shared by the benchmarks and the notebooks: how well each face detector finds FER+ faces and faces
in video, how often a model names the expression labelled by eye on the sample videos, and how well it reads the
labelled faces from outside FER (../shared/xdata: CK+48 and a muxspace subset), and how well it reads FER+ test faces
damaged as photos and videos damage them (lower resolution, JPEG, exposure, blur, noise).

``benchmarks/face_detectors.py``, ``benchmarks/video_accuracy.py``, ``benchmarks/cross_dataset.py``,
``benchmarks/robustness.py`` and
``notebooks/CNNFaceDetector.ipynb`` print or show these numbers; none measures them itself.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ferlib.data import CLASS_NAMES
from ferlib.faces import (FER_BORDER, FER_FRAMINGS, FER_UPSCALE, build_detector, detect_in_fer_image,
                          measure_framing)

VIDEO_DETECTOR = "mediapipe"  # the live app's detector on video, so every model gets the crops the app makes


def fer_detection(name: str, images: np.ndarray) -> dict:
    """One detector on FER+ faces (each enlarged with a border, as the aligned training set is made): the share
    found and found with eyes, milliseconds per face, and the framing measured from them (``framing`` None when it
    found no face; ``matches`` whether it equals ``FER_FRAMINGS``)."""
    detector = build_detector(name)
    started = time.perf_counter()
    try:
        faces = [detect_in_fer_image(detector, image) for image in images]
    finally:
        detector.close()
    seconds = time.perf_counter() - started
    row = {"detector": name, "faces": len(images), "found": 0.0, "with_eyes": 0.0,
           "ms_per_face": 1000 * seconds / max(len(images), 1), "framing": None, "matches": False}
    try:
        framing, stats = measure_framing(faces)
    except ValueError:  # no face found at all (smoke mode's cartoons)
        return row
    return {**row, "found": stats["found"] / len(images), "with_eyes": stats["with_eyes"] / len(images),
            "framing": framing, "matches": framing == FER_FRAMINGS.get(name)}


def video_detection(name: str, frames: list[np.ndarray], min_score: float) -> dict:
    """One detector on every frame of a video: frames with a face, faces, faces scoring at least ``min_score`` (the
    live app's threshold), and the median milliseconds per frame (after one warm-up call)."""
    detector = build_detector(name)
    times, found, faces, kept = [], 0, 0, 0
    try:
        detector(frames[0])  # warm-up
        for frame in frames:
            tick = time.perf_counter()
            result = detector(frame)
            times.append(time.perf_counter() - tick)
            found += bool(result)
            faces += len(result)
            kept += sum(face.score >= min_score for face in result)
    finally:
        detector.close()
    return {"detector": name, "frames": len(frames), "with_face": found, "faces": faces, "kept": kept,
            "ms_per_frame": 1000 * statistics.median(times)}


def labelled_frames(table: pd.DataFrame, video: str) -> dict[int, str]:
    """Frame index -> expression, from a table of labelled ranges (video, first_frame, last_frame, label), as in
    ``benchmarks/sample_video_labels.csv``."""
    labels = {}
    for row in table[table["video"] == video].itertuples():
        labels.update(dict.fromkeys(range(row.first_frame, row.last_frame + 1), row.label))
    return labels


def largest_face_probabilities(model, video: Path | str, smoothing: float,
                               detector: str = VIDEO_DETECTOR) -> dict[int, np.ndarray]:
    """Frame index -> the 8 probabilities of the largest face in it (frames without a face are absent), through
    the live pipeline (``EmotionRecognizer.analyze_video``) with this smoothing."""
    from ferlib.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer(model, detector=detector, smoothing=smoothing)
    table = recognizer.analyze_video(video)
    if table.empty:
        return {}
    largest = table.assign(area=table["w"] * table["h"]).sort_values("area").groupby("frame").tail(1)
    return dict(zip(largest["frame"].astype(int).tolist(), largest[list(CLASS_NAMES)].to_numpy(np.float64)))


def video_accuracy(model, video: Path | str, labels: dict[int, str], smoothings=(0.0, 0.6),
                   detector: str = VIDEO_DETECTOR) -> dict:
    """How often ``model`` names the labelled expression, over the labelled frames where a face was found (the
    largest face), with each smoothing; ``mean_true_probability`` and ``happiness`` (frame -> p) for the first."""
    per_smoothing = {s: largest_face_probabilities(model, video, s, detector) for s in smoothings}
    first = per_smoothing[smoothings[0]]
    frames = [i for i in labels if i in first]
    truth = np.array([CLASS_NAMES.index(labels[i]) for i in frames], dtype=int)
    accuracy = {s: float(np.mean([probabilities[i].argmax() == t for i, t in zip(frames, truth)])) if frames
                else float("nan") for s, probabilities in per_smoothing.items()}
    true_probability = [first[i][t] for i, t in zip(frames, truth)]
    return {"labelled": len(labels), "with_face": len(frames), "accuracy": accuracy,
            "mean_true_probability": float(np.mean(true_probability)) if frames else float("nan"),
            "happiness": {i: float(p[CLASS_NAMES.index("happiness")]) for i, p in sorted(first.items())}}


# ------------------------------------------------------------------------------------- faces from outside FER (xdata)
# ``benchmarks/cross_dataset.py`` prints these; ``../shared/xdata/README.md`` describes the two sets. They are for
# evaluation only: nothing here fits, tunes or picks anything on them.

XDATA_COLUMNS = ("dataset", "label", "file", "width", "height", "source_repo", "source_commit", "source_path", "sha1")
XDATA_DATASETS = ("ckplus48", "muxspace")
CKPLUS_FILE = re.compile(r"^(S\d+_\d+)_\d+\.png$")  # S<subject>_<sequence>_<frame>.png
NO_FACE = -1  # the prediction for an image in which the detector found no face: always wrong


@dataclass(frozen=True)
class CrossSet:
    """One evaluation set: a dataset's images (or CK+48's sequences, each the majority of its frames), with or
    without the contempt images."""
    key: str
    title: str
    dataset: str
    per_sequence: bool = False
    contempt: bool = True


CROSS_SETS = (
    CrossSet("ckplus48", "CK+48 images", "ckplus48"),
    CrossSet("ckplus48_no_contempt", "CK+48 images w/o contempt", "ckplus48", contempt=False),
    CrossSet("ckplus48_sequences", "CK+48 sequences", "ckplus48", per_sequence=True),
    CrossSet("ckplus48_sequences_no_contempt", "CK+48 sequences w/o contempt", "ckplus48", True, False),
    CrossSet("muxspace_no_contempt", "muxspace w/o contempt", "muxspace", contempt=False),
    CrossSet("muxspace", "muxspace", "muxspace"),
)
# `fer` (mini-Xception on FER2013, no contempt class), each face fed directly, as ../shared/xdata/README.md quotes
# it: measured by whoever wrote that README, not by ferlib. Its per-sequence figure is filed under "w/o contempt"
# because fer cannot name contempt and the figure sits beside its 68.8% w/o contempt, not its 65.0% with it.
FER_QUOTED = {"ckplus48": 0.650, "ckplus48_no_contempt": 0.688, "ckplus48_sequences_no_contempt": 0.686,
              "muxspace_no_contempt": 0.452}
# issue 14's goals through EmotionRecognizer.classify_faces: 10 points or more above fer's figures
CROSS_GOALS = {"ckplus48_sequences_no_contempt": 0.786, "muxspace_no_contempt": 0.70}


def _xdata_error(where: Path | str, what: str) -> ValueError:
    return ValueError(f"{where}: {what}")


def read_xdata_labels(folder: Path | str) -> pd.DataFrame:
    """``folder``/labels.csv checked and with a ``sequence`` column (``S<subject>_<sequence>`` for CK+48, "" for
    muxspace). ValueError, one line naming the file and row, when the folder, the file, a column, a dataset, a label
    or an image is missing or wrong, or a CK+48 sequence mixes labels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise _xdata_error(folder, "no such folder; expected the labelled faces from outside FER (../shared/xdata)")
    path = folder / "labels.csv"
    if not path.is_file():
        raise _xdata_error(path, "not found; expected a CSV with columns " + ",".join(XDATA_COLUMNS))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise _xdata_error(path, f"not a readable CSV ({str(error).splitlines()[0]})") from None
    missing = [column for column in XDATA_COLUMNS if column not in table.columns]
    if missing:
        raise _xdata_error(path, f"missing column(s) {', '.join(missing)}; expected {','.join(XDATA_COLUMNS)}")
    if table.empty:
        raise _xdata_error(path, "no rows")
    sequences = []
    for row in table.itertuples():
        where = f"{path} row {row.Index + 2}"  # the header is line 1
        if row.dataset not in XDATA_DATASETS:
            raise _xdata_error(where, f"dataset {row.dataset!r}; expected one of {', '.join(XDATA_DATASETS)}")
        if row.label not in CLASS_NAMES:
            raise _xdata_error(where, f"label {row.label!r}; expected one of {', '.join(CLASS_NAMES)}")
        if not (folder / row.file).is_file():
            raise _xdata_error(where, f"image {row.file!r} not found in {folder}")
        match = CKPLUS_FILE.match(Path(row.file).name)
        if row.dataset == "ckplus48" and match is None:
            raise _xdata_error(where, f"CK+48 file name {Path(row.file).name!r}; expected S<subject>_<sequence>_"
                                      "<frame>.png")
        sequences.append(match.group(1) if row.dataset == "ckplus48" else "")
    table["sequence"] = sequences
    ckplus = table[table["dataset"] == "ckplus48"]
    mixed = ckplus.groupby("sequence")["label"].nunique()
    if (mixed > 1).any():
        raise _xdata_error(path, f"CK+48 sequence {mixed[mixed > 1].index[0]} has frames with different labels")
    return table


def read_xdata_images(folder: Path | str, files, progress: bool = True) -> list[np.ndarray]:
    """The images, as stored (gray, BGR or BGRA uint8); ValueError naming the first that cannot be read."""
    from tqdm.auto import tqdm

    images = []
    for file in tqdm(list(files), desc="reading images", unit="image", disable=not progress):
        image = cv2.imread(str(Path(folder) / file), cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype != np.uint8:
            raise _xdata_error(Path(folder) / file, "cannot be read as an 8-bit image")
        images.append(image)
    return images


def tight_crop_frame(crop: np.ndarray, min_side: int = 48 * FER_UPSCALE,
                     border: float = FER_BORDER / (48 * FER_UPSCALE)) -> np.ndarray:
    """A face crop made ready for a detector, as a user would with a tight crop: enlarged (cubic) until its shorter
    side is at least ``min_side`` pixels, then given a replicated border of ``border`` times that side. The defaults
    are the preparation of FER's own 48x48 crops (``ferlib.faces.fer_detection_frame``: 4x, 48-pixel border),
    which they reproduce exactly for a 48x48 crop."""
    scale = min_side / min(crop.shape[:2])
    if scale > 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    pad = int(round(border * min(crop.shape[:2])))
    return cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def model_names(paths: list[Path]) -> dict[str, Path]:
    """Name -> model file for a table's rows: the file's stem, or, where stems repeat (every run's best.safetensors),
    its folder and stem."""
    stems = [Path(path).stem for path in paths]
    named = {(Path(path).stem if stems.count(Path(path).stem) == 1 else f"{Path(path).parent.name}/{Path(path).stem}"):
             Path(path) for path in paths}
    if len(named) < len(paths):
        raise ValueError("two models share a name and folder: " + ", ".join(str(path) for path in paths))
    return named


def benchmark_models(shipped: list[str], extra: list[Path], no_shipped: bool = False) -> dict[str, Path]:
    """Name -> file of the models a benchmark measures: the ``shipped`` ones (unless ``no_shipped``) and the
    ``extra`` files; ValueError naming a file that is not a model file, or when none is left."""
    from ferlib.models import shipped_model

    paths = ([] if no_shipped else [shipped_model(name) for name in shipped]) + list(extra)
    if not paths:
        raise ValueError("--no-shipped: give at least one model with --weights")
    for path in paths:
        if path.suffix not in (".safetensors", ".onnx") or not path.is_file():
            raise ValueError(f"{path}: expected an existing .safetensors or .onnx model file")
    return model_names(paths)


def classify_directly(model, images: list[np.ndarray], batch: int = 256, progress: bool = True) -> np.ndarray:
    """Probabilities (N, 8) for face crops fed directly, through ``EmotionRecognizer(model).classify_faces`` (each
    crop resized to 48x48 gray); ``model`` is a model file (the default engine) or an engine."""
    from tqdm.auto import tqdm

    from ferlib.recognizer import EmotionRecognizer

    recognizer = EmotionRecognizer(model)
    parts = [recognizer.classify_faces(images[start:start + batch])
             for start in tqdm(range(0, len(images), batch), desc="classifying", unit="batch", disable=not progress)]
    return np.concatenate(parts) if parts else np.zeros((0, len(CLASS_NAMES)), np.float32)


class _EveryModel:
    """An engine that runs several engines on the same aligned crops and keeps each one's probabilities, so that one
    detection per image serves every model (detection and alignment do not depend on the model). It answers with
    the first engine's probabilities."""

    def __init__(self, engines: dict):
        self.engines = engines
        self.name = "every model (" + ", ".join(engines) + ")"
        self.outputs: dict[str, np.ndarray] = {}

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.outputs = {name: engine.predict(crops) for name, engine in self.engines.items()}
        return next(iter(self.outputs.values()))


def detect_and_classify(models: dict, images: list[np.ndarray], detector: str = "auto",
                        progress: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The detect-and-align path: each crop made ready by ``tight_crop_frame`` and given to
    ``EmotionRecognizer.detect_emotions``; the largest face it returns is the answer. ``models``: name -> model file
    or engine. Returns name -> probabilities (N, 8), NaN rows where no face was found, and the found mask (N,)."""
    from tqdm.auto import tqdm

    from ferlib.recognizer import EmotionRecognizer
    from ferlib.video import as_engine

    every = _EveryModel({name: as_engine(model) for name, model in models.items()})
    recognizer = EmotionRecognizer(every, detector=detector)
    first = next(iter(models))
    probabilities = {name: np.full((len(images), len(CLASS_NAMES)), np.nan, np.float32) for name in models}
    found = np.zeros(len(images), bool)
    try:
        for i, image in enumerate(tqdm(images, desc="detecting", unit="image", disable=not progress)):
            faces = recognizer.detect_emotions(tight_crop_frame(image))
            if not faces:
                continue
            # which of the crops the engines saw is the largest face: the one whose probabilities it was given
            largest = np.array([faces[0].probabilities[name] for name in CLASS_NAMES], np.float32)
            row = int(np.flatnonzero((every.outputs[first] == largest).all(axis=1))[0])
            for name, output in every.outputs.items():
                probabilities[name][i] = output[row]
            found[i] = True
    finally:
        recognizer.close()
    return probabilities, found


def predicted_classes(probabilities: np.ndarray) -> np.ndarray:
    """The most probable class of each row, NO_FACE for a NaN row (no face found)."""
    missing = np.isnan(probabilities).any(axis=1)
    return np.where(missing, NO_FACE, np.nan_to_num(probabilities).argmax(axis=1)).astype(int)


def sequence_votes(probabilities: np.ndarray, sequences) -> tuple[list[str], np.ndarray]:
    """Each sequence's prediction: the class most of its frames predict (a frame without a face votes NO_FACE). A tie
    goes to the tied class with the highest summed probability over the sequence's frames; NO_FACE, with none, loses
    every tie to a class. Returns the sequences (sorted) and their predictions."""
    sequences = np.asarray(sequences)
    predicted = predicted_classes(probabilities)
    totals = np.nan_to_num(probabilities)
    names = sorted(set(sequences.tolist()))
    votes = np.empty(len(names), int)
    for j, name in enumerate(names):
        frames = sequences == name
        classes, counts = np.unique(predicted[frames], return_counts=True)
        tied = classes[counts == counts.max()]
        summed = totals[frames].sum(axis=0)
        votes[j] = max(tied, key=lambda c: -1.0 if c == NO_FACE else summed[c])
    return names, votes


def recall_summary(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy, found rate, recall per class present in ``truth`` and their mean (macro recall: the classes absent
    from the set, such as neutral in CK+48, are left out), support, and the confusion matrix (rows: true class in
    CLASS_NAMES order; columns: predicted class, then "no face")."""
    truth, predicted = np.asarray(truth, int), np.asarray(predicted, int)
    classes = len(CLASS_NAMES)
    confusion = np.zeros((classes, classes + 1), int)
    np.add.at(confusion, (truth, np.where(predicted == NO_FACE, classes, predicted)), 1)
    support = confusion.sum(axis=1)
    recall = {CLASS_NAMES[c]: float(confusion[c, c] / support[c]) for c in range(classes) if support[c]}
    return {"items": int(len(truth)), "found": float(np.mean(predicted != NO_FACE)) if len(truth) else float("nan"),
            "accuracy": float(np.mean(predicted == truth)) if len(truth) else float("nan"),
            "macro_recall": float(np.mean(list(recall.values()))) if recall else float("nan"),
            "recall": recall, "support": {CLASS_NAMES[c]: int(support[c]) for c in range(classes) if support[c]},
            "confusion": confusion.tolist()}


def cross_set_scores(table: pd.DataFrame, probabilities: np.ndarray, sets=CROSS_SETS) -> dict[str, dict]:
    """``recall_summary`` for each set: set key -> scores (with ``unit``: "image" or "sequence"). ``table`` is
    ``read_xdata_labels``'s (in the same order as ``probabilities``, NaN rows for faces not found); a set whose
    dataset is absent from it is skipped."""
    truth_all = np.array([CLASS_NAMES.index(label) for label in table["label"]], int)
    scores = {}
    for chosen in sets:
        rows = (table["dataset"] == chosen.dataset).to_numpy()
        if not chosen.contempt:
            rows = rows & (truth_all != CLASS_NAMES.index("contempt"))
        if not rows.any():
            continue
        truth, sequences = truth_all[rows], table["sequence"].to_numpy()[rows]
        if chosen.per_sequence:
            names, predicted = sequence_votes(probabilities[rows], sequences)
            truth = np.array([truth[np.flatnonzero(sequences == name)[0]] for name in names], int)
        else:
            predicted = predicted_classes(probabilities[rows])
        scores[chosen.key] = {"unit": "sequence" if chosen.per_sequence else "image",
                              **recall_summary(truth, predicted)}
    return scores


# Damage at fixed levels: (kind, level) -> what it does. The kinds are the ones ``augmentation = "real"`` draws
# during training, at its ranges' ends and beyond them (JPEG quality 10, gamma 0.4 and 2.5, blur sigma 2.5, noise 0.1).
DAMAGES = {
    ("clean", ""): "the face as it is",
    ("resolution", "32 px"): "shrunk to 32x32 and enlarged back", ("resolution", "24 px"): "to 24x24",
    ("resolution", "16 px"): "to 16x16", ("resolution", "12 px"): "to 12x12",
    ("JPEG", "q 30"): "JPEG at quality 30", ("JPEG", "q 10"): "quality 10",
    ("gamma", "0.4"): "gamma 0.4 (brighter)", ("gamma", "2.5"): "gamma 2.5 (darker)",
    ("blur", "sigma 1"): "Gaussian blur, sigma 1 px", ("blur", "sigma 2.5"): "sigma 2.5 px",
    ("noise", "sigma 0.05"): "Gaussian noise, sigma 0.05 of the intensity range", ("noise", "sigma 0.1"): "sigma 0.1",
}


def damage_faces(images: np.ndarray, kind: str, level: str, seed: int = 0) -> np.ndarray:
    """(N, H, W) uint8 gray faces with one damage of ``DAMAGES`` at its level, the same for every call with the
    same seed (only the noise is random)."""
    import torch
    from torchvision.transforms import v2

    from ferlib.transforms import RandomGamma, RandomJPEG, RandomLowResolution

    if (kind, level) not in DAMAGES:
        raise ValueError(f"damage {kind} {level}: expected one of "
                         + ", ".join(f"{k} {v}".strip() for k, v in DAMAGES))
    faces = np.asarray(images, dtype=np.uint8)
    if kind == "clean":
        return faces.copy()
    value = float(re.search(r"\d+(\.\d+)?", level).group())
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0, value * 255, faces.shape)
        return np.clip(faces + noise, 0, 255).round().astype(np.uint8)
    transform = {"resolution": lambda: RandomLowResolution((int(value), int(value))),
                 "JPEG": lambda: RandomJPEG((int(value), int(value))),
                 "gamma": lambda: RandomGamma((value, value)),
                 "blur": lambda: v2.GaussianBlur(2 * int(np.ceil(3 * value)) + 1, sigma=(value, value))}[kind]()
    tensors = torch.from_numpy(faces).unsqueeze(1)
    return np.stack([transform(face).squeeze(0).numpy() for face in tensors])


def damage_accuracies(models: dict, images: np.ndarray, labels: np.ndarray, damages=tuple(DAMAGES), seed: int = 0,
                      progress: bool = True) -> dict[str, dict[tuple[str, str], float]]:
    """Accuracy of each model (name -> a model file or an engine) on the faces under each damage, fed directly
    (``EmotionRecognizer.classify_faces``), against ``labels`` (class indices). Each damage is drawn once and read
    by every model."""
    from tqdm.auto import tqdm

    from ferlib.recognizer import EmotionRecognizer

    recognizers = {name: EmotionRecognizer(model) for name, model in models.items()}
    accuracies = {name: {} for name in models}
    for kind, level in tqdm(list(damages), desc="damages", unit="damage", disable=not progress):
        damaged = damage_faces(images, kind, level, seed)
        for name, recognizer in recognizers.items():
            probabilities = np.concatenate([recognizer.classify_faces(damaged[start:start + 512])
                                            for start in range(0, len(damaged), 512)])
            accuracies[name][kind, level] = float((probabilities.argmax(axis=1) == labels).mean())
    return accuracies
