"""Live facial emotions: find the faces in a webcam, a video, a photo or a folder of photos, classify each with a
FER+ model, and draw its emotion and top-3 probabilities (q or Esc quits the window).

    python video_application.py                                   # webcam 0, default model, best detector
    python video_application.py --source clip.mp4                 # a video file, shown in a window
    python video_application.py --source clip.mp4 --no-display --output annotated.mp4 --log emotions.csv
    python video_application.py --source photos/ --no-display --log emotions.csv

The machinery is ferlib.EmotionRecognizer (ferlib.recognizer) and ferlib.video (sources, the frame loop that
times every stage, tracking, drawing, log).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ferlib.faces import DETECTOR_NAMES
from ferlib.files import names_camera

WINDOW = "ferlib: facial emotions (q quits)"


class OneLineErrorParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), as the app's other errors are:
    argparse's own would print the whole usage block first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="0",
                        help="camera index (default 0), video file, image file or folder of images")
    parser.add_argument("--model", type=os.path.expanduser,
                        help="a shipped model's name (ferplus_cnn_balanced: the rare emotions; ferplus_cnn_fast) or "
                             "a ferlib model file, .safetensors or .onnx (default: the shipped ferplus_cnn_robust)")
    parser.add_argument("--tta", action="store_true",
                        help="average each face's answer with its mirror image's (twice the network's work)")
    parser.add_argument("--engine", default="auto", choices=("auto", "onnx", "torch"),
                        help="run the network in ONNX Runtime (int8) or PyTorch (auto: ONNX Runtime if installed)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for the network (default 1: stays fast when other programs share the CPU)")
    parser.add_argument("--detector", default="auto", choices=("auto",) + DETECTOR_NAMES,
                        help="face detector (auto: MediaPipe for close faces, YuNet for faces of every size)")
    parser.add_argument("--largest-face", action="store_true", help="keep only the largest face in each frame")
    parser.add_argument("--rotate", type=int, default=0, choices=(0, 90, 180, 270),
                        help="turn every frame this many degrees clockwise first (a camera mounted on its side)")
    parser.add_argument("--min-face", type=int, default=0, metavar="PX", help="ignore faces narrower than this")
    parser.add_argument("--min-score", type=float, metavar="S",
                        help="ignore faces the detector scores below this (default: MediaPipe 0.7 on video and "
                             "0.5 on photos, YuNet 0.5, none for haar; auto uses both detectors' own)")
    parser.add_argument("--smoothing", type=float, default=0.6,
                        help="weight of the past in each face's moving average of probabilities, in [0, 1) "
                             "(default 0.6)")
    parser.add_argument("--no-smoothing", action="store_true", help="show each frame's own probabilities")
    parser.add_argument("--no-display", action="store_true", help="do not open a window (files, servers)")
    parser.add_argument("--output", type=user_path, help="write the annotated frames to this video (.mp4, .avi)")
    parser.add_argument("--log", type=user_path, help="write one CSV row per face per frame here (.csv)")
    parser.add_argument("--snapshot", type=user_path, help="save one annotated frame as an image (.png, .jpg)")
    parser.add_argument("--snapshot-frame", type=int, metavar="N", help="which frame --snapshot saves (default 0)")
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
    if args.max_frames == 0:
        parser.error("argument --max-frames: 0: expected 1 or more (0 frames would read nothing)")
    if args.snapshot_frame is not None and args.snapshot is None:
        parser.error("argument --snapshot-frame: names a frame for --snapshot, which is not given")
    args.snapshot_frame = args.snapshot_frame or 0
    outputs = [(flag, path) for flag, path in (("--output", args.output), ("--log", args.log),
                                                ("--snapshot", args.snapshot)) if path is not None]
    for i, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[i + 1:]:
            if same_file(path, other):
                parser.error(f"arguments {flag} and {other_flag} are the same file ({path}); give each its own")
        if not names_camera(args.source) and same_file(path, Path(args.source).expanduser()):
            parser.error(f"argument {flag}: {path} is the --source being read; writing it would replace the input")
    if args.log is not None and args.log.suffix.lower() != ".csv":
        parser.error(f"argument --log: {args.log}: the log is CSV; expected a file name ending in .csv")
    return args


def user_path(text: str) -> Path:
    """A path argument, ``~`` expanded as for --source (a shell leaves ``--output=~/x.mp4`` as it is)."""
    return Path(text).expanduser()


def same_file(path: Path, other: Path) -> bool:
    """Whether two paths name one file (through links too); a path that does not exist yet is only itself."""
    if path.resolve() == other.resolve():
        return True
    return path.exists() and other.exists() and os.path.samefile(path, other)


def has_display() -> bool:
    return sys.platform in ("win32", "darwin") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@dataclass
class Tally:
    """What the run reports at the end: frames and faces seen, each face's labels, each frame's stage times."""
    frames: int = 0
    faces: int = 0
    labels_per_face: dict[int, Counter] = field(default_factory=dict)
    times: list = field(default_factory=list)  # ferlib.video.StageTimes, one per frame
    stopped: str = "end of source"
    last_time_s: float | None = None  # the last frame's time in the video

    def add(self, result) -> None:
        self.frames += 1
        self.faces += len(result.faces)
        for face in result.faces:
            self.labels_per_face.setdefault(face.face_id, Counter())[face.label] += 1
        self.times.append(result.times)
        self.last_time_s = result.time_s


def fail(error: BaseException, code: int) -> int:
    print(f"error: {error}", file=sys.stderr)
    return code


def open_input(args: argparse.Namespace):
    """The frame source and a pipeline for it; ValueError (SourceError included) and the like when either fails."""
    from ferlib.recognizer import EmotionRecognizer
    from ferlib.video import open_source, rotated_source

    recognizer = EmotionRecognizer(args.model, args.engine, args.detector, threads=args.threads,
                                   min_face=args.min_face, min_score=args.min_score, smoothing=args.smoothing,
                                   tta=args.tta)
    source = rotated_source(open_source(args.source), args.rotate)
    # photos in a folder are unrelated: nothing is followed or smoothed across them
    return source, recognizer.pipeline(video=source.kind != "images", largest_face=args.largest_face)


def open_outputs(args: argparse.Namespace, source) -> list:
    """The requested outputs, in the order they are committed: the snapshot first, so that a snapshot that cannot be
    written (an unknown image type) is found before any other output is published."""
    from ferlib.video import EmotionLog, Snapshot, VideoOutput

    outputs = [Snapshot(args.snapshot, args.snapshot_frame)] if args.snapshot else []
    try:
        if args.output:
            outputs.append(VideoOutput(args.output, output_fps(source), timed=source.kind == "video"))
        if args.log:
            outputs.append(EmotionLog(args.log))
    except BaseException:
        discard(outputs)
        raise
    return outputs


def output_fps(source) -> float:
    """The annotated video's frame rate: the source's, where it has a plausible one (a browser's WebM recording
    announces its time base, 1,000), else 30 (5 for photos)."""
    if source.fps and 1 <= source.fps <= MAX_OUTPUT_FPS:
        return source.fps
    return 5.0 if source.kind == "images" else 30.0


MAX_OUTPUT_FPS = 120.0


def check_snapshot_frame(args: argparse.Namespace, source) -> None:
    """Refuse, before any frame is read, a --snapshot-frame past the frames that will be read (a video's header
    count, a folder's images, --max-frames)."""
    from ferlib.video import SourceError

    limits = [n for n in (source.length, args.max_frames) if n is not None]
    if args.snapshot and limits and args.snapshot_frame >= min(limits):
        raise SourceError(f"--snapshot-frame {args.snapshot_frame}: {source.name} gives {min(limits)} frame(s) here; "
                          f"expected 0 to {min(limits) - 1}")


def discard(outputs: list) -> None:
    for output in outputs:
        output.discard()


def run_frames(args: argparse.Namespace, source, pipeline, outputs: list, display: bool, tally: Tally) -> None:
    """Every frame through ferlib.video's frame loop (which writes the outputs), shown in a window when ``display``;
    ``tally`` counts them, so it holds what was done when an interruption ends the loop."""
    import cv2
    from tqdm import tqdm

    from ferlib.video import process_frames

    total = source.length if args.max_frames is None or source.length is None else min(source.length, args.max_frames)
    with tqdm(total=total, unit="frame", desc=Path(source.name).name, disable=source.kind == "camera") as bar:
        for result in process_frames(source, pipeline, outputs, draw=display, max_frames=args.max_frames):
            tally.add(result)
            bar.update(1)
            if display:
                cv2.imshow(WINDOW, result.annotated)
                if (cv2.waitKey(0 if source.kind == "images" else 1) & 0xFF) in (ord("q"), 27):
                    tally.stopped = "q pressed"
                    return
        if source.skipped:  # photos that could not be read: the bar ends full at the ones that were
            bar.total = bar.n
            bar.refresh()
    if args.max_frames is not None and tally.frames == args.max_frames:
        tally.stopped = f"--max-frames {args.max_frames}"


def report(args: argparse.Namespace, source, outputs: list, tally: Tally, seconds: float) -> int:
    """The run's summary (frames, fps, ms per stage, each face's labels), its warnings and what was written."""
    from ferlib.video import Snapshot, cut_short, summarize_times

    print(f"{source.name}: {tally.frames} frames, {tally.faces} faces, {tally.frames / max(seconds, 1e-9):.1f} fps "
          f"({tally.stopped}); ms per frame: {summarize_times(tally.times)}")
    for message in source.skipped:
        print(f"warning: skipped {message}", file=sys.stderr)
    early = cut_short(source, tally.frames, tally.last_time_s) if tally.stopped == "end of source" else None
    if early:
        print(f"warning: {early}", file=sys.stderr)
    if source.kind == "images":  # photos' faces are not followed from one photo to the next: one line for them all
        counts = sum(tally.labels_per_face.values(), Counter())
        if counts:
            print(f"  labels of the {sum(counts.values())} faces: "
                  + ", ".join(f"{label} {n}" for label, n in counts.most_common()))
    else:
        for face_id, counts in tally.labels_per_face.items():
            summary = ", ".join(f"{label} {n}" for label, n in counts.most_common(3))
            print(f"  face #{face_id}: {sum(counts.values())} frames: {summary}")
    for output in outputs:
        if isinstance(output, Snapshot) and not output.taken:
            print(f"error: frame {args.snapshot_frame} was never reached; {args.snapshot} not written",
                  file=sys.stderr)
        else:
            print(f"wrote {output.path}")
    return 0 if all(output.taken for output in outputs if isinstance(output, Snapshot)) else 1


def run(args: argparse.Namespace) -> int:
    import cv2  # imported here (and ferlib below) so that --help answers at once

    from ferlib.video import SourceError

    display = not args.no_display
    if display and not has_display():
        print("error: no display to open a window on (DISPLAY is not set); use --no-display with --output and/or "
              "--log", file=sys.stderr)
        return 2
    try:
        source, pipeline = open_input(args)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as error:
        return fail(error, 2)
    try:
        check_snapshot_frame(args, source)
        outputs = open_outputs(args, source)
    except (SourceError, OSError) as error:
        pipeline.close()
        return fail(error, 2)
    tally, started = Tally(), time.perf_counter()
    finished = False  # read to the end (or a camera stopped): the outputs are kept
    try:
        try:
            run_frames(args, source, pipeline, outputs, display, tally)
            finished = True
        except KeyboardInterrupt:
            tally.stopped = "interrupted"
            if source.kind != "camera":  # a file's outputs are complete or absent; a camera is stopped this way
                raise
            finished = True
        finally:
            with interruptions_held():  # a second Ctrl-C must not lose a camera's recording while it is kept
                pipeline.close()
                if display:
                    cv2.destroyAllWindows()
                if finished:
                    for output in outputs:
                        output.commit()
    except KeyboardInterrupt:
        discard(outputs)
        print(f"interrupted at frame {tally.frames} of {source.name}: outputs are written only when the source is "
              "read to the end, so none was written", file=sys.stderr)
        return 130
    except (OSError, cv2.error) as error:
        discard(outputs)
        return fail(error, 1)
    try:
        return report(args, source, outputs, tally, time.perf_counter() - started)
    except KeyboardInterrupt:  # the outputs are written; only the summary is cut short
        return 130


@contextlib.contextmanager
def interruptions_held():
    """Ctrl-C and the termination signals ignored while the block runs (in the main thread; elsewhere untouched)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, *TERMINATION_SIGNALS)}
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    # A terminal closed, `timeout`, `docker stop` or an IDE's stop button end the app as Ctrl-C does: outputs
    # discarded, not left as hidden part-files
    main_thread = threading.current_thread() is threading.main_thread()  # only it may set signal handlers
    # only where the default (ending the process) was in force: `nohup` ignores SIGHUP, and so must the app
    handlers = {number: signal.signal(number, stop_as_interrupted) for number in TERMINATION_SIGNALS
                if main_thread and signal.getsignal(number) == signal.SIG_DFL}
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:  # before the frames (loading models, opening the source)
        print("interrupted before the first frame; nothing was written", file=sys.stderr)
        return 130
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def stop_as_interrupted(number, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
