"""Metrics, the protocols on a synthetic dataset, and the evaluation command's JSON and plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ferlib.data
from conftest import make_rows, write_csvs
from ferlib.data import label_targets, load_split
from ferlib.evaluate import (PROTOCOLS, classification_metrics, evaluate_model, main, most_confident_mistakes,
                             predict_probabilities, training_image_keys, unseen_mask)
from ferlib.generate import generate_dataset
from ferlib.models import SeedCNN, save_model


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 7])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(labels, predictions)
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["neutral"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert m["per_class"]["happiness"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["contempt"] == {"precision": 0.0, "recall": 0.0, "support": 1}
    assert np.array(m["confusion"]).shape == (8, 8) and m["confusion"][7][0] == 1 and np.trace(m["confusion"]) == 4
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])
    # macro F1 over the 8 classes: neutral 0.5, happiness 0.8, surprise 1.0, the rest 0
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 1.0) / 8)


def test_unseen_mask_finds_pixel_identical_copies():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    test = np.stack([train[2], rng.integers(0, 256, (48, 48), dtype=np.uint8), train[4]])
    assert unseen_mask(test, train).tolist() == [False, True, False]


PLANTED = "fer0000030.png"  # the test face that has a pixel-identical copy in training (fer0000000.png)


@pytest.fixture
def tiny_model_and_data(tmp_path):
    rows = make_rows()
    rows[30].pixels = rows[0].pixels.copy()  # a test face with a copy in training
    rows[30].votes = [0, 10, 0, 0, 0, 0, 0, 0, 0, 0]  # clear happiness: every protocol keeps it
    assert rows[0].usage == "Training" and rows[30].usage == "PrivateTest" and rows[30].name == PLANTED
    csvs = write_csvs(tmp_path / "csv", rows)
    generate_dataset(csvs.fer, csvs.ferplus, tmp_path / "data", log=lambda m: None, progress=False)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_model(SeedCNN(in_channels=1, width=0.25).eval(), weights, "seed_cnn", {"in_channels": 1, "width": 0.25})
    return weights, tmp_path / "data"


def test_evaluate_command_writes_the_report_and_plots(tiny_model_and_data, tmp_path, capsys):
    weights, data = tiny_model_and_data
    out = tmp_path / "report.json"
    assert main(["--weights", str(weights), "--data", str(data), "--split", "test", "--json", str(out),
                 "--plots", str(tmp_path / "plots"), "--tta"]) == 0
    report = json.loads(out.read_text())
    assert set(report["protocols"]) == {"majority", "no_unknown"}
    for metrics in report["protocols"].values():
        for key in ("n", "accuracy", "precision_weighted", "recall_weighted", "f1_weighted", "f1_macro", "confusion"):
            assert key in metrics
        assert np.array(metrics["confusion"]).sum() == metrics["n"]
        assert metrics["unseen_in_train"]["n"] == metrics["n"] - 1  # all but the planted copy
    assert report["tta"] is True
    assert (tmp_path / "plots" / "confusion_majority_normalized.png").stat().st_size > 1000
    assert "| majority |" in capsys.readouterr().out


class ScriptedEngine:
    """An engine that predicts a given class for each face (looked up by its pixels) and counts what it sees."""
    name, info, precision = "scripted", {}, "fp32"

    def __init__(self, class_of_face: dict[bytes, int]):
        self.class_of_face, self.faces = class_of_face, []

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.faces += [crop.tobytes() for crop in crops]
        return np.eye(8, dtype=np.float32)[[self.class_of_face.get(crop.tobytes(), 0) for crop in crops]]


def majority_classes(data, split="test") -> dict[str, int]:
    loaded = load_split(data, split)
    keep, targets = label_targets(loaded.votes, "majority")
    return dict(zip(loaded.image_names[keep].tolist(), targets.argmax(axis=1).tolist()))


def test_the_planted_training_copy_is_the_one_face_left_out_of_unseen(tiny_model_and_data):
    _, data = tiny_model_and_data
    test = load_split(data, "test")
    unseen = unseen_mask(test.images, training_image_keys(data))
    assert test.image_names[~unseen].tolist() == [PLANTED]


@pytest.mark.parametrize("right_on_planted", [True, False])
def test_unseen_accuracy_is_computed_on_the_unseen_faces_only(tiny_model_and_data, right_on_planted):
    # the engine is right on the planted face only, or wrong on it only: the unseen accuracy must be exactly
    # 0 or 1, which it is on no other choice of faces
    _, data = tiny_model_and_data
    test, truth = load_split(data, "test"), majority_classes(data)
    class_of_face = {}
    for name, image in zip(test.image_names, test.images):
        right = truth.get(name, 0)
        class_of_face[image.tobytes()] = right if (name == PLANTED) == right_on_planted else (right + 1) % 8
    majority = evaluate_model(ScriptedEngine(class_of_face), data, "test", progress=False)["majority"]
    n = len(truth)
    assert majority["n"] == n and majority["unseen_in_train"]["n"] == n - 1
    assert majority["accuracy"] == pytest.approx(1 / n if right_on_planted else (n - 1) / n)
    assert majority["unseen_in_train"]["accuracy"] == (0.0 if right_on_planted else 1.0)


def count_decoded_images(monkeypatch) -> dict[str, int]:
    """Count the images ferlib.data decodes, per split folder."""
    decoded: dict[str, int] = {}
    real = ferlib.data.read_face_image

    def counting(path, *args, **kwargs):
        decoded[path.parent.name] = decoded.get(path.parent.name, 0) + 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ferlib.data, "read_face_image", counting)
    return decoded


@pytest.mark.parametrize("tta", [False, True])
def test_each_face_is_predicted_once_and_the_training_split_decoded_once(tiny_model_and_data, monkeypatch, tta):
    _, data = tiny_model_and_data
    sizes = {folder: len(load_split(data, split)) for split, folder in ferlib.data.SPLIT_FOLDERS.items()}
    test = load_split(data, "test")
    kept = np.logical_or.reduce([label_targets(test.votes, protocol)[0] for protocol in PROTOCOLS])
    assert 0 < kept.sum() < len(test)  # some faces no protocol keeps, and are not predicted
    decoded = count_decoded_images(monkeypatch)
    for call in range(2):
        engine = ScriptedEngine({})
        results = evaluate_model(engine, data, "test", tta=tta, progress=False)
        assert sum(m["n"] for m in results.values()) > kept.sum()  # the protocols share faces
        faces = engine.faces
        expected = {image.tobytes() for image in test.images[kept]}
        if tta:
            mirrored = {image[:, ::-1].tobytes() for image in test.images[kept]}
            assert sorted(faces) == sorted(expected | mirrored) and len(faces) == 2 * kept.sum()
        else:
            assert sorted(faces) == sorted(expected) and len(faces) == kept.sum()
        assert decoded == {"FER2013Test": sizes["FER2013Test"] * (call + 1), "FER2013Train": sizes["FER2013Train"]}
    evaluate_model(ScriptedEngine({}), data, "valid", progress=False)
    assert decoded["FER2013Train"] == sizes["FER2013Train"], "a second split reuses the training keys"


def test_a_changed_training_split_is_read_again(tiny_model_and_data):
    _, data = tiny_model_and_data
    assert evaluate_model(ScriptedEngine({}), data, "test", progress=False)["majority"]["unseen_in_train"]["n"] \
        == len(majority_classes(data)) - 1
    # the training copy of the planted face changes: now every test face is unseen
    import cv2

    copy = data / "FER2013Train" / "fer0000000.png"
    image = cv2.imread(str(copy), cv2.IMREAD_GRAYSCALE)
    image[0, 0] ^= 1
    cv2.imwrite(str(copy), image)
    assert evaluate_model(ScriptedEngine({}), data, "test", progress=False)["majority"]["unseen_in_train"]["n"] \
        == len(majority_classes(data))


def test_most_confident_mistakes_are_the_wrong_predictions_surest_first():
    probabilities = np.array([
        [0.90, 0.10, 0.00],  # 0: right
        [0.60, 0.30, 0.10],  # 1: wrong (says 0), 0.60 sure
        [0.02, 0.95, 0.03],  # 2: wrong (says 1), 0.95 sure
        [0.10, 0.10, 0.80],  # 3: right
        [0.20, 0.10, 0.70],  # 4: wrong (says 2), 0.70 sure
        [0.40, 0.35, 0.25],  # 5: wrong (says 0), 0.40 sure
    ])
    labels = np.array([0, 2, 0, 2, 1, 1])
    assert most_confident_mistakes(probabilities, labels).tolist() == [2, 4, 1, 5]
    assert most_confident_mistakes(probabilities, labels, count=2).tolist() == [2, 4]
    assert most_confident_mistakes(probabilities, np.argmax(probabilities, axis=1)).tolist() == []


def test_evaluate_command_rejects_a_file_that_is_not_a_model(tiny_model_and_data, tmp_path, capsys):
    _, data = tiny_model_and_data
    bad = tmp_path / "bad.safetensors"
    bad.write_text("hello")
    assert main(["--weights", str(bad), "--data", str(data)]) == 2
    assert "not a safetensors model file" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "none.safetensors"), "--data", str(data)]) == 2


@pytest.mark.parametrize("content,message", [
    ('{"history": 3}', 'expected a run\'s summary.json, with a "history" list'),
    ('{"epochs": []}', 'with a "history" list'),
    ("\x00\x01 not json", "not JSON"),
])
def test_a_history_that_is_not_a_runs_summary_is_refused_first(tmp_path, capsys, content, message):
    (tmp_path / "summary.json").write_text(content)
    code = main(["--weights", str(tmp_path / "missing.safetensors"), "--history", str(tmp_path / "summary.json")])
    assert code == 2 and message in capsys.readouterr().err


def test_a_split_with_no_face_for_the_protocol_is_a_clear_error(tiny_dataset, tmp_path):
    import shutil

    from ferlib.evaluate import evaluate_model

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    label_file = data / "FER2013Test" / "label.csv"
    rows = [line.split(",") for line in label_file.read_text().splitlines()]
    label_file.write_text("".join(",".join(row[:-10] + ["0"] * 8 + ["10", "0"]) + "\n" for row in rows))
    with pytest.raises(ValueError, match="FER2013Test: the majority protocol keeps none of its"):
        evaluate_model(SeedCNN(in_channels=1, width=0.25), data, "test", progress=False)


def test_flip_tta_of_a_torch_model_is_the_mean_with_the_mirrored_faces():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48 * 48, 8))
    images = torch.randn(5, 1, 48, 48)
    plain = predict_probabilities(model, images, batch_size=2)
    flipped = predict_probabilities(model, images.flip(-1), batch_size=2)
    averaged = predict_probabilities(model, images, batch_size=2, tta=True)
    assert not torch.allclose(plain, flipped)  # the model is not symmetric, so the flip matters
    assert torch.allclose(averaged, (plain + flipped) / 2)


def recropped_copy(data: Path, out: Path) -> Path:
    """``data`` copied with every test face's pixels inverted: the same faces, "cropped" another way."""
    import shutil

    import cv2

    shutil.copytree(data, out)
    for png in (out / "FER2013Test").glob("*.png"):
        cv2.imwrite(str(png), 255 - cv2.imread(str(png), cv2.IMREAD_GRAYSCALE))
    return out


