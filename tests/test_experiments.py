"""ferlib.experiments (the enhancement experiments, `python -m ferlib.experiments`) on a tiny synthetic set, against
the committed reports' format; ferlib.notebook's setup and train_or_load; ferlib.measure's shared measurements."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO_ROOT
from ferlib import experiments
from ferlib.experiments import EXPERIMENTS, chosen_names, main, make_plan, run_experiment

COMMITTED = REPO_ROOT / "reports" / "enhancements"


def key_tree(value, skip=("budget", "overrides")):
    """The nested keys of a report (the values' own keys, not the values), leaving out the parts that differ by
    budget and experiment."""
    if isinstance(value, dict):
        return {k: key_tree(v, ()) for k, v in value.items() if k not in skip}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [key_tree(value[0], ())]
    return None


@pytest.fixture
def plan(tiny_dataset, tmp_path):
    return make_plan(quick=True, config=REPO_ROOT / "configs/default.toml", data_dir=tiny_dataset,
                     runs_dir=tmp_path / "runs", out=tmp_path / "reports")


def test_quick_run_writes_the_committed_reports_format(plan):
    report = run_experiment("label_majority", plan, progress=False)
    written = json.loads((plan.out / "label_majority.json").read_text())
    assert written == json.loads(json.dumps(report))
    committed = json.loads((COMMITTED / "label_majority.json").read_text())
    assert key_tree(written) == key_tree(committed)
    assert written["overrides"] == committed["overrides"] == {"label_mode": "majority"}
    assert set(written["budget"]) >= {"epochs"} and written["budget"]["epochs"] == 1
    assert (plan.out.parent / "runs" / "enhancements_quick" / "label_majority" / "best.safetensors").is_file()


def test_the_search_feeds_search_best(plan):
    search = run_experiment("random_search", plan, progress=False)
    committed = json.loads((COMMITTED / "random_search.json").read_text())
    assert key_tree(search) == key_tree(committed) and len(search["trials"]) == plan.trials
    best = search["trials"][0]
    report = run_experiment("search_best_no_ema", plan, progress=False)
    assert report["overrides"] == {"lr": best["lr"], "dropout": best["dropout"], "weight_decay": best["weight_decay"],
                                   "batch_size": best["batch_size"], "ema_decay": 0.0}
    assert key_tree(report) == key_tree(json.loads((COMMITTED / "search_best_no_ema.json").read_text()))


def test_every_committed_report_is_an_experiment():
    assert {p.stem for p in COMMITTED.glob("*.json")} == set(EXPERIMENTS)


def test_full_plan_is_the_committed_budget():
    plan = make_plan(quick=False, config=REPO_ROOT / "configs/default.toml")
    for name in EXPERIMENTS:
        committed = json.loads((COMMITTED / f"{name}.json").read_text())
        expected = plan.search_budget if name == "random_search" else plan.budget
        assert committed["budget"] == expected, name
    assert len(json.loads((COMMITTED / "random_search.json").read_text())["trials"]) == plan.trials


def test_all_runs_the_search_before_what_needs_it():
    assert chosen_names(["search_best", "random_search"]) == ["random_search", "search_best"]
    assert chosen_names(["all"]) == list(EXPERIMENTS)


def test_command_line_skips_a_reported_experiment_and_refuses_bad_names(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "reports"
    arguments = ["--quick", "--data", str(tiny_dataset), "--runs", str(tmp_path / "runs"), "--out", str(out),
                 "--no-progress"]
    assert main(["oversample", *arguments]) == 0
    first = (out / "oversample.json").read_text()
    assert main(["oversample", *arguments]) == 0
    assert "exists, skipped" in capsys.readouterr().out and (out / "oversample.json").read_text() == first
    assert main(["no_such_run", *arguments]) == 2
    assert "unknown experiment 'no_such_run'" in capsys.readouterr().err
    assert main(["search_best", *arguments]) == 2  # no search report yet: one clear line, nothing written
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "run `python -m ferlib.experiments random_search` first" in error
    assert not (out / "search_best.json").exists()
    assert main(["--list", *arguments]) == 0
    assert "oversample" in capsys.readouterr().out


def test_a_failed_evaluation_writes_no_report(plan, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("ferlib.evaluate.evaluate_model", broken)
    with pytest.raises(OSError):
        run_experiment("class_weighted", plan, progress=False)
    assert not (plan.out / "class_weighted.json").exists() and not list(plan.out.glob(".*"))


def test_summary_row_reads_a_committed_report():
    report = json.loads((COMMITTED / "oversample.json").read_text())
    row = experiments.summary_row(report)
    assert row["test accuracy"] == report["test"]["majority"]["accuracy"]
    assert row["recall contempt"] == report["test"]["majority"]["per_class"]["contempt"]["recall"]


# ------------------------------------------------------------------------------------------------ ferlib.notebook

def test_setup_in_smoke_mode_makes_data_and_picks_the_environments_mode(monkeypatch, tmp_path):
    from ferlib.notebook import setup

    monkeypatch.chdir(REPO_ROOT / "notebooks")
    monkeypatch.setenv("FERLIB_NOTEBOOK_MODE", "smoke")
    monkeypatch.setenv("FERLIB_RETRAIN", "1")
    notebook = setup()
    assert notebook.mode == "smoke" and notebook.retrain and notebook.smoke
    assert (notebook.data / "FER2013Test" / "label.csv").is_file() and notebook.data.is_relative_to(notebook.work)
    assert notebook.models.is_relative_to(notebook.work) and notebook.media is None
    assert notebook.config_for_mode(experiments.make_plan(quick=True).base).epochs == 1
    assert Path.cwd() == REPO_ROOT.resolve()  # paths in the notebooks are relative to the repository


def test_setup_refuses_an_unknown_mode(monkeypatch):
    from ferlib.notebook import setup

    monkeypatch.setenv("FERLIB_NOTEBOOK_MODE", "fast")
    with pytest.raises(ValueError, match="notebook mode 'fast'.*expected 'full' or 'smoke'"):
        setup()


def test_train_or_load_trains_and_exports_then_loads(tiny_dataset, tmp_path, monkeypatch):
    from ferlib.models import load_model
    from ferlib.notebook import SMOKE_SETTINGS, train_or_load
    from ferlib.train import load_config

    monkeypatch.chdir(tmp_path)
    config = load_config(REPO_ROOT / "configs/default.toml",
                         {**SMOKE_SETTINGS, "data_dir": str(tiny_dataset), "runs_dir": str(tmp_path / "runs")})
    weights = tmp_path / "models" / "tiny.safetensors"
    trained = train_or_load(config, weights)
    assert trained.trained and weights.is_file() and len(trained.history) == 1
    load_model(weights)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "tiny_training.json").write_text(json.dumps({**trained.summary, "epochs": 7}))
    loaded = train_or_load(config, weights)  # the file is there: no training (the run folder would be refused)
    assert not loaded.trained and loaded.summary["epochs"] == 7 and loaded.weights == weights


# ------------------------------------------------------------------------------------------------ ferlib.measure

def test_labelled_frames_expands_the_ranges():
    from ferlib.measure import labelled_frames

    table = pd.DataFrame({"video": ["a.mp4", "a.mp4", "b.mp4"], "first_frame": [0, 5, 0], "last_frame": [2, 6, 9],
                          "label": ["neutral", "happiness", "fear"]})
    assert labelled_frames(table, "a.mp4") == {0: "neutral", 1: "neutral", 2: "neutral", 5: "happiness",
                                              6: "happiness"}


def test_video_accuracy_on_the_sample_clip(media):
    from ferlib.measure import labelled_frames, video_accuracy
    from ferlib.models import load_model, shipped_model

    table = pd.read_csv(REPO_ROOT / "benchmarks" / "sample_video_labels.csv")
    labels = labelled_frames(table, "single_face.mp4")
    model, _ = load_model(shipped_model("ferplus_cnn"))
    result = video_accuracy(model, media / "single_face.mp4", labels, smoothings=(0.0,))
    assert result["labelled"] == len(labels) == 67 and result["with_face"] == 67
    assert result["accuracy"][0.0] > 0.9 and 0 < result["mean_true_probability"] <= 1
    assert set(result["happiness"]) == set(range(72))  # a face in every frame of the clip


def test_fer_detection_counts_faces_found(tiny_dataset):
    from ferlib.data import load_split
    from ferlib.measure import fer_detection

    images = load_split(tiny_dataset, "test").images[:4]
    row = fer_detection("haar", images)
    assert row["faces"] == 4 and 0 <= row["found"] <= 1 and row["ms_per_face"] > 0
    assert (row["framing"] is None) == (row["found"] == 0)
    assert np.isfinite(row["ms_per_face"])
