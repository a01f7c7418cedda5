"""Live facial emotions: find the faces in a webcam, a video, a photo or a folder of photos, classify each with a
FER+ model, and draw its emotion and top-3 probabilities (q or Esc quits the window).

    python video_application.py                                   # webcam 0, face-aligned model, best detector
    python video_application.py --source clip.mp4                 # a video file, shown in a window
    python video_application.py --source clip.mp4 --no-display --output annotated.mp4 --log emotions.csv
    python video_application.py --source photos/ --no-display --log emotions.csv

The machinery is ferlib.EmotionRecognizer (ferlib.recognizer) and ferlib.video (sources, tracking, drawing, log).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from ferlib.faces import DETECTOR_NAMES

WINDOW = "ferlib: facial emotions (q quits)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="0",
                        help="camera index (default 0), video file, image file or folder of images")
    parser.add_argument("--model", type=Path,
                        help="a ferlib model, .safetensors or .onnx (default: the shipped face-aligned model)")
    parser.add_argument("--engine", default="auto", choices=("auto", "onnx", "torch"),
                        help="run the network in ONNX Runtime (int8) or PyTorch (auto: ONNX Runtime if installed)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for the network (default 1: stays fast when other programs share the CPU)")
    parser.add_argument("--detector", default="auto", choices=("auto",) + DETECTOR_NAMES,
                        help="face detector (auto: MediaPipe for close faces, YuNet for faces of every size)")
    parser.add_argument("--largest-face", action="store_true", help="keep only the largest face in each frame")
    parser.add_argument("--min-face", type=int, default=0, metavar="PX", help="ignore faces narrower than this")
    parser.add_argument("--min-score", type=float, metavar="S",
                        help="ignore faces the detector scores below this (default: 0.7 mediapipe, 0.5 yunet, "
                             "none for haar)")
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="weight of the past in each face's moving average of probabilities, in [0, 1) "
                             "(default 0.6)")
    parser.add_argument("--no-smoothing", action="store_true", help="show each frame's own probabilities")
    parser.add_argument("--no-display", action="store_true", help="do not open a window (files, servers)")
    parser.add_argument("--output", type=Path, help="write the annotated frames to this video (.mp4, .avi)")
    parser.add_argument("--log", type=Path, help="write one CSV row per face per frame here")
    parser.add_argument("--snapshot", type=Path, help="save one annotated frame as an image (.png, .jpg)")
    parser.add_argument("--snapshot-frame", type=int, default=0, metavar="N", help="which frame --snapshot saves")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    args = parser.parse_args(argv)
    if args.no_smoothing:
        args.smoothing = 0.0
    if not 0.0 <= args.smoothing < 1.0:
        parser.error(f"argument --smoothing: {args.smoothing} is not in [0, 1)")
    if args.threads < 1:
        parser.error(f"argument --threads: {args.threads}: expected 1 or more")
    for name in ("max_frames", "min_face", "snapshot_frame"):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"argument --{name.replace('_', '-')}: {value}: expected 0 or more")
    outputs = [(flag, path) for flag, path in (("--output", args.output), ("--log", args.log),
                                                ("--snapshot", args.snapshot)) if path is not None]
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[i + 1:]:
            if path.resolve() == other.resolve():
                parser.error(f"arguments {flag} and {other_flag} are the same file ({path}); give each its own")
    return args


def has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    # imported here so that --help answers at once
    import cv2
    from tqdm import tqdm

    from ferlib.recognizer import EmotionRecognizer
    from ferlib.video import EmotionLog, FrameResult, SourceError, VideoOutput, draw_results, open_source, write_image

    display = not args.no_display
    if display and not has_display():
        print("error: no display to open a window on (DISPLAY is not set); use --no-display with --output and/or "
              "--log", file=sys.stderr)
        return 2
    try:
        recognizer = EmotionRecognizer(args.model, args.engine, args.detector, threads=args.threads,
                                       min_face=args.min_face, min_score=args.min_score, smoothing=args.smoothing)
        source = open_source(args.source)
        # photos in a folder are unrelated: nothing is followed or smoothed across them
        pipeline = recognizer.pipeline(video=source.kind != "images", largest_face=args.largest_face)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    video = log = None
    try:
        video = VideoOutput(args.output, source.fps or (5.0 if source.kind == "images" else 30.0)) \
            if args.output else None
        log = EmotionLog(args.log) if args.log else None
    except (SourceError, OSError) as error:
        if video is not None:
            video.discard()
        print(f"error: {error}", file=sys.stderr)
        return 2
    outputs = [o for o in (video, log) if o is not None]

    draw_seconds, frames, faces_seen = 0.0, 0, 0
    labels_per_face: dict[int, Counter] = {}
    fps, started, last = None, time.perf_counter(), time.perf_counter()
    total = source.length if args.max_frames is None or source.length is None else min(source.length, args.max_frames)
    bar = tqdm(total=total, unit="frame", desc=Path(source.name).name, disable=source.kind == "camera")
    stopped, snapshot_saved = "end of source", False
    try:
        for frame in source:
            if args.max_frames is not None and frames >= args.max_frames:
                stopped = f"--max-frames {args.max_frames}"
                break
            results = pipeline(frame.image)
            frames += 1
            faces_seen += len(results)
            for face in results:
                labels_per_face.setdefault(face.face_id, Counter())[face.label] += 1
            now = time.perf_counter()
            rate = 1.0 / max(now - last, 1e-6)
            fps = rate if fps is None else 0.9 * fps + 0.1 * rate
            last = now
            if log is not None:
                log.write(FrameResult(frame.index, frame.time_s, frame.source, results))
            if display or video is not None or (args.snapshot and frame.index == args.snapshot_frame):
                tick = time.perf_counter()
                annotated = draw_results(frame.image, results, fps)
                draw_seconds += time.perf_counter() - tick
                if video is not None:
                    video.write(annotated)
                if args.snapshot and frame.index == args.snapshot_frame:
                    write_image(args.snapshot, annotated)
                    snapshot_saved = True
                if display:
                    cv2.imshow(WINDOW, annotated)
                    key = cv2.waitKey(0 if source.kind == "images" else 1) & 0xFF
                    if key in (ord("q"), 27):
                        stopped = "q pressed"
                        break
            bar.update(1)
    except KeyboardInterrupt:
        stopped = "interrupted"
        if source.kind != "camera":  # a file's outputs are complete or absent; a camera is stopped this way
            bar.close()
            for output in outputs:
                output.discard()
            print(f"interrupted at frame {frames} of {source.name}: outputs of a file are written only when it is "
                  "read to the end, so none was written", file=sys.stderr)
            return 130
    except (OSError, cv2.error) as error:
        bar.close()
        for output in outputs:
            output.discard()
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        pipeline.close()
        if display:
            cv2.destroyAllWindows()
    try:
        for output in outputs:
            output.commit()
    except OSError as error:
        for output in outputs:
            output.discard()
        print(f"error: {error}", file=sys.stderr)
        return 1

    elapsed = time.perf_counter() - started
    timings = dict(pipeline.timings, decode=source.seconds_decoding[0], draw=draw_seconds)
    per_stage = ", ".join(f"{stage} {1000 * timings[stage] / max(frames, 1):.1f}" for stage in
                          ("decode", "detect", "align", "classify", "draw"))
    print(f"{source.name}: {frames} frames, {faces_seen} faces, {frames / max(elapsed, 1e-9):.1f} fps "
          f"({stopped}); ms per frame: {per_stage}")
    for message in source.skipped:
        print(f"warning: skipped {message}", file=sys.stderr)
    if stopped == "end of source" and source.kind == "video" and source.length and frames < 0.98 * source.length - 1:
        print(f"warning: {source.name} ended after {frames} of the {source.length} frames its header announces "
              "(a damaged or cut-short file?)", file=sys.stderr)
    for face_id, counts in labels_per_face.items():
        summary = ", ".join(f"{label} {n}" for label, n in counts.most_common(3))
        print(f"  face #{face_id}: {sum(counts.values())} frames: {summary}")
    for output, path in ((video, args.output), (log, args.log)):
        if output is not None:
            print(f"wrote {path}")
    if args.snapshot:
        if not snapshot_saved:
            print(f"error: frame {args.snapshot_frame} was never reached; {args.snapshot} not written", file=sys.stderr)
            return 1
        print(f"wrote {args.snapshot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
