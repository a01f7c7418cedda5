"""The face detectors side by side on real data: how many FER+ test faces each finds (and with eyes), the FER framing
it measures there (the medians ferlib.faces.FER_FRAMINGS holds), and its speed and hit rate on the sample videos.

    python benchmarks/face_detectors.py [--data data] [--faces 1000] [--media ../shared/media]

FER+ faces are 48x48: each is enlarged 4x with a 48-pixel border first (ferlib.faces.fer_detection_frame), as the
face-aligned training set is made. Video frames are used at their own size; each detector runs at its own default
threshold, and the faces the live app keeps (ferlib.video.LIVE_MIN_SCORE) are counted beside. Prints Markdown tables.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ferlib.data import load_split
from ferlib.faces import available_detectors
from ferlib.measure import fer_detection, video_detection
from ferlib.video import LIVE_MIN_SCORE, VIDEO_SUFFIXES, read_frames


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
        row = fer_detection(name, images)
        framing = row["framing"]
        if framing is None:
            print(f"| {name} | 0.0% | 0.0% | {row['ms_per_face']:.1f} | | | | | NO: no face found |")
            continue
        print(f"| {name} | {row['found']:.1%} | {row['with_eyes']:.1%} | {row['ms_per_face']:.1f} | "
              f"{framing.eye_center} | {framing.eye_distance} | {framing.box_center} | {framing.box_width} | "
              f"{'yes' if row['matches'] else 'NO: ' + repr(framing)} |")

    media = Path(args.media) if args.media else None
    if media is None or not media.is_dir():
        return
    print("\n## Sample videos (every frame, at its own size; ms is the median per frame)\n")
    print("| video | size | detector | frames with a face | faces | faces at the app's threshold | ms / frame |")
    print("|---|---|---|---|---|---|---|")
    for video in sorted(path for path in media.iterdir() if path.suffix.lower() in VIDEO_SUFFIXES):
        frames = list(read_frames(video))
        if not frames:
            continue
        size = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
        for name in detectors:
            row = video_detection(name, frames, LIVE_MIN_SCORE[name])
            print(f"| {video.name} | {size} | {name} | {row['with_face']}/{row['frames']} | {row['faces']} | "
                  f"{row['kept']} | {row['ms_per_frame']:.1f} |")


if __name__ == "__main__":
    main()
