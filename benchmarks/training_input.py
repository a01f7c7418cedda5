"""Where a CPU training step's time goes: the network, the loader, and the two together, side by side in one run.

    python benchmarks/training_input.py [--config configs/quick.toml] [--data data] [--batches 60]

For a recipe (its width, batch size, memory format; float32 or bfloat16 as ``ferlib.train`` would choose here),
prints faces/s of:
- the network alone: forward, backward and AdamW step on one random batch, again and again;
- the loader alone: the training faces with the recipe's per-face augmentation, in 0, 1 or 2 worker processes, or
  with only the evaluation transform followed by ``strong_augmentation_batch`` (the same distributions, drawn for a
  whole batch in the training process: ``augment_on_device = true``);
- both together, as training runs: each batch from the loader through the network, per-face augmentation in the
  recipe's worker processes against batch augmentation in the training process (``num_workers = 0``).
On a CPU with few cores the loader's workers and the network's threads share them, so "together" can be far below
the slower of the two alone. Needs the generated FER+ folders. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from ferlib.models import build_model
from ferlib.train import autocast_settings, build_loaders, load_config
from ferlib.transforms import strong_augmentation_batch

WARM_UP = 10  # batches not timed


def training_step(config):
    """One forward, backward and AdamW step of a fresh network of ``config``'s recipe (width, memory format,
    precision), as a function of a batch of faces and their target distributions."""
    model = build_model(config.model, width=config.width, in_channels=config.in_channels, dropout=config.dropout)
    model.train()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = autocast_settings(config, torch.device("cpu"))

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**autocast):
            loss = F.cross_entropy(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def network_alone(config, batches: int) -> float:
    step = training_step(config)
    images = torch.randn(config.batch_size, config.in_channels, 48, 48)
    targets = torch.softmax(torch.randn(config.batch_size, 8), dim=1)
    for index in range(batches + WARM_UP):
        if index == WARM_UP:  # the first steps allocate and pick their kernels
            started = time.perf_counter()
        step(images, targets)
    return batches * config.batch_size / (time.perf_counter() - started)


def faces_per_second(config, batches: int, train: bool) -> float:
    """The loader of ``config`` (workers, per-face or batch augmentation) for ``batches`` batches, each through the
    network when ``train``."""
    loader = build_loaders(config).loader
    step = training_step(config) if train else None
    seen, started = 0, None
    for index, (images, targets) in enumerate(loader):
        if index == WARM_UP:  # after the workers' start and the first steps
            seen, started = 0, time.perf_counter()
        if config.augment_on_device:
            images = strong_augmentation_batch(images)
        if step is not None:
            step(images, targets)
        seen += len(images)
        if index == batches + WARM_UP - 1:
            break
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/quick.toml", help="the training recipe (a TOML config)")
    parser.add_argument("--data", default="data", help="generated FER+ folders")
    parser.add_argument("--batches", type=int, default=60, help="batches timed in each row")
    args = parser.parse_args()
    config = replace(load_config(args.config), data_dir=args.data, max_faces=None)
    per_face = replace(config, augment_on_device=False)
    on_batch = replace(config, augment_on_device=True, num_workers=0)
    print(f"{args.config}: width {config.width}, batch {config.batch_size}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, {args.batches} batches a row\n")
    print("| what | faces/s |\n| --- | ---: |")
    print(f"| network alone (forward, backward, AdamW) | {network_alone(config, args.batches):,.0f} |", flush=True)
    for workers in (0, 1, 2):
        speed = faces_per_second(replace(per_face, num_workers=workers), args.batches, train=False)
        print(f"| loader alone, per-face `{config.augmentation}`, {workers} worker(s) | {speed:,.0f} |", flush=True)
    speed = faces_per_second(on_batch, args.batches, train=False)
    print(f"| loader alone, batch augmentation in the training process | {speed:,.0f} |", flush=True)
    speed = faces_per_second(per_face, args.batches, train=True)
    print(f"| **together**, per-face augmentation, {per_face.num_workers} worker(s) (the recipe) | {speed:,.0f} |",
          flush=True)
    speed = faces_per_second(on_batch, args.batches, train=True)
    print(f"| **together**, batch augmentation, no worker (`augment_on_device = true`, `num_workers = 0`) | "
          f"{speed:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
