"""Random hyperparameter search: learning rate, dropout, weight decay and batch size, as the seed's notebook did.

    python -m ferlib.tune --config configs/seed.toml --trials 8 --set epochs=5 --set max_faces=8000

Each trial is a ``ferlib.train`` run under ``runs/<name>/trial_NN`` with its hyperparameters and final
validation metrics in TensorBoard's HPARAMS tab; the trials are ranked by validation accuracy (majority protocol)
and written to ``runs/<name>/results.json``, the best one also as ``runs/<name>/best.toml``, a config file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
from pathlib import Path

from ferlib.distributed import is_main_process
from ferlib.files import write_json, write_text
from ferlib.train import TrainConfig, check_run_name, load_config, train

SEARCH_SPACE = {
    "lr": ("log", 1e-4, 1e-2),
    "dropout": ("uniform", 0.1, 0.6),
    "weight_decay": ("log", 1e-7, 1e-1),
    "batch_size": ("choice", [32, 64, 128]),
}


def sample_hyperparameters(rng: random.Random) -> dict:
    """One draw from SEARCH_SPACE (log-uniform for scale parameters)."""
    values = {}
    for name, (kind, *spec) in SEARCH_SPACE.items():
        if kind == "log":
            values[name] = float(math.exp(rng.uniform(math.log(spec[0]), math.log(spec[1]))))
        elif kind == "uniform":
            values[name] = rng.uniform(spec[0], spec[1])
        else:
            values[name] = rng.choice(spec[0])
    return values


def to_toml(config: TrainConfig) -> str:
    lines = []
    for key, value in dataclasses.asdict(config).items():
        if value is None:
            continue
        lines.append(f"{key} = {json.dumps(value) if not isinstance(value, bool) else str(value).lower()}")
    return "\n".join(lines) + "\n"


def random_search(base: TrainConfig, trials: int, name: str = "tune", seed: int = 0, progress: bool = True) -> list[dict]:
    """Run ``trials`` training runs with sampled hyperparameters; return them best first."""
    folder = Path(base.runs_dir) / name
    check_run_name(name, nested=True)
    if any(folder.glob("trial_*")):  # a trial's run is never replaced (see ferlib.train); say so once, up front
        raise ValueError(f"{folder}: holds the trials of an earlier search; choose another --name")
    rng = random.Random(seed)
    results = []
    for trial in range(trials):
        values = sample_hyperparameters(rng)
        config = dataclasses.replace(base, run_name=f"{name}/trial_{trial:02d}", **values)
        print(f"trial {trial}: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in values.items()), flush=True)
        summary = train(config, progress=progress)
        results.append({"trial": trial, **values, **{k: summary[k] for k in
                                                       ("valid_accuracy", "valid_f1_macro", "valid_loss", "epochs")}})
    results.sort(key=lambda r: -(r["valid_accuracy"] or 0))
    if not is_main_process():
        return results  # under torchrun each trial trains on every process; rank 0 writes the search's files
    write_json(folder / "results.json", {"base": dataclasses.asdict(base), "trials": results})
    best = dataclasses.replace(base, run_name=f"{name}_best",
                               **{k: results[0][k] for k in SEARCH_SPACE}) if results else base
    write_text(folder / "best.toml", to_toml(best))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Random search over lr, dropout, weight decay and batch size.")
    parser.add_argument("--config", type=Path, help="base TOML config (default: TrainConfig defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base setting")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--name", default="tune", help="folder under runs/ for the trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hyperparameter draws")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config, args.set)
        results = random_search(base, args.trials, args.name, args.seed, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a write that failed (a full disk), a trial's folder in use
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: a search does not resume; start it again under another --name", file=sys.stderr)
        return 130
    print("| trial | lr | dropout | weight decay | batch | valid accuracy | valid macro F1 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['trial']} | {r['lr']:.2e} | {r['dropout']:.2f} | {r['weight_decay']:.1e} | {r['batch_size']} | "
              f"{r['valid_accuracy']:.4f} | {r['valid_f1_macro']:.4f} |")
    print(f"best: trial {results[0]['trial']}; config written to {Path(base.runs_dir) / args.name / 'best.toml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
