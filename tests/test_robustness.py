"""ferlib.measure's damaged faces (benchmarks/robustness.py): each damage does what it says, at its level, the same
every time, and the benchmark scores each model on them from a tiny generated FER+ folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_benchmark
from ferlib.data import label_targets, load_split
from ferlib.measure import DAMAGES, damage_faces
from ferlib.recognizer import EmotionRecognizer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "ferplus_cnn.safetensors"


def noise_faces(n=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def roughness(faces: np.ndarray) -> float:
    return float(np.abs(np.diff(faces.astype(float), axis=2)).mean())


def test_every_damage_keeps_the_faces_shape_and_only_clean_keeps_them():
    faces = noise_faces()
    for kind, level in DAMAGES:
        damaged = damage_faces(faces, kind, level)
        assert damaged.shape == faces.shape and damaged.dtype == np.uint8
        assert np.array_equal(damaged, faces) == (kind == "clean"), (kind, level)
        assert np.array_equal(damaged, damage_faces(faces, kind, level)), (kind, level)  # the same every call


def test_stronger_damage_loses_more():
    faces = noise_faces()
    assert roughness(damage_faces(faces, "resolution", "12 px")) < roughness(damage_faces(faces, "resolution", "32 px"))
    assert roughness(damage_faces(faces, "blur", "sigma 2.5")) < roughness(damage_faces(faces, "blur", "sigma 1"))
    error = {level: np.abs(damage_faces(faces, "JPEG", level).astype(float) - faces).mean() for level in ("q 30", "q 10")}
    assert error["q 10"] > error["q 30"] > 0
    middle = np.full((1, 48, 48), 128, np.uint8)
    assert damage_faces(middle, "gamma", "0.4")[0, 0, 0] > 128 > damage_faces(middle, "gamma", "2.5")[0, 0, 0]
    spread = {level: (damage_faces(middle, "noise", level).astype(float) - 128).std() for level in ("sigma 0.05", "sigma 0.1")}
    assert spread["sigma 0.05"] == pytest.approx(0.05 * 255, rel=0.1) and spread["sigma 0.1"] == pytest.approx(25.5, rel=0.1)
    with pytest.raises(ValueError, match="damage blur sigma 7: expected one of clean, resolution 32 px"):
        damage_faces(faces, "blur", "sigma 7")


def test_the_benchmark_scores_each_damage(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "robustness.json"
    figure = tmp_path / "robustness.png"
    code = load_benchmark("robustness").main(["--data", str(tiny_dataset), "--no-shipped", "--weights", str(SHIPPED),
                                              "--json", str(out), "--figure", str(figure), "--no-progress"])
    assert code == 0 and figure.stat().st_size > 0
    report = json.loads(out.read_text())
    split = load_split(tiny_dataset, "test")
    keep, targets = label_targets(split.votes, "majority")
    assert report["faces"] == keep.sum()
    recognizer = EmotionRecognizer(SHIPPED)
    for kind, level in (("clean", ""), ("JPEG", "q 10")):
        predicted = recognizer.classify_faces(damage_faces(split.images[keep], kind, level)).argmax(1)
        expected = (predicted == targets.argmax(1)).mean()
        assert report["accuracy"]["ferplus_cnn"][f"{kind} {level}".strip()] == pytest.approx(expected)
    assert len(report["accuracy"]["ferplus_cnn"]) == len(DAMAGES)
    assert "| resolution 16 px |" in capsys.readouterr().out


def test_a_bad_model_or_data_folder_is_one_line_and_exit_2(tiny_dataset, tmp_path, capsys):
    benchmark = load_benchmark("robustness")
    assert benchmark.main(["--data", str(tiny_dataset), "--no-shipped", "--weights", str(tmp_path / "x.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'x.txt'}: expected an existing .safetensors or .onnx model file"
    assert benchmark.main(["--data", str(tmp_path / "missing"), "--no-shipped", "--weights", str(SHIPPED)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "missing" in err and "\n" not in err


def test_models_are_named_by_their_stem_or_by_folder_where_stems_repeat():
    from ferlib.measure import model_names
    named = model_names([Path("models/ferplus_cnn.safetensors"), Path("runs/a/best.safetensors"),
                         Path("runs/b/best.safetensors")])
    assert list(named) == ["ferplus_cnn", "a/best", "b/best"]
    with pytest.raises(ValueError, match="share a name"):
        model_names([Path("x/a/best.safetensors"), Path("y/a/best.safetensors")])
