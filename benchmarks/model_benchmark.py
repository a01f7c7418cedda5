"""Speed of the seed recipe's CNN and the default model on this machine, side by side in one run.

    python benchmarks/model_benchmark.py [--train-steps 20] [--latency-calls 200]

For each model: training images/s (forward + backward + AdamW step at batch 64, with the recipe's precision and
memory format), inference images/s at batch 256, and single-face latency (median of many calls after warm-up),
in float32 and with bfloat16 autocast. Prints a Markdown table and the ratios to the seed recipe.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ferlib.models import build_model, count_parameters

RECIPES = {
    # name: (model kwargs, training precision bf16?, channels_last?)
    "seed recipe (3-channel, float32)": ({"in_channels": 3}, False, False),
    "default (1-channel, bf16 autocast, channels-last)": ({"in_channels": 1}, True, True),
}


def training_speed(model, channels: int, bf16: bool, channels_last: bool, steps: int, batch: int = 64) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, labels = torch.randn(batch, channels, 48, 48), torch.randint(0, 8, (batch,))
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    for step in range(steps + 3):
        if step == 3:
            started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


@torch.no_grad()
def inference_speed(model, channels: int, bf16: bool, channels_last: bool, batches: int = 5, batch: int = 256) -> float:
    model.eval()
    images = torch.randn(batch, channels, 48, 48)
    if channels_last:
        model, images = model.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(images)
        started = time.perf_counter()
        for _ in range(batches):
            model(images)
    return batches * batch / (time.perf_counter() - started)


@torch.no_grad()
def single_face_latency_ms(model, channels: int, bf16: bool, calls: int) -> float:
    model.eval()
    face = torch.randn(1, channels, 48, 48)
    timings = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for call in range(calls + 20):
            started = time.perf_counter()
            model(face)
            if call >= 20:
                timings.append(time.perf_counter() - started)
    return 1000 * statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--latency-calls", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print("| model | parameters | train img/s | infer img/s fp32 (b=256) | infer img/s bf16 (b=256) | "
          "1-face ms fp32 | 1-face ms bf16 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = {}
    for name, (kwargs, bf16, channels_last) in RECIPES.items():
        channels = kwargs["in_channels"]
        row = {
            "params": count_parameters(build_model("seed_cnn", **kwargs)),
            "train": training_speed(build_model("seed_cnn", **kwargs), channels, bf16, channels_last, args.train_steps),
            "infer32": inference_speed(build_model("seed_cnn", **kwargs), channels, False, channels_last),
            "infer16": inference_speed(build_model("seed_cnn", **kwargs), channels, True, channels_last),
            "lat32": single_face_latency_ms(build_model("seed_cnn", **kwargs), channels, False, args.latency_calls),
            "lat16": single_face_latency_ms(build_model("seed_cnn", **kwargs), channels, True, args.latency_calls),
        }
        rows[name] = row
        print(f"| {name} | {row['params']:,} | {row['train']:.0f} | {row['infer32']:.0f} | {row['infer16']:.0f} | "
              f"{row['lat32']:.2f} | {row['lat16']:.2f} |", flush=True)
    seed, default = rows.values()
    print(f"default / seed: training {default['train'] / seed['train']:.2f}x, inference fp32 "
          f"{default['infer32'] / seed['infer32']:.2f}x, single-face latency fp32 {default['lat32'] / seed['lat32']:.2f}x")


if __name__ == "__main__":
    main()