def test_an_ensemble_can_read_each_models_faces_from_its_own_folder(tiny_model_and_data, tmp_path):
    _, data = tiny_model_and_data
    other = recropped_copy(data, tmp_path / "other")
    test, inverted, truth = load_split(data, "test"), load_split(other, "test"), majority_classes(data)

    def right_on(split):
        return {image.tobytes(): truth.get(name, 0) for name, image in zip(split.image_names, split.images)}

    def wrong_on(split):
        return {key: (value + 1) % 8 for key, value in right_on(split).items()}

    # two members right on their own folder's faces outvote one wrong member: the mean is right only where each
    # member reads its own folder (elsewhere a member sees faces it does not know and answers class 0)
    engines = [ScriptedEngine(right_on(inverted)), ScriptedEngine(wrong_on(test)), ScriptedEngine(right_on(inverted))]
    majority = evaluate_model(engines, data, "test", progress=False, crops=[other, data, other])["majority"]
    assert majority["accuracy"] == 1.0 and majority["n"] == len(truth)
    assert {image.tobytes() for name, image in zip(inverted.image_names, inverted.images) if name in truth} \
        <= set(engines[0].faces) <= {image.tobytes() for image in inverted.images}
    assert set(engines[1].faces) <= {image.tobytes() for image in test.images}
    assert majority["unseen_in_train"]["n"] == len(truth) - 1  # the reference folder's planted copy


def test_a_crop_folder_with_other_faces_or_votes_is_refused_naming_the_row(tiny_model_and_data, tmp_path, capsys):
    weights, data = tiny_model_and_data
    other = recropped_copy(data, tmp_path / "other")
    labels = other / "FER2013Test" / "label.csv"
    rows = list(csv.reader(labels.read_text().splitlines()))
    rows[3][2] = str(int(rows[3][2]) + 1)  # one neutral vote more in the fourth row
    with labels.open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    assert main(["--weights", str(weights), str(weights), "--data", str(data), str(other), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "cropped another way" in error and "row" in error and "\n" not in error
    assert main(["--weights", str(weights), "--data", str(data), str(other), "--no-progress"]) == 2
    assert "2 folders for 1 --weights" in capsys.readouterr().err


def test_the_command_scores_an_ensemble_over_two_crop_folders(tiny_model_and_data, tmp_path):
    weights, data = tiny_model_and_data
    other = recropped_copy(data, tmp_path / "other")
    out = tmp_path / "report.json"
    assert main(["--weights", str(weights), str(weights), "--data", str(data), str(other), "--no-progress",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"] == [str(data), str(other)] and report["protocols"]["majority"]["n"] > 0
