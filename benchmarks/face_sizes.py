"""Face-detector recall by face size: FER+ test faces pasted at a range of widths onto 1920x1080 frames.

    python benchmarks/face_sizes.py [--data data] [--media ../shared/media] [--faces-per-size 60]
        [--faces-per-frame 12] [--sizes 24,32,40,48,64,96,128,200,300] [--detectors mediapipe,...]
        [--save-example PATH]

The same --faces-per-size faces (majority protocol, drawn with a fixed seed) are enlarged to each width, given a
replicated border of a quarter of their size, and blended into the background with a feathered edge (the face
square opaque), on a jittered grid: one width per frame, as many faces as fit (at most --faces-per-frame).
Backgrounds are frames of <media>/no_face.mp4 (a sky, no face) when it exists, else seeded procedural textures.
A face is found when a detected box's centre lies inside its square and the box is 0.4-2.5x its width; each face
and each detection are matched at most once, and unmatched detections (duplicates included) are false detections.
Each detector runs at its own default threshold and is reset before every frame. "auto (video)" is the video
detector's first look at a frame (without its background search, whose first look is the same); "auto (video) after
its background search" is shown the same frame again at 30 fps, as by a still camera, until its background search
(``ferlib.faces.BackgroundSearch``) has answered: its recall once that search is in, and in the ms column how long
that took (the frame loop never waits for it). A second table is the ceiling:
the same faces alone, enlarged to 288x288 with a 48-pixel replicated border. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from ferlib.data import label_targets, load_split
from ferlib.faces import build_detector
from ferlib.video import read_frames

FRAME_W, FRAME_H = 1920, 1080
SEED = 0
DETECTORS = {  # row name -> (build_detector name, keyword arguments)
    "mediapipe": ("mediapipe", {}),
    "mediapipe_full": ("mediapipe_full", {}),
    "yunet (whole frame)": ("yunet", {"tile": None}),
    "yunet (shrunk + 640-px tiles)": ("yunet", {}),
    "yunet (+ 2.5x enlarged tiles)": ("yunet", {"upscale": 2.5}),
    "auto (photo)": ("auto", {}),
    "auto (video)": ("auto", {"video": True, "background": False}),  # its first look is the same either way
    "auto (video) after its background search": ("auto", {"video": True}),
}
SETTLED = {"auto (video) after its background search"}  # shown the frame until the background search has answered
CAMERA_FPS = 30


def load_backgrounds(media: str) -> tuple[list, str]:
    """The frames of <media>/no_face.mp4 (at their own size), or [] when it is missing."""
    path = Path(media) / "no_face.mp4" if media else None
    if path is None or not path.is_file():
        return [], "seeded procedural textures"
    frames = list(read_frames(path))
    return frames, f"frames of {path}" if frames else "seeded procedural textures"


def background(videos: list, rng: np.random.Generator) -> np.ndarray:
    """A 1920x1080 BGR background: a random video frame, or smoothed noise (shading, tint, grain) and a gradient."""
    if videos:
        return cv2.resize(videos[rng.integers(len(videos))], (FRAME_W, FRAME_H), interpolation=cv2.INTER_LINEAR)
    def smooth(shape, low, high):
        return cv2.resize(rng.uniform(low, high, shape).astype(np.float32), (FRAME_W, FRAME_H),
                          interpolation=cv2.INTER_CUBIC).reshape(FRAME_H, FRAME_W, -1)
    gradient = np.linspace(-40, 40, FRAME_H, dtype=np.float32)[:, None, None] * rng.uniform(-1, 1, 3)
    texture = smooth((9, 16), 40, 210) + smooth((5, 8, 3), -35, 35) + smooth((135, 240), -12, 12) + gradient
    texture = cv2.GaussianBlur(texture, (0, 0), 2)
    return np.clip(texture, 0, 255).astype(np.uint8)


def feather(width: int, border: int) -> np.ndarray:
    """Alpha of a (width + 2 border) square: 1 on the face square, falling smoothly to 0 at the outer edge."""
    grid = np.arange(width + 2 * border, dtype=np.float32)
    outside = np.maximum(np.maximum(border - grid, grid - (border + width - 1)), 0)
    distance = np.hypot(outside[:, None], outside[None, :])
    alpha = np.clip(1 - distance / max(border, 1), 0, 1)
    return (alpha * alpha * (3 - 2 * alpha))[:, :, None]


def synthetic_frames(images: np.ndarray, width: int, per_frame: int, videos: list):
    """Frames holding the faces at one width: yields (BGR frame, face squares (x, y, size))."""
    rng = np.random.default_rng([SEED, width])
    border = max(1, round(width / 4))
    patch_size = width + 2 * border
    cell = patch_size + max(8, patch_size // 5)
    cols, rows = FRAME_W // cell, FRAME_H // cell
    if cols * rows == 0:
        raise ValueError(f"a {width}-px face with its border does not fit in a {FRAME_W}x{FRAME_H} frame")
    left, top = (FRAME_W - cols * cell) // 2, (FRAME_H - rows * cell) // 2
    alpha = feather(width, border)
    per_frame = min(per_frame, cols * rows)
    for group in np.array_split(np.arange(len(images)), math.ceil(len(images) / per_frame)):
        frame = background(videos, rng).astype(np.float32)
        squares = []
        for index, slot in zip(group, rng.choice(cols * rows, len(group), replace=False)):
            x = left + (slot % cols) * cell + int(rng.integers(cell - patch_size + 1))
            y = top + (slot // cols) * cell + int(rng.integers(cell - patch_size + 1))
            face = cv2.resize(images[index], (width, width), interpolation=cv2.INTER_CUBIC)
            patch = cv2.copyMakeBorder(face, border, border, border, border, cv2.BORDER_REPLICATE)
            region = frame[y:y + patch_size, x:x + patch_size]
            region[:] = alpha * patch[:, :, None] + (1 - alpha) * region
            squares.append((x + border, y + border, width))
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8), squares


def match(faces: list, squares: list) -> tuple[np.ndarray, list[bool]]:
    """Which squares were found, and for each detection (most confident first) whether it matched a face."""
    found = np.zeros(len(squares), bool)
    matched = []
    for face in sorted(faces, key=lambda f: -f.score):
        x, y, w, h = face.box
        cx, cy = x + w / 2, y + h / 2
        hit = next((j for j, (sx, sy, size) in enumerate(squares) if not found[j] and sx <= cx < sx + size
                    and sy <= cy < sy + size and 0.4 * size <= w <= 2.5 * size), None)
        if hit is not None:
            found[hit] = True
        matched.append(hit is not None)
    return found, matched


def after_background_search(detector, frame: np.ndarray, limit: float = 60.0) -> list:
    """The faces a video detector reports on a still frame shown at CAMERA_FPS, once its background search has
    answered (or after ``limit`` seconds)."""
    started = time.perf_counter()
    faces = detector(frame)
    while detector.background_searches == 0 and time.perf_counter() - started < limit:
        time.sleep(1 / CAMERA_FPS)
        faces = detector(frame)
    return faces


def build(rows: list[str]) -> dict:
    detectors = {}
    for row in rows:
        name, kwargs = DETECTORS[row]
        try:
            detectors[row] = build_detector(name, **kwargs)
        except ImportError as error:
            print(f"Skipped {row}: {error}\n")
    return detectors


def save_example(path: str, images: np.ndarray, per_frame: int, videos: list) -> None:
    """One frame of 32-px faces with the auto detector's boxes: green matched, red false, yellow the missed faces."""
    frame, squares = next(synthetic_frames(images, 32, per_frame, videos))
    detector = build_detector("auto")
    faces = sorted(detector(frame), key=lambda f: -f.score)
    detector.close()
    found, matched = match(faces, squares)
    for (sx, sy, size), hit in zip(squares, found):
        if not hit:
            cv2.rectangle(frame, (sx - 2, sy - 2), (sx + size + 1, sy + size + 1), (0, 255, 255), 1)
    for face, ok in zip(faces, matched):
        x, y, w, h = face.box
        cv2.rectangle(frame, (x, y), (x + w, y + h), (0, 200, 0) if ok else (0, 0, 255), 2)
    cv2.imwrite(path, frame)
    print(f"\nExample frame (32-px faces, auto detector: {int(found.sum())}/{len(squares)} found) written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data", help="generated FER+ folders")
    parser.add_argument("--media", default="../shared/media", help="folder holding no_face.mp4 ('' for textures)")
    parser.add_argument("--faces-per-size", type=int, default=60, help="distinct FER+ test faces at each width")
    parser.add_argument("--faces-per-frame", type=int, default=12, help="at most this many faces in one frame")
    parser.add_argument("--sizes", default="24,32,40,48,64,96,128,200,300", help="face widths in pixels")
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma list of: " + ", ".join(DETECTORS))
    parser.add_argument("--save-example", metavar="PATH", help="write a frame of 32-px faces with the auto boxes")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = [row.strip() for row in args.detectors.split(",")]
    if unknown := [row for row in rows if row not in DETECTORS]:
        parser.error(f"unknown detector {unknown[0]!r}: expected some of {', '.join(DETECTORS)}")

    split = load_split(args.data, "test")
    keep, _ = label_targets(split.votes, "majority")
    chosen = np.random.default_rng(SEED).choice(np.flatnonzero(keep), args.faces_per_size, replace=False)
    images = split.images[np.sort(chosen)]
    videos, source = load_backgrounds(args.media)
    detectors = build(rows)

    found = {row: {} for row in detectors}
    false = dict.fromkeys(detectors, 0)
    times = {row: [] for row in detectors}
    frames = 0
    for width in sizes:
        for frame, squares in synthetic_frames(images, width, args.faces_per_frame, videos):
            frames += 1
            for row, detector in detectors.items():
                if frames == 1:
                    detector(frame)  # warm-up
                detector.reset()
                tick = time.perf_counter()
                faces = after_background_search(detector, frame) if row in SETTLED else detector(frame)
                times[row].append(time.perf_counter() - tick)
                hits, matched = match(faces, squares)
                found[row][width] = found[row].get(width, 0) + int(hits.sum())
                false[row] += matched.count(False)

    print(f"{frames} frames of {FRAME_W}x{FRAME_H}, {len(images)} FER+ test faces (majority protocol) per width, "
          f"background: {source}, {os.cpu_count()} CPUs\n")
    print("| detector | recall at " + " | ".join(f"{size} px" for size in sizes)
          + " | false detections per frame | ms per 1920x1080 frame (median) |")
    print("|---|" + "---:|" * (len(sizes) + 2))
    for row in detectors:
        recall = " | ".join(f"{100 * found[row][size] / len(images):.0f}%" for size in sizes)
        print(f"| {row} | {recall} | {false[row] / frames:.2f} | {1000 * statistics.median(times[row]):.0f} |")

    print(f"\nCeiling: the same {len(images)} faces alone, enlarged to 288x288 with a 48-px replicated border\n")
    print("| detector | found |\n|---|---:|")
    for row, detector in detectors.items():
        hits = 0
        for image in images:
            big = cv2.resize(image, (288, 288), interpolation=cv2.INTER_CUBIC)
            detector.reset()
            faces = detector(cv2.copyMakeBorder(big, 48, 48, 48, 48, cv2.BORDER_REPLICATE))
            hits += int(match(faces, [(48, 48, 288)])[0][0])
        print(f"| {row} | {100 * hits / len(images):.0f}% |")
    for detector in detectors.values():
        detector.close()

    if args.save_example:
        save_example(args.save_example, images, args.faces_per_frame, videos)


if __name__ == "__main__":
    main()
