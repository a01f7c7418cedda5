"""Ensembles as users and the benchmark make them: ``EmotionRecognizer([...])`` answers its members' mean, and
benchmarks/ensembles.py chooses a subset on validation only."""
import json

import numpy as np
import pytest

from conftest import load_benchmark
from ferlib import EmotionRecognizer
from test_distill import biased_model, saved, tiny_model


def test_a_recognizer_of_several_models_answers_their_mean(tmp_path):
    first, second = saved(tiny_model(0), tmp_path / "a.safetensors"), saved(tiny_model(1), tmp_path / "b.safetensors")
    faces = np.random.default_rng(0).integers(0, 256, (4, 60, 50, 3), dtype=np.uint8)  # colour, any size
    alone = [EmotionRecognizer(path, engine="torch").classify_faces(faces) for path in (first, second)]
    ensemble = EmotionRecognizer([first, second], engine="torch")
    assert ensemble.engine.name.startswith("ensemble of 2")
    assert np.allclose(ensemble.classify_faces(faces), (alone[0] + alone[1]) / 2, atol=1e-6)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # the mean is not either member's answer


@pytest.mark.parametrize("model", [[], [None], [["a.safetensors"]]])
def test_an_ensemble_that_is_no_list_of_models_is_refused(model):
    with pytest.raises(ValueError, match="non-empty list of models"):
        EmotionRecognizer(model)


def answers_of(right: list[tuple[int, float]]) -> np.ndarray:
    """Probabilities for faces of class 0: each (answer, p) puts p on ``answer`` and the rest on class 0 or 1."""
    rows = np.zeros((len(right), 8), np.float32)
    for row, (answer, p) in zip(rows, right):
        row[answer] = p
        row[1 if answer == 0 else 0] += 1 - p
    return rows


def test_the_subset_is_chosen_on_validation_and_members_can_mend_each_others_mistakes():
    """A and B are each right on one of two validation faces, confidently, and wrong on the other by a little: alone
    50%, together 100%. C is wrong on validation and right on test: the test split must not make it chosen."""
    bench = load_benchmark("ensembles")
    classes = {"valid": np.zeros(2, int), "test": np.zeros(2, int)}
    answers = {
        "A": {"valid": answers_of([(0, 0.9), (1, 0.55)]), "test": answers_of([(1, 0.9), (1, 0.9)])},
        "B": {"valid": answers_of([(1, 0.55), (0, 0.9)]), "test": answers_of([(1, 0.9), (1, 0.9)])},
        "C": {"valid": answers_of([(1, 0.99), (1, 0.99)]), "test": answers_of([(0, 1.0), (0, 1.0)])},
    }
    rows = bench.subset_scores(answers, classes)
    assert len(rows) == 7
    assert rows[0]["members"] == ["A", "B"] and rows[0]["valid"]["accuracy"] == 1.0
    assert rows[0]["test"]["accuracy"] == 0.0  # read, not used to choose
    single = {row["members"][0]: row["valid"]["accuracy"] for row in rows if len(row["members"]) == 1}
    assert single == {"A": 0.5, "B": 0.5, "C": 0.0}
    assert [len(row["members"]) for row in bench.subset_scores(answers, classes, max_members=1)] == [1, 1, 1]


def test_the_benchmark_writes_every_subset_and_the_choice(tiny_dataset, tmp_path, capsys):
    happy = biased_model(tmp_path / "happy.safetensors", {1: 3.0})
    neutral = biased_model(tmp_path / "neutral.safetensors", {0: 50.0})
    out = tmp_path / "ensembles.json"
    assert load_benchmark("ensembles").main(["--data", str(tiny_dataset), "--aligned", str(tiny_dataset),
                                             "--members", happy, f"{neutral}@aligned", "--tta", "--json", str(out),
                                             "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "majority" and report["flip_tta"] is True
    assert len(report["subsets"]) == 3
    accuracies = [row["valid"]["accuracy"] for row in report["subsets"]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert report["chosen_on_validation"] == report["subsets"][0]
    assert "Chosen on validation:" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, message", [
    (["--members", "ferplus_cnn@left"], "error: --members 'ferplus_cnn@left': expected MODEL or MODEL@aligned"),
    (["--members", "seed_cnn", "seed_cnn"], "error: --members: expected 1 to 12 different members, got 2"),
    (["--max-members", "0"], "error: --max-members 0: expected 1 or more"),
])
def test_bad_arguments_are_one_line_and_write_nothing(tiny_dataset, tmp_path, capsys, arguments, message):
    out = tmp_path / "ensembles.json"
    assert load_benchmark("ensembles").main(["--data", str(tiny_dataset), "--json", str(out), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(message) and "\n" not in error
    assert not out.exists()
