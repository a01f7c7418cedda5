"""The enhancement experiments (CNN_Enhancements.ipynb): each a ``ferlib.train`` run at one short budget, scored on
the test split, its report written to ``reports/enhancements/<name>.json``.

    python -m ferlib.experiments --list
    python -m ferlib.experiments label_crossentropy oversample     # or: all
    python -m ferlib.experiments all --quick                       # a tiny budget, to see that everything runs

Full budget: configs/default.toml for 12 epochs (patience 5), runs under ``runs/enhancements/<name>``; a run that
was interrupted resumes from its last epoch. An experiment whose report exists is skipped: delete the report to run
it again. ``--quick`` trains one epoch of a quarter-width network on at most 512 faces, under
``runs/enhancements_quick/``, and writes its reports there too unless ``--out`` says otherwise, so that a quick
report is never taken for a measured one. ``random_search`` ranks short trials by validation accuracy;
``search_best`` and ``search_best_no_ema`` train its best trial's settings and so need its report first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ferlib.files import write_json

# The FER+ paper's VGG13 test accuracies (%, majority protocol; Barsoum et al., ICMI 2016, table 2)
PAPER_VGG13 = {"majority": 83.85, "probability": 84.99, "crossentropy": 84.72, "multi_target": 83.97}
PAPER_LABEL_MODES = tuple(PAPER_VGG13)  # the paper's four (ferlib.data.LABEL_MODES adds the seed's no_unknown)
SEARCH = "random_search"
# name -> (what it is, TrainConfig overrides); the searched settings are added to search_best* when they run
EXPERIMENTS = {
    **{f"label_{mode}": (f"label mode {mode}", {"label_mode": mode}) for mode in PAPER_LABEL_MODES},
    "class_weighted": ("crossentropy + class-weighted loss", {"class_weighted_loss": True}),
    "oversample": ("crossentropy + oversampling of rare classes", {"oversample": True}),
    SEARCH: ("random search over lr, weight decay, dropout, batch size (short trials, validation only)", {}),
    "search_best": ("the best search trial's settings at the experiments' budget", {}),
    "search_best_no_ema": ("the same without weight averaging", {"ema_decay": 0.0}),
}
FULL_BUDGET = dict(epochs=12, patience=5, max_minutes=None)
QUICK_BUDGET = dict(epochs=1, batch_size=16, width=0.25, num_workers=0, bf16=False, max_faces=512)
# No weight averaging in the short search trials: with decay 0.999 over ~400 steps the averaged weights are still
# mostly the initial ones, and every trial then answers one class (a first run of this search did exactly that).
FULL_SEARCH = dict(epochs=3, max_faces=8000, patience=3, max_minutes=None, ema_decay=0.0)
TRIALS = {False: 8, True: 2}  # by quick


@dataclass
class Plan:
    """How and where the experiments run."""

    base: object  # the TrainConfig every experiment starts from (data_dir and runs_dir set)
    budget: dict  # TrainConfig overrides shared by every experiment
    search_budget: dict  # and by every random-search trial
    trials: int
    out: Path  # where the reports go
    run_folder: str  # the runs' parent folder under base.runs_dir
    quick: bool = False


def make_plan(quick: bool = False, config: Path | str = "configs/default.toml", data_dir: Path | str | None = None,
              runs_dir: Path | str | None = None, out: Path | str | None = None) -> Plan:
    """The full plan (the committed reports' budget) or the quick one; ``data_dir`` / ``runs_dir`` override the
    config's folders."""
    from ferlib.train import load_config

    folders = {k: str(v) for k, v in (("data_dir", data_dir), ("runs_dir", runs_dir)) if v is not None}
    base = load_config(config, folders)
    run_folder = "enhancements_quick" if quick else "enhancements"
    default_out = Path(base.runs_dir) / run_folder if quick else Path("reports/enhancements")
    budget = QUICK_BUDGET if quick else FULL_BUDGET
    search_budget = {**QUICK_BUDGET, "ema_decay": 0.0} if quick else FULL_SEARCH
    return Plan(base, dict(budget), dict(search_budget), TRIALS[quick], Path(out) if out else default_out,
                run_folder, quick)


def report_path(name: str, plan: Plan) -> Path:
    return plan.out / f"{name}.json"


def load_report(name: str, plan: Plan) -> dict | None:
    """The experiment's report, or None when it has not run."""
    path = report_path(name, plan)
    return json.loads(path.read_text()) if path.is_file() else None


def experiment_overrides(name: str, plan: Plan) -> dict:
    """The TrainConfig settings an experiment changes (search_best*: the best search trial's, from its report)."""
    from ferlib.tune import SEARCH_SPACE

    if name not in EXPERIMENTS or name == SEARCH:
        raise ValueError(f"experiment {name!r}: expected one of {', '.join(n for n in EXPERIMENTS if n != SEARCH)}")
    overrides = EXPERIMENTS[name][1]
    if name.startswith("search_best"):
        search = load_report(SEARCH, plan)
        if not search or not search["trials"]:
            raise FileNotFoundError(f"{report_path(SEARCH, plan)}: {name} trains the best search trial's settings; "
                                    f"run `python -m ferlib.experiments {SEARCH}` first")
        overrides = {**{k: search["trials"][0][k] for k in SEARCH_SPACE}, **overrides}
    return overrides


def run_experiment(name: str, plan: Plan, progress: bool = True) -> dict:
    """Train one experiment (resuming its run if interrupted), score it on the test split and write its report."""
    if name == SEARCH:
        return run_search(plan, progress)
    from ferlib.evaluate import evaluate_model
    from ferlib.models import load_model
    from ferlib.train import train

    overrides = experiment_overrides(name, plan)
    config = dataclasses.replace(plan.base, run_name=f"{plan.run_folder}/{name}", **{**plan.budget, **overrides})
    run_dir = Path(config.runs_dir) / config.run_name
    summary = train(config, resume=(run_dir / "last.pt").is_file(), progress=progress)
    model, _ = load_model(run_dir / "best.safetensors")
    report = {"name": name, "overrides": overrides, "budget": plan.budget,
              "train": {k: summary[k] for k in ("epochs", "best_epoch", "train_minutes", "device", "valid_accuracy")},
              "test": evaluate_model(model, config.data_dir, "test", progress=False)}
    write_json(report_path(name, plan), report)
    return report


def run_search(plan: Plan, progress: bool = True) -> dict:
    """The random search's trials, best first (``ferlib.tune.random_search``), written as its report."""
    from ferlib.tune import random_search

    base = dataclasses.replace(plan.base, **plan.search_budget)
    trials = random_search(base, trials=plan.trials, name=f"{plan.run_folder}/search", progress=progress)
    report = {"budget": plan.search_budget, "trials": trials}
    write_json(report_path(SEARCH, plan), report)
    return report


def report_or_run(name: str, plan: Plan, run_missing: bool, progress: bool = True) -> dict | None:
    """The experiment's report when it has one; otherwise run it if ``run_missing`` (else None)."""
    report = load_report(name, plan)
    if report is None and run_missing:
        report = run_experiment(name, plan, progress)
    return report


def metrics_row(metrics: dict) -> dict:
    """Accuracy, macro F1 and the rare classes' recall of classification metrics (``ferlib.evaluate``'s, one
    protocol), for a table."""
    return {"test accuracy": metrics["accuracy"], "F1 macro": metrics["f1_macro"],
            **{f"recall {c}": metrics["per_class"][c]["recall"] for c in ("disgust", "contempt", "fear", "sadness")}}


def summary_row(report: dict) -> dict:
    """One experiment's headline numbers (majority protocol), for a table."""
    return {**metrics_row(report["test"]["majority"]),
            "best epoch": report["train"]["best_epoch"], "minutes": round(report["train"]["train_minutes"], 1)}


def evaluation_metrics(path: Path | str, protocol: str = "majority") -> dict:
    """One protocol's metrics from a report that ``python -m ferlib.evaluate --json`` wrote."""
    return json.loads(Path(path).read_text())["protocols"][protocol]


def tta_and_ensembles(members: dict[str, Path], data_dir: Path | str) -> dict[str, dict]:
    """Test metrics (majority protocol) of each model alone and of the averaged probabilities of the ``(short)``
    members and of all of them, each with and without flip test-time augmentation."""
    import numpy as np

    from ferlib.data import load_dataset
    from ferlib.evaluate import classification_metrics, dataset_images, predict_probabilities
    from ferlib.models import load_model
    from ferlib.transforms import build_transform, mirrored

    test = load_dataset(data_dir, "test", "majority", build_transform(False))
    images, labels = dataset_images(test), test.labels.numpy()
    rows, probabilities = {}, {}
    for name, weights in members.items():
        model, _ = load_model(weights)
        plain = predict_probabilities(model, images).numpy()
        # flip TTA is the mean with the mirrored faces' probabilities: the plain ones are not computed again
        probabilities[(name, False)] = plain
        probabilities[(name, True)] = (plain + predict_probabilities(model, mirrored(images)).numpy()) / 2
        for tta in (False, True):
            rows[f"{name}{' + flip TTA' if tta else ''}"] = classification_metrics(
                labels, probabilities[(name, tta)].argmax(1))
    short_runs = [name for name in members if name.endswith("(short)")]
    ensembles = {f"ensemble of the {len(short_runs)} short runs": short_runs,
                 f"ensemble of all {len(members)}": list(members)}
    for ensemble, names in ensembles.items():
        if len(names) < 2:
            continue
        for tta in (False, True):
            mean = np.mean([probabilities[(name, tta)] for name in names], axis=0)
            rows[f"{ensemble}{' + flip TTA' if tta else ''}"] = classification_metrics(labels, mean.argmax(1))
    return rows


def chosen_names(names: list[str]) -> list[str]:
    """The experiments named on the command line, in the order they must run ("all": every one)."""
    unknown = [n for n in names if n != "all" and n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment {unknown[0]!r}: expected one of {', '.join(EXPERIMENTS)}, or all")
    wanted = set(EXPERIMENTS) if "all" in names else set(names)
    return [name for name in EXPERIMENTS if name in wanted]  # the search runs before the runs that use it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the enhancement experiments; write their test reports.")
    parser.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (--list shows them), or all")
    parser.add_argument("--list", action="store_true", help="list the experiments and whether each has a report")
    parser.add_argument("--quick", action="store_true", help="a tiny budget (one short epoch), to check it runs")
    parser.add_argument("--out", type=Path, help="folder of the reports (default reports/enhancements; with "
                                                 "--quick, runs/enhancements_quick)")
    parser.add_argument("--config", type=Path, default=Path("configs/default.toml"), help="the base recipe")
    parser.add_argument("--data", type=Path, help="generated FER+ folders (default: the config's data_dir)")
    parser.add_argument("--runs", type=Path, help="runs folder (default: the config's runs_dir)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.names and not args.list:
        parser.error("name an experiment (or all); --list shows them")
    try:
        plan = make_plan(args.quick, args.config, args.data, args.runs, args.out)
        if args.list:
            for name, (what, _) in EXPERIMENTS.items():
                done = "report" if report_path(name, plan).is_file() else "no report"
                print(f"{name:<20} {what} [{done}: {report_path(name, plan)}]")
            return 0
        for name in chosen_names(args.names):
            if report_path(name, plan).is_file():
                print(f"{name}: {report_path(name, plan)} exists, skipped (delete it to run the experiment again)")
                continue
            print(f"== {name}: {EXPERIMENTS[name][0]}", flush=True)
            run_experiment(name, plan, progress=not args.no_progress)
            print(f"{name}: wrote {report_path(name, plan)}")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume the interrupted run", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
