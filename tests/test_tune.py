"""The random hyperparameter search on a tiny synthetic dataset."""

from __future__ import annotations

import json
import random

from ferlib.train import TrainConfig, load_config
from ferlib.tune import SEARCH_SPACE, main, random_search, sample_hyperparameters


def test_samples_stay_in_the_search_space_and_follow_the_seed():
    draws = [sample_hyperparameters(random.Random(3)) for _ in range(2)]
    assert draws[0] == draws[1]
    for values in (sample_hyperparameters(random.Random(i)) for i in range(50)):
        assert SEARCH_SPACE["lr"][1] <= values["lr"] <= SEARCH_SPACE["lr"][2]
        assert 0.1 <= values["dropout"] <= 0.6 and values["batch_size"] in (32, 64, 128)


def test_random_search_runs_trials_ranks_them_and_saves_the_best_config(tiny_dataset, tmp_path):
    base = TrainConfig(data_dir=str(tiny_dataset), runs_dir=str(tmp_path), width=0.25, epochs=1, num_workers=0,
                       bf16=False, channels_last=False, ema_decay=0.0)
    results = random_search(base, trials=2, name="search", progress=False)
    assert [r["valid_accuracy"] for r in results] == sorted((r["valid_accuracy"] for r in results), reverse=True)
    assert (tmp_path / "search" / "trial_00" / "summary.json").is_file()
    assert len(json.loads((tmp_path / "search" / "results.json").read_text())["trials"]) == 2
    best = load_config(tmp_path / "search" / "best.toml")
    assert best.lr == results[0]["lr"] and best.batch_size == results[0]["batch_size"]


def test_command_line_search_writes_its_ranking_and_the_best_config(tiny_dataset, tmp_path, capsys):
    settings = dict(data_dir=f'"{tiny_dataset}"', runs_dir=f'"{tmp_path}"', width=0.25, epochs=1, num_workers=0,
                    bf16="false", channels_last="false", ema_decay=0.0, max_faces=24)
    sets = [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]
    assert main([*sets, "--trials", "2", "--name", "search", "--seed", "7", "--no-progress"]) == 0
    trials = json.loads((tmp_path / "search" / "results.json").read_text())["trials"]
    assert [t["trial"] for t in trials] != [] and sorted(t["trial"] for t in trials) == [0, 1]
    assert [t["valid_accuracy"] for t in trials] == sorted((t["valid_accuracy"] for t in trials), reverse=True)
    drawn = [sample_hyperparameters(rng) for rng in [random.Random(7)] for _ in range(2)]
    assert sorted(t["lr"] for t in trials) == sorted(d["lr"] for d in drawn), "the trials use the seeded draws"
    best = load_config(tmp_path / "search" / "best.toml")
    assert (best.lr, best.dropout, best.batch_size) == (trials[0]["lr"], trials[0]["dropout"], trials[0]["batch_size"])
    assert (best.max_faces, best.width, best.run_name) == (24, 0.25, "search_best"), "the base settings are kept"
    out = capsys.readouterr().out
    assert out.count("| 0 |") + out.count("| 1 |") == 2 and "best: trial" in out
