"""The live pipeline's cost per stage and its end-to-end frame rate on the sample videos, for each detector.

    python benchmarks/video_pipeline.py [--media ../shared/media] [--model models/model_face_detector.safetensors]
                                        [--repeat 3] [--threads 0]

Each video is decoded, and every frame goes through detect -> align -> classify (+ tracking) -> draw, as
``video_application.py --no-display --output`` does but without encoding the output. Stage times are per frame,
averaged over all frames of ``--repeat`` passes; fps is frames / wall-clock time of the whole loop. Rows for the
model in float32 (what the app uses by default) and with bfloat16 autocast (``--bf16``). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import torch

from ferlib.faces import available_detectors
from ferlib.models import load_model
from ferlib.video import STAGES, EmotionPipeline, draw_results


def run_video(path: Path, pipeline: EmotionPipeline, repeat: int) -> dict:
    decode = draw = 0.0
    frames = faces = 0
    size = ""
    started = time.perf_counter()
    for _ in range(repeat):
        pipeline.reset()
        capture = cv2.VideoCapture(str(path))
        while True:
            tick = time.perf_counter()
            ok, frame = capture.read()
            decode += time.perf_counter() - tick
            if not ok:
                break
            size = f"{frame.shape[1]}x{frame.shape[0]}"
            results = pipeline(frame)
            tick = time.perf_counter()
            draw_results(frame, results, fps=0.0)
            draw += time.perf_counter() - tick
            frames += 1
            faces += len(results)
        capture.release()
    wall = time.perf_counter() - started
    timings = dict(pipeline.timings, decode=decode, draw=draw)
    return {"size": size, "frames": frames // repeat, "faces": faces // repeat, "fps": frames / wall,
            **{stage: 1000 * timings[stage] / frames for stage in STAGES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default="../shared/media")
    parser.add_argument("--model", default="models/model_face_detector.safetensors")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    videos = sorted(Path(args.media).glob("*.m*"))
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"OpenCV {cv2.__version__}, model {args.model}\n")
    print("| video | size | detector | model | frames | faces | " + " | ".join(f"{s} ms" for s in STAGES)
          + " | end-to-end fps |")
    print("|---|---|---|---|---|---|" + "---|" * len(STAGES) + "---|")
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        ok, first_frame = capture.read()
        capture.release()
        if not ok:
            continue
        for detector in available_detectors():
            for bf16 in (False, True):
                pipeline = EmotionPipeline(model, detector, bf16=bf16)
                for _ in range(3):  # warm-up: first calls allocate
                    pipeline(first_frame)
                pipeline.timings = dict.fromkeys(pipeline.timings, 0.0)
                row = run_video(video, pipeline, args.repeat)
                pipeline.close()
                print(f"| {video.name} | {row['size']} | {detector} | {'bf16' if bf16 else 'fp32'} | {row['frames']} | "
                      f"{row['faces']} | " + " | ".join(f"{row[s]:.1f}" for s in STAGES) + f" | {row['fps']:.0f} |")


if __name__ == "__main__":
    main()
