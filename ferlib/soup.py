"""Model soups: several networks fine-tuned from one start, their weights averaged into one network that costs no
more to run than one (Wortsman et al., "Model soups", ICML 2022).

The greedy soup is chosen on the validation split, never the test split: the ingredients are ranked by their own
validation accuracy (majority protocol), the soup starts as the best of them, and each next one stays in only if
the soup's validation accuracy does not fall when it joins. The uniform soup (every ingredient) is scored beside it.

    python -m ferlib.soup --weights START.safetensors runs/a/best.safetensors runs/b/best.safetensors --data data \
        --out runs/soup/greedy.safetensors --json reports/soup.json
    python -m ferlib.evaluate --weights runs/soup/greedy.safetensors --data data --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ferlib.data import load_dataset
from ferlib.evaluate import classification_metrics, dataset_images, predict_probabilities
from ferlib.files import atomic_path, check_writable, write_json
from ferlib.models import average_models, input_channels, load_model, save_model
from ferlib.transforms import build_transform


def greedy_soup(models: list[torch.nn.Module], accuracy) -> tuple[list[int], list[dict]]:
    """The indices of the greedy soup's ingredients and each step's record. ``accuracy`` scores a network (its
    validation accuracy); ingredients are tried best first, and one joins when the soup does not score lower with
    it."""
    alone = [accuracy(model) for model in models]
    order = sorted(range(len(models)), key=lambda i: -alone[i])
    chosen, best = [order[0]], alone[order[0]]
    steps = [{"ingredient": order[0], "alone": alone[order[0]], "soup": best, "kept": True}]
    for index in order[1:]:
        score = accuracy(average_models([models[i] for i in chosen + [index]]))
        kept = score >= best
        steps.append({"ingredient": index, "alone": alone[index], "soup": score, "kept": kept})
        if kept:
            chosen, best = chosen + [index], score
    return sorted(chosen), steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Average the weights of networks fine-tuned from one start (a "
                                                 "greedy model soup, chosen on the validation split).")
    parser.add_argument("--weights", type=Path, nargs="+", required=True,
                        help="the ingredients (.safetensors): the same network, fine-tuned from one start (the "
                             "start may be one of them)")
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder holding FER2013Valid")
    parser.add_argument("--out", type=Path, required=True, help="where to write the soup (.safetensors)")
    parser.add_argument("--json", type=Path, help="write each ingredient's score and the soup's steps here")
    args = parser.parse_args(argv)
    try:
        if len(args.weights) < 2 or len(set(path.resolve() for path in args.weights)) != len(args.weights):
            raise ValueError(f"--weights: expected 2 or more different model files, got {len(args.weights)}")
        if args.out.resolve() in {path.resolve() for path in args.weights}:
            raise ValueError(f"--out {args.out}: one of the --weights; write the soup elsewhere")
        for path in (args.out, args.json):
            if path is not None:
                check_writable(path)
        loaded = [load_model(path) for path in args.weights]
        models, infos = [model for model, _ in loaded], [info for _, info in loaded]
        average_models(models)  # refuses networks that differ, before the long part
        valid = load_dataset(args.data, "valid", "majority", build_transform(False), input_channels(models[0]))
        images, labels = dataset_images(valid), valid.labels.numpy()

        def accuracy(model: torch.nn.Module) -> float:
            predicted = predict_probabilities(model, images).numpy().argmax(axis=1)
            return classification_metrics(labels, predicted)["accuracy"]

        chosen, steps = greedy_soup(models, accuracy)
        uniform = accuracy(average_models(models))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for step in steps:
        print(f"{'kept   ' if step['kept'] else 'dropped'} {args.weights[step['ingredient']]}: alone "
              f"{step['alone']:.2%}, soup {step['soup']:.2%} (validation, majority protocol)")
    print(f"uniform soup of all {len(models)}: {uniform:.2%}")
    soup = average_models([models[i] for i in chosen])
    info = infos[chosen[0]]
    extra = {key: value for key, value in info.items() if key not in ("model", "model_kwargs")}
    extra |= {"soup": {"ingredients": [str(args.weights[i]) for i in chosen], "chosen_on": "valid (majority protocol)",
                      "valid_accuracy": [step["soup"] for step in steps if step["kept"]][-1]}}
    with atomic_path(args.out) as temporary:
        save_model(soup, temporary, info["model"], info["model_kwargs"], extra=extra, dtype=torch.float16)
        if args.json:
            write_json(args.json, {"weights": [str(path) for path in args.weights], "steps": steps,
                                   "chosen": [str(args.weights[i]) for i in chosen], "uniform_valid_accuracy": uniform,
                                   "out": str(args.out), "protocol": "majority", "split": "valid"})
    print(f"wrote {args.out}: {len(chosen)} of {len(models)} ingredients")
    return 0


if __name__ == "__main__":
    sys.exit(main())
