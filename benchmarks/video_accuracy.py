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

import pandas as pd

from ferlib.measure import labelled_frames, video_accuracy
from ferlib.models import load_model

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = ["models/ferplus_cnn_robust.safetensors", "models/ferplus_cnn.safetensors",
                  "models/ferplus_cnn_aligned.safetensors", "models/seed_cnn.safetensors"]
SMOOTHINGS = (0.0, 0.6)  # each frame's own probabilities; the app's smoothing


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
            result = video_accuracy(model, Path(args.media) / video, labelled_frames(table, video), SMOOTHINGS)
            raw, smoothed = (result["accuracy"][s] for s in SMOOTHINGS)
            print(f"| {Path(model_path).stem} | {video} | {result['labelled']} | {result['with_face']} | "
                  f"{raw:.1%} | {smoothed:.1%} | {result['mean_true_probability']:.2f} |")


if __name__ == "__main__":
    main()
