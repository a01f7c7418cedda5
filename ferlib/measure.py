"""Measurements shared by the benchmarks and the notebooks: how well each face detector finds FER+ faces and faces
in video, and how often a model names the expression labelled by eye on the sample videos.

``benchmarks/face_detectors.py``, ``benchmarks/video_accuracy.py`` and ``notebooks/CNNFaceDetector.ipynb`` print or
show these numbers; none measures them itself.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.data import CLASS_NAMES
from ferlib.faces import FER_FRAMINGS, build_detector, detect_in_fer_image, measure_framing

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
