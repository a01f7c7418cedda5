"""The models on real video frames: how often each names the expression a person can see, frame by frame.

    python benchmarks/video_accuracy.py [--media ../shared/media] [--models models/*.safetensors]

The frame ranges in benchmarks/sample_video_labels.csv were labelled by eye from the sample videos (a neutral face,
then a toothy smile; the frames where the expression changes are left out). Every model gets the same crops: the
MediaPipe detector and ferlib.faces.align_face, as video_application.py makes them. Accuracy is over the labelled
frames where a face was found, with each frame's own probabilities (no smoothing) and with the app's smoothing.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ferlib.data import CLASS_NAMES
from ferlib.models import load_model
from ferlib.video import analyze_frames, read_frames

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = ["models/ferplus_cnn.safetensors", "models/ferplus_cnn_aligned.safetensors",
                  "models/seed_cnn.safetensors"]


def frame_labels(table: pd.DataFrame, video: str) -> dict[int, str]:
    labels = {}
    for row in table[table["video"] == video].itertuples():
        labels.update(dict.fromkeys(range(row.first_frame, row.last_frame + 1), row.label))
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", default="../shared/media")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    args = parser.parse_args()
    table = pd.read_csv(HERE / "sample_video_labels.csv")
    print("| model | video | labelled frames | with a face | accuracy (per frame) | accuracy (smoothed) | "
          "mean p(true class) |")
    print("|---|---|---|---|---|---|---|")
    for model_path in args.models:
        model, _ = load_model(model_path)
        for video in table["video"].unique():
            labels = frame_labels(table, video)
            rows = {}
            for smoothing in (0.0, 0.6):
                for result in analyze_frames(read_frames(Path(args.media) / video), model, "mediapipe",
                                             smoothing=smoothing, largest_face=True):
                    if result.index in labels and result.faces:
                        rows.setdefault(result.index, []).append(result.faces[0].probabilities)
            truth = [CLASS_NAMES.index(labels[i]) for i in rows]
            raw = np.array([rows[i][0] for i in rows])
            smoothed = np.array([rows[i][1] for i in rows])
            print(f"| {Path(model_path).stem} | {video} | {len(labels)} | {len(rows)} | "
                  f"{(raw.argmax(1) == truth).mean():.1%} | {(smoothed.argmax(1) == truth).mean():.1%} | "
                  f"{raw[np.arange(len(truth)), truth].mean():.2f} |")


if __name__ == "__main__":
    main()
