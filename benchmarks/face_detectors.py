"""The face detectors side by side on real data: how many FER+ test faces each finds (and with eyes), the FER framing
it measures there (the medians ferlib.faces.FER_FRAMINGS holds), and its speed and hit rate on the sample videos.

    python benchmarks/face_detectors.py [--data data] [--faces 1000] [--media ../shared/media]

FER+ faces are 48x48: each is enlarged 4x with a 48-pixel border first (ferlib.faces.fer_detection_frame), as the
face-aligned training set is made. Video frames are used at their own size; each detector runs at its own default
threshold, and the faces the live app keeps (ferlib.video.LIVE_MIN_SCORE) are counted beside. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2

from ferlib.data import load_split
from ferlib.faces import FER_FRAMINGS, available_detectors, build_detector, detect_in_fer_image, measure_framing
from ferlib.video import LIVE_MIN_SCORE


def video_frames(path: Path) -> list:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data", help="generated FER+ folders")
    parser.add_argument("--faces", type=int, default=1000, help="first N FER+ test faces")
    parser.add_argument("--media", default="../shared/media", help="folder of sample videos ('' to skip)")
    args = parser.parse_args()

    detectors = available_detectors()
    images = load_split(args.data, "test").images[:args.faces]
    print(f"## FER+ test faces (first {len(images)}, enlarged to 288x288 with a border)\n")
    print("| detector | found | with eyes | ms / face | eye centre (x, y) | eye distance | box centre | box width | "
          "FER_FRAMINGS matches |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in detectors:
        detector = build_detector(name)
        started = time.perf_counter()
        faces = [detect_in_fer_image(detector, image) for image in images]
        ms = 1000 * (time.perf_counter() - started) / len(images)
        detector.close()
        framing, stats = measure_framing(faces)
        matches = framing == FER_FRAMINGS.get(name)
        print(f"| {name} | {stats['found'] / len(images):.1%} | {stats['with_eyes'] / len(images):.1%} | {ms:.1f} | "
              f"{framing.eye_center} | {framing.eye_distance} | {framing.box_center} | {framing.box_width} | "
              f"{'yes' if matches else 'NO: ' + repr(framing)} |")

    media = Path(args.media) if args.media else None
    if media is None or not media.is_dir():
        return
    print("\n## Sample videos (every frame, at its own size; ms is the median per frame)\n")
    print("| video | size | detector | frames with a face | faces | faces at the app's threshold | ms / frame |")
    print("|---|---|---|---|---|---|---|")
    for video in sorted(media.glob("*.m*")):
        frames = video_frames(video)
        if not frames:
            continue
        size = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
        for name in detectors:
            detector = build_detector(name)
            detector(frames[0])  # warm-up
            times, found, faces, kept = [], 0, 0, 0
            for frame in frames:
                tick = time.perf_counter()
                result = detector(frame)
                times.append(time.perf_counter() - tick)
                found += bool(result)
                faces += len(result)
                kept += sum(face.score >= LIVE_MIN_SCORE[name] for face in result)
            detector.close()
            print(f"| {video.name} | {size} | {name} | {found}/{len(frames)} | {faces} | {kept} | "
                  f"{1000 * statistics.median(times):.1f} |")


if __name__ == "__main__":
    main()
