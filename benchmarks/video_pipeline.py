"""The live pipeline's cost per stage and its end-to-end frame rate on the sample videos, per detector and engine,
on an idle machine and (``--load N``) while N other processes keep a core busy each.

    python benchmarks/video_pipeline.py [--media ../shared/media] [--model models/ferplus_cnn_robust.safetensors]
                                        [--repeat 3] [--load 1] [--detectors auto,mediapipe,yunet]
                                        [--engines "torch:2,onnx:1,onnx:2"] [--ahead detect,decode,none]

Each video goes through the app's frame loop (``ferlib.video.process_frames``): decode -> detect -> align ->
classify -> track -> draw, as ``video_application.py --no-display --output`` does but without encoding the output.
An engine is ``torch:THREADS`` (PyTorch eager, float32) or ``onnx:THREADS`` (ONNX Runtime, the model's int8 twin).
A detector is a ``ferlib.faces`` name, or ``auto-inloop``: ``auto`` with its photo-grade search run in the frame
loop every 60 frames instead of in its background process (``FaceFinder(video=True, background=False)``).
Stage times are the loop's own (``StageTimes``): milliseconds per frame, the mean over all frames of ``--repeat``
passes; total is the whole loop body and fps is 1000 / mean total. With ``auto`` a video's first frame costs more
(YuNet searches it whole in the loop: 20-80 ms at 640x360), a good part of a short clip's time: the last column
leaves each pass's first frame out. The load is a plain busy loop in another Python process. ``--ahead`` sets the
frame loop's ways side by side: ``detect`` (the default of the app and ``analyze_video``: a thread decodes and
searches the next frames while the loop reads, follows and draws this one's faces; decode and detect are then that
thread's times, not the loop's, and total is less than their sum), ``decode`` (a thread decodes ahead, the loop
searches) and ``none`` (everything in the loop, one frame at a time). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import torch

from ferlib.engine import load_engine
from ferlib.faces import FaceFinder, available_detectors
from ferlib.video import STAGES as LOOP_STAGES
from ferlib.video import VIDEO_SUFFIXES, EmotionPipeline, open_source, process_frames, summarize_times

DEFAULT_MODEL = "models/ferplus_cnn_robust.safetensors"
STAGES = tuple(stage for stage in LOOP_STAGES if stage != "write")  # nothing is written here
AHEAD = ("detect", "decode", "none")  # what a thread does ahead of the frame loop


def run_video(path: Path, pipeline: EmotionPipeline, repeat: int, ahead: str = "detect") -> dict:
    """``repeat`` passes of the frame loop over a video; the row of the table: stage ms, frames, faces, fps, and the
    fps of the frames after each pass's first (what a long video or a webcam settles to)."""
    times, later, faces = [], [], 0
    for _ in range(repeat):
        pipeline.reset()
        frames = open_source(path, read_ahead=ahead != "none")
        for index, result in enumerate(process_frames(frames, pipeline, draw=True, detect_ahead=ahead == "detect")):
            times.append(result.times)
            if index > 0:
                later.append(result.times)
            faces += len(result.faces)
    summary = summarize_times(times)
    return {"frames": summary.frames // repeat, "faces": faces // repeat, "fps": summary.fps,
            "fps_after_first": summarize_times(later).fps, **summary.mean_ms}


def start_load(processes: int) -> list[subprocess.Popen]:
    """Processes that each keep one core busy until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]


def make_engine(model: str, spec: str):
    kind, _, threads = spec.partition(":")
    threads = int(threads or 1)
    if kind == "torch":
        torch.set_num_threads(threads)
    return load_engine(model, kind, threads=threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default="../shared/media")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="also measure with this many busy processes beside")
    parser.add_argument("--detectors", default="auto,mediapipe,yunet", help="comma list (auto, mediapipe, ...)")
    parser.add_argument("--engines", default="torch:2,onnx:1,onnx:2", help="comma list of torch:N / onnx:N")
    parser.add_argument("--videos", default="*.m*", help="glob in --media")
    parser.add_argument("--ahead", default="detect",
                        help="comma list of detect / decode / none: what a thread does ahead of the frame loop")
    args = parser.parse_args(argv)
    # the default glob also matches the folder's README.md: keep the videos
    videos = sorted(p for p in Path(args.media).glob(args.videos) if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        sys.exit(f"error: no videos matching {args.videos} in {args.media}")
    installed = ["auto", "auto-inloop"] + available_detectors()
    detectors = [name for name in args.detectors.split(",") if name in installed]
    aheads = [mode.strip() for mode in args.ahead.split(",")]
    if any(mode not in AHEAD for mode in aheads):
        sys.exit(f"error: --ahead {args.ahead!r}: expected a comma list of {', '.join(AHEAD)}")
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, OpenCV {cv2.__version__}, model {args.model}; "
          f"load: {args.load} busy process(es) in the loaded rows\n")
    print("| video | size | detector | engine | ahead | load | frames | faces | "
          + " | ".join(f"{s} ms" for s in STAGES) + " | end-to-end fps | fps after the first frame |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(STAGES) + "---|---|")
    for video in videos:
        first = next(iter(open_source(video))).image
        size = f"{first.shape[1]}x{first.shape[0]}"
        for detector in detectors:
            for spec in args.engines.split(","):
                for ahead in aheads:
                    for load in sorted({0, args.load}):
                        row, engine_name = measure(args.model, video, first, detector, spec, ahead, load, args.repeat)
                        print(f"| {video.name} | {size} | {detector} | {engine_name} x{spec.split(':')[-1]} "
                              f"| {ahead} | {load} | {row['frames']} | {row['faces']} | "
                              + " | ".join(f"{row[s]:.1f}" for s in STAGES)
                              + f" | {row['fps']:.0f} | {row['fps_after_first']:.0f} |", flush=True)


def measure(model: str, video: Path, first, detector: str, spec: str, ahead: str, load: int,
            repeat: int) -> tuple[dict, str]:
    """One row: a fresh pipeline (detector, engine) over ``video`` with ``load`` busy processes beside."""
    finder = FaceFinder(video=True, background=False) if detector == "auto-inloop" else detector
    pipeline = EmotionPipeline(make_engine(model, spec), finder, video=True)
    busy = start_load(load)
    try:
        time.sleep(0.3 if load else 0)  # let the load start
        for _ in range(3):  # warm-up: first calls allocate
            pipeline(first)
        return run_video(video, pipeline, repeat, ahead), pipeline.engine.name
    finally:
        for process in busy:
            process.kill()
            process.wait()
        pipeline.close()
        if not isinstance(finder, str):  # made here, so closed here
            finder.close()


if __name__ == "__main__":
    main()
